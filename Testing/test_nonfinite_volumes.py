"""Float heads with NaN and +/-inf voxels, as a resampler leaves outside the old field of view.

One NaN made the model's input all NaN ("the face was not found" on a normal head), and with
a label map the air value became NaN, so every removed voxel was written as NaN and the
sidecar held ``NaN`` (not JSON). A real IXI head as float32, with NaN on its first three
slices (the air in front of the face) or scattered through the background, must deface as
its NaN-free copy does: same features, same removal, brain untouched, the NaN voxels that
were not removed kept as they were. A constant volume (nothing but one value) has no surface
for qa to render: an input error.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from DeFacerLib.deface.workflow import deface_file
from DeFacerLib.face import segment_features
from DeFacerLib.features import BRAIN, FEATURES, LABEL_VALUES
from DeFacerLib.io import read_volume, write_volume

SUBJECT = "IXI162-HH-1548"
FACE_FEATURES = ("eyes", "nose", "mouth", "ears")


def _strict_json(path) -> dict:
    """The sidecar as a strict parser (jq, JavaScript) reads it: NaN/Infinity are errors."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.fixture(scope="module")
def heads(data_dir, tmp_path_factory):
    """{name: path}: the float32 copy and its non-finite variants, and the reference brain."""
    folder = tmp_path_factory.mktemp("nonfinite")
    image = nib.load(str(data_dir / f"heads/ixi/t1/{SUBJECT}_T1.nii.gz"))
    values = np.asarray(image.dataobj, dtype=np.float32)
    slab = values.copy()
    slab[:3] = np.nan  # the array's first 3 slices: the air in front of the face on this head
    scattered = values.copy()
    background = np.argwhere(values == 0)
    picked = background[np.random.default_rng(7).choice(len(background), 200, replace=False)]
    scattered[tuple(picked.T)] = np.nan
    scattered[tuple(picked[:20].T)] = np.inf
    scattered[tuple(picked[20:40].T)] = -np.inf
    paths = {}
    for name, array in (("float", values), ("nan_slab", slab), ("scattered", scattered)):
        out = nib.Nifti1Image(array, image.affine, image.header.copy())
        out.header.set_data_dtype(np.float32)
        out.header.set_slope_inter(1.0, 0.0)
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(out, str(paths[name]))
    brain = np.asarray(nib.load(str(data_dir / f"heads/ixi/brain_labels/{SUBJECT}_T1_DLMUSE.nii.gz")).dataobj) > 0
    return folder, paths, brain


def _arrays(input_path, output_path):
    return np.asarray(nib.load(str(input_path)).dataobj), np.asarray(nib.load(str(output_path)).dataobj)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Voxels whose bytes differ (a NaN kept as NaN is unchanged)."""
    return before.view(np.uint32) != after.view(np.uint32)


def _removed_per_feature(outcome: dict) -> dict:
    return {name: outcome["report"]["features"][name]["voxels_removed"] for name in FACE_FEATURES}


def _check_nonfinite_run(input_path, outcome, reference, brain):
    """What every run on a non-finite variant must show, against the NaN-free run."""
    before, after = _arrays(input_path, outcome["output"])
    bad = ~np.isfinite(before)
    changed = _changed(before, after)
    assert outcome["features_removed"] == list(FEATURES) == reference["features_removed"]
    for name, count in _removed_per_feature(outcome).items():
        assert count == pytest.approx(_removed_per_feature(reference)[name], rel=0.01), name
    assert np.count_nonzero(changed & brain) == 0  # the reference brain is untouched
    # every removed voxel got the finite air value; the other non-finite voxels are as they were
    assert np.all(np.isfinite(after[changed]))
    kept = bad & ~changed
    assert np.count_nonzero(kept) > 0
    assert after[kept].tobytes() == before[kept].tobytes()
    assert np.count_nonzero(~np.isfinite(after)) == np.count_nonzero(kept)
    # the finite voxels changed are those the NaN-free run changed (to within 1 %)
    ref_before, ref_after = _arrays(reference["input"], reference["output"])
    ref_changed = _changed(ref_before, ref_after)
    differ = np.count_nonzero((changed != ref_changed) & ~bad)
    assert differ <= 0.01 * np.count_nonzero(ref_changed), differ
    sidecar = _strict_json(Path(outcome["sidecar"]))
    assert sidecar["report"]["fill_value_physical"] == reference["report"]["fill_value_physical"] == 0.0
    return np.count_nonzero(bad), np.count_nonzero(kept)


def test_the_model_finds_the_face_of_a_head_with_nan_voxels(heads):
    folder, paths, brain = heads
    reference = deface_file(paths["float"], folder / "float_out.nii.gz")
    reference["input"] = paths["float"]
    assert reference["features_removed"] == list(FEATURES)
    assert np.count_nonzero(_changed(*_arrays(paths["float"], reference["output"])) & brain) == 0

    slab = deface_file(paths["nan_slab"], folder / "slab_out.nii.gz")
    total, kept = _check_nonfinite_run(paths["nan_slab"], slab, reference, brain)
    assert total == 3 * 120 * 90 and 0 < kept < total  # the face's box took some of the slab, not all
    scattered = deface_file(paths["scattered"], folder / "scattered_out.nii.gz")
    total, kept = _check_nonfinite_run(paths["scattered"], scattered, reference, brain)
    assert total == 200 and kept >= 150
    # scattered background NaN/inf change nothing the model sees: the very same removal
    assert _removed_per_feature(scattered) == _removed_per_feature(reference)


def test_a_label_map_on_a_head_with_nan_voxels_fills_with_air_not_nan(heads):
    folder, paths, brain = heads
    head = read_volume(paths["float"])
    labels = segment_features(head).labels.copy()
    labels[labels == LABEL_VALUES[BRAIN]] = 0
    labels[brain] = LABEL_VALUES[BRAIN]  # the reference brain is the map's brain
    labels_path = write_volume(head.label_map(labels), folder / "labels.nii.gz")

    reference = deface_file(paths["float"], folder / "float_labels_out.nii.gz", labels_path=labels_path)
    reference["input"] = paths["float"]
    for name in ("nan_slab", "scattered"):
        outcome = deface_file(paths[name], folder / f"{name}_labels_out.nii.gz", labels_path=labels_path)
        _check_nonfinite_run(paths[name], outcome, reference, brain)
        # the label map fixes the features: the removal is the NaN-free run's to the voxel
        assert _removed_per_feature(outcome) == _removed_per_feature(reference)
        assert outcome["report"]["total_sealed"] == reference["report"]["total_sealed"]


def test_info_and_qa_on_a_head_with_nan_voxels(heads):
    folder, paths, _brain = heads
    defaced = folder / "slab_for_qa.nii.gz"
    deface_file(paths["nan_slab"], defaced)
    run = [sys.executable, "-m", "DeFacerLib"]
    info = subprocess.run([*run, "info", str(paths["nan_slab"]), "--json"], capture_output=True, text=True,
                          timeout=300)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout, parse_constant=lambda c: pytest.fail(f"info wrote {c}"))
    assert described["non_finite_voxels"] == 3 * 120 * 90
    assert described["value_range"][0] == 0.0 and described["value_range"][1] > 100
    qa = subprocess.run([*run, "qa", str(paths["nan_slab"]), str(defaced), "--out", str(folder / "qa"), "--json"],
                        capture_output=True, text=True, timeout=600)
    assert qa.returncode == 0, qa.stderr
    verdict = json.loads(qa.stdout, parse_constant=lambda c: pytest.fail(f"qa wrote {c}"))
    assert verdict["verdict"] == "PASS"
    front = next(view for view in verdict["check"]["views"] if view["view"] == "front")
    assert front["original_face_score"] > 0.8 and front["defaced_face_score"] < 0.5  # a face before, none after


@pytest.mark.parametrize("value", [0, 7])
def test_qa_on_a_constant_volume_is_an_input_error(data_dir, tmp_path, value):
    """A constant volume on a real head's grid has no surface to render: that is the input's
    fault (exit 3, one line), not an output that cannot be written (exit 4)."""
    image = nib.load(str(data_dir / f"heads/ixi/t1/{SUBJECT}_T1.nii.gz"))
    constant = tmp_path / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.full(image.shape, value, np.uint8), image.affine, image.header), str(constant))
    out = tmp_path / "qa"
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "qa", str(constant), str(constant), "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0] == f"defacer: error: {constant}: the volume is constant; there is no head surface to render"
    assert not out.exists()
