"""The re-identification check on real heads: an intact face fails, a removed face passes."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from DeFacerLib.deface import remove_features
from DeFacerLib.face.labels import load_landmarks, training_labels
from DeFacerLib.features import LABEL_VALUES
from DeFacerLib.io import read_volume, write_volume
from DeFacerLib.qa.check import VERDICT_VIEWS, check_pair, impostor_threshold, is_match, pair_thresholds, render_thresholds
from ixi_layout import brain_labels_of  # scripts/ixi_layout.py (conftest puts scripts/ on the path)

REPO = Path(__file__).resolve().parents[1]
IXI = "IXI132-HH-1415_T1.nii.gz"


def test_impostor_threshold_lets_one_percent_of_different_people_match():
    """How both calibrations (reid_study.py, calibrate_pair_check.py) set a threshold, in the
    direction is_match reads it: SFace similarity higher is closer, dlib distance lower."""
    impostor = np.linspace(0.0, 1.0, 1001)
    sface, dlib = impostor_threshold("sface", impostor), impostor_threshold("dlib", impostor)
    assert sface == pytest.approx(0.99) and dlib == pytest.approx(0.01)
    assert np.mean(impostor >= sface) == pytest.approx(0.011, abs=0.001)
    assert np.mean(impostor <= dlib) == pytest.approx(0.011, abs=0.001)
    assert is_match("sface", 0.995) and not is_match("sface", 0.2) and is_match("dlib", 0.0) and not is_match("dlib", 0.9)


def test_calibrated_render_thresholds_ship():
    thresholds = render_thresholds()
    calibration = json.loads((REPO / "Resources" / "QA" / "render_match_thresholds.json").read_text())
    assert thresholds == {m: calibration["models"][m]["threshold"] for m in ("sface", "dlib")}
    # stricter than the published photo thresholds, which call different people's renders a match
    assert thresholds["sface"] > 0.363 and thresholds["dlib"] < 0.6
    # the pair check's own, per view (two heads seen the same way: scripts/calibrate_pair_check.py)
    per_view = pair_thresholds()
    shipped = json.loads((REPO / "Resources" / "QA" / "pair_check_thresholds.json").read_text())["views"]
    assert set(per_view) == set(VERDICT_VIEWS)
    for view in VERDICT_VIEWS:
        assert per_view[view] == {m: shipped[view][m]["threshold"] for m in ("sface", "dlib")}
        assert per_view[view]["sface"] > 0.363 and per_view[view]["dlib"] < 0.6
        assert shipped[view]["sface"]["impostor_pairs"] >= 27 * 26


def test_intact_face_fails_through_the_cli(data_dir, tmp_path):
    head = data_dir / "heads/ixi/t1" / IXI
    copy = write_volume(read_volume(head), tmp_path / "copy.nii.gz")
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "qa", str(head), str(copy), "--out",
                             str(tmp_path / "qa"), "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 6, result.stderr
    assert result.stderr.startswith("defacer: error: re-identification check FAILED")
    assert "--shield" in result.stderr and len(result.stderr.strip().splitlines()) == 1  # what to do, in one line
    report = json.loads(result.stdout)
    assert report["verdict"] == "FAIL"
    views = {v["view"]: v for v in report["check"]["views"]}
    for view in VERDICT_VIEWS:
        assert views[view]["defaced_face_score"] >= 0.75
        assert views[view]["similarity"]["sface"] == pytest.approx(1.0, abs=1e-3)
    page = Path(report["files"]["html"]).read_text()
    assert "FAIL" in page and page.count("data:image/png;base64,") == 10
    assert "<b>What to do:</b>" in page and "defacer deface --shield" in page
    assert "<b>Private:</b> this report shows renders of the original, undefaced head" in page


def test_face_found_on_the_ct_head(data_dir):
    ct = read_volume(data_dir / "heads/single/ct_head_1mm_scaled01.nii.gz")
    check, before, _ = check_pair(ct, ct, views=("front",))
    assert check.views[0].original_face_score >= 0.75
    assert check.views[0].original_dlib_faces >= 1
    assert check.verdict == "FAIL"


def test_a_head_without_a_face_on_its_original_renders_fails(data_dir):
    """A skull-stripped IXI132 (only its reference brain kept) shows no face from any view, so
    the recognisers have nothing to compare, and "no match" would mean nothing: the check FAILs
    as unable to judge (measured: YuNet 0.0 on all five original renders, that one reason)."""
    head = read_volume(data_dir / "heads/ixi/t1" / IXI)
    brain = read_volume(brain_labels_of(IXI, data_dir / "heads/ixi")).array > 0
    stripped = dataclasses.replace(head, array=np.where(brain, head.array, 0).astype(head.array.dtype))
    check, _, _ = check_pair(stripped, stripped)
    assert [view.original_face_score for view in check.views] == [0.0] * len(check.views)
    assert check.verdict == "FAIL"
    assert len(check.reasons) == 1 and check.reasons[0].startswith("no face was detected on the ORIGINAL's front renders")


@pytest.mark.slow
@pytest.mark.parametrize("name", [IXI, "IXI162-HH-1548_T1.nii.gz"])
def test_removed_face_region_passes(data_dir, name):
    """The face region (eyes to mouth, from the verified landmarks) removed by the guarded
    engine: no facial view matches the original any more, and the brain is untouched."""
    rel = f"heads/ixi/t1/{name}"
    head = read_volume(data_dir / rel)
    brain = read_volume(brain_labels_of(name, data_dir / "heads/ixi")).array > 0
    landmarks = load_landmarks(REPO / "scripts" / "training" / "landmarks.json")[rel]["landmarks"]
    labels = training_labels(head, landmarks, brain=brain)
    face = np.isin(labels, [LABEL_VALUES[n] for n in ("eyes", "nose", "mouth")])
    low, high = np.argwhere(face).min(0), np.argwhere(face).max(0) + 1
    box = np.zeros(head.shape3, bool)
    box[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = True
    defaced, report = remove_features(head, {"nose": box}, brain)
    assert report.protected_voxels_changed == 0 and (defaced.array[brain] == head.array[brain]).all()
    check, _, _ = check_pair(head, defaced)
    assert check.verdict == "PASS", check.reasons
    for view in check.views:
        if view.view in VERDICT_VIEWS:
            assert view.similarity_forced["sface"] < pair_thresholds()[view.view]["sface"], (view.view, view.similarity_forced)


@pytest.mark.parametrize("other", ["IXI162-HH-1548_T1.nii.gz", "IXI213-HH-1642_T1.nii.gz", "IXI217-HH-1638_T1.nii.gz"])
def test_another_persons_intact_head_is_no_match(data_dir, other):
    """The per-view thresholds: IXI132 against another person's undefaced head, seen the same
    way. The cross-view thresholds called each of these a match (front, front_right, front_left)."""
    heads = data_dir / "heads/ixi/t1"
    check, _, _ = check_pair(read_volume(heads / IXI), read_volume(heads / other), views=VERDICT_VIEWS)
    assert check.verdict == "PASS", check.reasons
    assert all(view.original_face_score >= 0.75 and view.defaced_face_score >= 0.75 for view in check.views)


def test_defacer_output_passes(data_dir, tmp_path):
    """IXI211 defaced by default: the cross-view thresholds failed it on both obliques (dlib
    0.451, SFace 0.480), the same-view ones pass it, as they pass every IXI head's output."""
    head = data_dir / "heads/ixi/t1/IXI211-HH-1568_T1.nii.gz"
    out = tmp_path / "defaced.nii.gz"
    subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(head), str(out), "-q"], check=True, timeout=600)
    check, _, _ = check_pair(read_volume(head), read_volume(out), views=VERDICT_VIEWS)
    assert check.verdict == "PASS", check.reasons
    for view in check.views:
        assert view.similarity_forced["sface"] < pair_thresholds()[view.view]["sface"]
        assert view.similarity_forced["dlib"] > pair_thresholds()[view.view]["dlib"]
