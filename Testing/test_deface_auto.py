"""`defacer deface` end to end with the shipped U-Net, on held-out real heads and the CT.

The heads are from the validation split (never trained on). The targets: the reference
brain (IXI brain_labels) is never touched and the labelled tissue of each feature (from the
verified landmarks) is removed; a head without a face is refused, with nothing written.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from DeFacerLib.deface import head_mask
from DeFacerLib.deface.pipeline import deface_volume, find_features
from DeFacerLib.face.labels import load_landmarks, training_labels
from DeFacerLib.features import FEATURES, LABEL_VALUES
from _nifti_for_tests import featureless_blob
from DeFacerLib.io import read_volume
from DeFacerLib.volume import Volume
from ixi_layout import brain_labels_of  # scripts/ixi_layout.py (conftest puts scripts/ on the path)

REPO = Path(__file__).resolve().parents[1]
SPLIT = json.loads((REPO / "scripts" / "training" / "split.json").read_text())
VALIDATION_IXI = [rel for rel in SPLIT["validation"] if rel.startswith("heads/ixi/")][:3]
# Share of each feature's labelled tissue that must be changed (measured on these heads with the
# shipped model: eyes 94.6-98.2 % changed, 96.3-99.2 % replaced, since the eyes' cut takes the eye
# tissue around the fitted globes at any depth and deep tissue keeps 10 mm from the brain (on
# 8-bit IXI ~1.5 % of the eye tissue already holds the seal's value, so a replaced voxel need
# not change; 91-98 % before; 71-89 % before the frontal guard kept clear of the eyes), the rest
# 95-100 %; docs/benchmarks.md).
MIN_REMOVED_FRACTION = {"eyes": 0.94, "nose": 0.95, "mouth": 0.95, "ears": 0.9}
MAX_EAR_RELIEF_AFTER_MM2 = 150.0  # without the pinna cut (deface/pinna.py) IXI206's left ear kept 480
MAX_EAR_PRINT_AFTER_MM2 = 600.0
MAX_EAR_SUNK_MM2 = 300.0  # the ears' floor up to a flat-window outline sank 224-2212 mm^2 of these rings


def _evaluate_defacing():
    spec = importlib.util.spec_from_file_location("evaluate_defacing", REPO / "scripts" / "evaluate_defacing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deface(source: Path, target: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(source), str(target), "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_cut_surface_blended(before: Volume, after: Volume, report: dict) -> None:
    """The flat cut's surface is anti-aliased on both sides of it: the voxels it passes through
    hold air + share * (seal - air), shares below one half (in front of the surface) as well as
    above (behind it); with only one half blended the surface jumps a voxel every other step
    and the chin's tilted plane renders as terraces. An air-side voxel touches the seal, so
    nothing floats in front of the face. (The ears' floor, also blended, is checked by its print;
    where the face's box reaches the ears' reach, off the face itself, that floor's blends are left out.)"""
    from scipy import ndimage

    face = np.zeros(before.shape3, bool)
    for lo, hi in report["features"]["face"]["component_boxes"]:
        face[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
    for lo, hi in report["features"].get("ears", {}).get("reach_boxes", []):  # the ears' floor's own blends
        face[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = False
    changed = (after.array != before.array) & face
    air = after.stored_value(report["fill_value_physical"])
    seal = report["seal_value_stored"]
    share = (after.array.astype(np.float64) - air) / (seal - air)
    partial = changed & (share > 0.0) & (share < 1.0)
    front, behind = partial & (share < 0.5), partial & (share >= 0.5)
    assert front.sum() > 0.2 * partial.sum() and behind.sum() > 0.2 * partial.sum(), (front.sum(), behind.sum())
    touches_seal = ndimage.binary_dilation(changed & (share >= 0.5), structure=np.ones((3, 3, 3), bool))
    assert not (front & ~touches_seal).any()


@pytest.mark.slow
def test_face_not_found_means_nothing_written(tmp_path):
    """A smooth ellipsoid of tissue the size of a head has no face: the command fails on one
    line and writes nothing at all."""
    from DeFacerLib.io import write_volume

    blob = featureless_blob()
    source = write_volume(blob, tmp_path / "blob.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(source), str(out / "x.nii.gz")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stderr
    assert "the face was not found" in result.stderr and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_head_cut_above_the_eyes_has_no_features(data_dir):
    """The upper 40 % of a held-out head (vertex to forehead, as a brain-only field of view
    shows it): the model reports no eyes, nose, mouth or ears at the cut edge, so the command
    would refuse it rather than cut the forehead."""
    from DeFacerLib.orientation import to_canonical

    head, _ = to_canonical(read_volume(data_dir / VALIDATION_IXI[0]))
    top = head.shape3[2] * 3 // 5  # canonical L,P,S: axis 2 points up
    crown = Volume(head.array[:, :, top:].copy(), head.spacing_mm, head.index_to_world([0, 0, top]), head.direction)
    found = find_features(crown)
    assert not any(found.present.values()), {name: int(mask.sum()) for name, mask in found.masks.items()}


@pytest.mark.slow
@pytest.mark.parametrize("rel", VALIDATION_IXI)
def test_validation_head_brain_untouched_features_removed(rel, data_dir, ear_consensus, tmp_path):
    head_path = data_dir / rel
    outcome = deface(head_path, tmp_path / "out.nii.gz")
    head, out = read_volume(head_path), read_volume(tmp_path / "out.nii.gz")
    brain = read_volume(brain_labels_of(head_path, data_dir / "heads/ixi")).array > 0
    assert int((out.array[brain] != head.array[brain]).sum()) == 0
    assert outcome["report"]["protected_voxels_changed"] == 0
    landmarks = load_landmarks(REPO / "scripts" / "training" / "landmarks.json")[rel]["landmarks"]
    labels = training_labels(head, landmarks, brain=brain)
    changed = out.array != head.array
    removed = {f: float(changed[labels == LABEL_VALUES[f]].mean()) for f in FEATURES}
    # every feature of these full faces is found and goes: checking only the ones the run reported
    # passed a run that reported the mouth missing and kept most of it (18-31 % of its tissue changed)
    assert outcome["features_removed"] == list(FEATURES), outcome["features_missing"]
    for feature in FEATURES:
        assert removed[feature] >= MIN_REMOVED_FRACTION[feature], (rel, removed)
    assert_cut_surface_blended(head, out, outcome["report"])
    # what is left of the pinna: the side view within 35 mm of the concha standing > 5 mm proud
    # of the head's outline (evaluate_defacing.ear_relief_mm2; measured on these heads: 220-2368
    # mm^2 before, 0 after)
    # (a removed voxel that already held the air value is unchanged, and air for any renderer)
    gone = np.asarray(changed) | (out.array == out.stored_value(outcome["report"]["fill_value_physical"]))
    relief = _evaluate_defacing().ear_relief_mm2(head, head_mask(head), gone, ear_consensus[rel])
    assert set(relief) == {"ear_left", "ear_right"}
    for ear, (before, after) in relief.items():
        assert before > 150 and after < MAX_EAR_RELIEF_AFTER_MM2, (rel, ear, before, after)
    # what a render shows there: the skin more than 3 mm off that outline (evaluate_defacing.ear_print_mm2;
    # measured 732-2508 mm^2 undefaced, 0-132 defaced), and, 35-60 mm from the concha, more than
    # 2 mm under the undefaced head's (measured 0 on every ear; 224-2212 while the outline was a
    # flat window's, which sank under the head, and the ears' floor with it)
    printed, sunk = _evaluate_defacing().ear_print_mm2(head, head_mask(head), [head, out], ear_consensus[rel])
    assert set(printed) == {"ear_left", "ear_right"} == set(sunk)
    for ear, (before, after) in printed.items():
        assert before > 500 and after < MAX_EAR_PRINT_AFTER_MM2, (rel, ear, before, after)
        assert sunk[ear][0] < MAX_EAR_SUNK_MM2, (rel, ear, sunk[ear])
    # the report names where each feature was found (measured on these heads: eyes 0-4.6 mm,
    # nose 0-9.2 mm from the verified landmarks; ears, the concha found from the side view, 1.7-5.8
    # mm from the readers' consensus, where the model's estimate alone is 4.7-9.5 mm)
    reported = outcome["report"]["segmentation"]["landmarks_mm"]
    assert set(reported) == set(landmarks)
    error = {name: float(np.linalg.norm(np.subtract(reported[name]["mm"], landmarks[name]))) for name in landmarks}
    assert max(error["eye_left"], error["eye_right"]) < 6.0 and error["nose_tip"] < 10.0, error
    for name in ("ear_left", "ear_right"):
        assert reported[name]["by"] == "anatomy", (name, reported[name])
        assert np.linalg.norm(np.subtract(reported[name]["mm"], ear_consensus[rel][name])) < 7.0, (name, reported[name])
    # the face is gone for a detector: YuNet finds one on the original's front render, not on the output's
    from DeFacerLib.qa import face_direction, render_views
    from DeFacerLib.qa.recognize import FACE_PRESENT_SCORE, best_face

    face = face_direction(head)
    scores = [getattr(best_face(render_views(v, views=("front",), size=(400, 400), face=face)["front"]), "score", 0.0)
              for v in (head, out)]
    assert scores[0] >= FACE_PRESENT_SCORE > scores[1], (rel, scores)


@pytest.mark.slow
@pytest.mark.parametrize("rel", ["heads/single/niivue_T2w.nii.gz", "heads/single/chris_t1.nii.gz"])
def test_the_eye_tissue_under_the_orbital_roof_goes_too(rel, data_dir):
    """The held-out single heads (T2, cut across the nose; T1, cut below it): the guard keeps
    clear of the eye tissue around each eye's landmark, fitted to the globe, and the eyes' cut
    takes that tissue at any depth, so the top and back of the labelled eye tissue go as well
    (measured 97.0 and 99.7 %; docs/benchmarks.md has how the eyes got there)."""
    evaluate = _evaluate_defacing()
    from DeFacerLib.face.labels import load_landmarks

    row = evaluate.evaluate_head(data_dir, rel, load_landmarks(REPO / "scripts" / "training" / "landmarks.json"), None)
    eyes = row["features"]["eyes"]
    assert eyes["removed_fraction"] >= 0.95, eyes
    assert all(error < 3.0 for error in eyes["landmark_errors_mm"]) and eyes["landmark_by"] == ["anatomy"] * 2, eyes


def test_ct_head_is_defaced_with_the_face_found(data_dir, tmp_path):
    source = data_dir / "heads/single/ct_head_1mm_scaled01.nii.gz"
    outcome = deface(source, tmp_path / "ct.nii.gz")
    assert {"eyes", "nose"} <= set(outcome["features_removed"]), outcome
    head, out = read_volume(source), read_volume(tmp_path / "ct.nii.gz")
    changed = out.array != head.array
    assert changed.sum() > 10_000
    # the removed voxels hold the background (air) value of this 0-1 rescaled CT, but for the seal
    # at the bottom of the cuts, which holds the head's median tissue value, and the flat cut's
    # surface voxels, which hold a share of it (anti-aliased)
    report = outcome["report"]
    values = out.array[changed]
    air, seal = values == out.stored_value(report["fill_value_physical"]), values == report["seal_value_stored"]
    low, high = sorted((out.stored_value(report["fill_value_physical"]), report["seal_value_stored"]))
    surface = ~air & ~seal
    assert ((values[surface] > low) & (values[surface] < high)).all() and surface.sum() < seal.sum()
    assert 0 < seal.sum() <= report["total_sealed"] < 0.2 * report["total_removed"]
    assert np.allclose(out.physical()[changed][air], report["fill_value_physical"], atol=1e-3)
    assert_cut_surface_blended(head, out, report)
    assert report["fill_value_physical"] < out.physical()[changed][seal][0]  # tissue is brighter than air
    assert outcome["report"]["segmentation"]["present"]["eyes"]
    assert_no_chin_overhang(head, out, report, changed)


def assert_no_chin_overhang(before: Volume, after: Volume, report: dict, changed: np.ndarray) -> None:
    """Nothing hangs under the whole face's cut: the span box's floor met this CT's chin at its
    underside and left a shelf one voxel thick (1,650 voxels), a brim under the cut in every
    side render, above the jaw's underside. Under the floor, all of what hung from the cut is
    air now (9,809 voxels changed), and nothing else there changed: the neck, whose columns run
    on, is kept voxel for voxel."""
    from DeFacerLib.deface.face_cut import FACE_PARTS, chin_overhang, chin_overhang_box, down_axis, face_span_box

    parts = {name: [[np.asarray(v) for v in box] for box in report["features"][name]["component_boxes"]]
             for name in FACE_PARTS if report["features"][name]["present"]}
    span = face_span_box(before, parts)  # the face's box along the voxel axes: the overhang hangs from its floor
    slab = chin_overhang_box(before, span)
    axis, down = down_axis(before)
    region = tuple(slice(int(a), int(b) + 1) for a, b in zip(*slab))
    floor = np.take(changed[tuple(slice(int(a), int(b) + 1) for a, b in zip(*span))], 0 if down < 0 else -1, axis=axis)
    hung = chin_overhang(head_mask(before)[region], floor, axis, down)
    assert hung.sum() > 5000 and changed[region].sum() > 5000
    assert not (changed[region] & ~hung).any()
    assert (after.array[region][hung] == after.stored_value(report["fill_value_physical"])).all()
    from DeFacerLib.deface.removal import changed_region_mask  # the report's boxes hold every change

    assert len(report["features"]["face"]["component_boxes"]) == 2
    assert not (changed & ~changed_region_mask(report, before.shape3)).any()


@pytest.mark.slow
@pytest.mark.parametrize("subject", ["IXI132-HH-1415", "IXI396-HH-2115"])
def test_dlib_sees_no_face_where_it_saw_the_guards_outline(subject, data_dir, tmp_path):
    """On these two heads dlib's HOG detector found a face on the defaced front render (scores
    +0.07 and +0.02) until the eye visor: the outline of what the frontal guard keeps (its lower
    edge, the medial strip) read as brows over eyes and a nose bridge. With the visor the region
    around the eyes is one flat surface and neither detector finds a face."""
    from DeFacerLib.qa import face_direction, render_views
    from DeFacerLib.qa.recognize import FACE_PRESENT_SCORE, best_face, detect_faces_dlib

    source = data_dir / f"heads/ixi/t1/{subject}_T1.nii.gz"
    deface(source, tmp_path / "out.nii.gz")
    face = face_direction(read_volume(source))
    original, defaced = (render_views(read_volume(p), views=("front",), size=(400, 400), face=face)["front"]
                         for p in (source, tmp_path / "out.nii.gz"))
    assert detect_faces_dlib(original) and best_face(original).score >= FACE_PRESENT_SCORE
    assert detect_faces_dlib(defaced) == []
    assert getattr(best_face(defaced), "score", 0.0) < FACE_PRESENT_SCORE


@pytest.mark.slow
@pytest.mark.parametrize("rel, axis, degrees", [
    ("heads/ixi/t1/IXI546-HH-2450_T1.nii.gz", "pitch", -15.0),  # the pinna cut took 163 voxels
    ("heads/ixi/t1/IXI162-HH-1548_T1.nii.gz", "roll", -15.0),  # the eyes' boxes and face span, 6
])
def test_a_tilted_head_keeps_its_temporal_lobe(rel, axis, degrees, data_dir):
    """A head turned 15 degrees in its header (scripts/evaluate_tilted_heads.py): the U-Net's
    brain falls 6-7.5 mm short of the temporal lobe, past the 5 mm margin, and the cuts took
    reference-brain voxels there (the pinna cut where the skull bulges past the side outline,
    the eyes' boxes behind the orbit) until head tissue deeper than removal.DEEP_MM kept 10 mm
    from the protected region. The features still go (measured: eyes 95 and 98 %, nose and
    mouth 100 %, ears 100 and 87 %: the U-Net's ears on the tilted IXI162 are smaller)."""
    spec = importlib.util.spec_from_file_location("evaluate_tilted_heads", REPO / "scripts" / "evaluate_tilted_heads.py")
    tilted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tilted)
    head = read_volume(data_dir / rel)
    brain = read_volume(brain_labels_of(data_dir / rel, data_dir / "heads/ixi")).array > 0
    landmarks = load_landmarks(REPO / "scripts" / "training" / "landmarks.json")[rel]["landmarks"]
    labels = training_labels(head, landmarks, brain=brain)
    turned = tilted.turned(head, axis, degrees)
    found = find_features(turned, head=head_mask(turned))
    result = deface_volume(turned, found.masks, guard=found.guard, landmarks=found.landmarks)
    changed = np.asarray(result.volume.array) != np.asarray(turned.array)
    assert int(changed[brain].sum()) == 0
    for feature, least in (("eyes", 0.9), ("nose", 0.95), ("mouth", 0.95), ("ears", 0.8)):
        assert result.removed[labels == LABEL_VALUES[feature]].mean() >= least, feature
