"""The re-identification check on real heads: an intact face fails, a removed face passes."""
from __future__ import annotations

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
from DeFacerLib.qa.check import VERDICT_VIEWS, check_pair, render_thresholds
from ixi_layout import brain_labels_of  # scripts/ixi_layout.py (conftest puts scripts/ on the path)

REPO = Path(__file__).resolve().parents[1]
IXI = "IXI132-HH-1415_T1.nii.gz"


def test_calibrated_render_thresholds_ship():
    thresholds = render_thresholds()
    calibration = json.loads((REPO / "Resources" / "QA" / "render_match_thresholds.json").read_text())
    assert thresholds == {m: calibration["models"][m]["threshold"] for m in ("sface", "dlib")}
    # stricter than the published photo thresholds, which call different people's renders a match
    assert thresholds["sface"] > 0.363 and thresholds["dlib"] < 0.6


def test_intact_face_fails_through_the_cli(data_dir, tmp_path):
    head = data_dir / "heads/ixi/t1" / IXI
    copy = write_volume(read_volume(head), tmp_path / "copy.nii.gz")
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "qa", str(head), str(copy), "--out",
                             str(tmp_path / "qa"), "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 6, result.stderr
    assert result.stderr.startswith("defacer: error: re-identification check FAILED")
    report = json.loads(result.stdout)
    assert report["verdict"] == "FAIL"
    views = {v["view"]: v for v in report["check"]["views"]}
    for view in VERDICT_VIEWS:
        assert views[view]["defaced_face_score"] >= 0.75
        assert views[view]["similarity"]["sface"] == pytest.approx(1.0, abs=1e-3)
    page = Path(report["files"]["html"]).read_text()
    assert "FAIL" in page and page.count("data:image/png;base64,") == 10
    assert "<b>Private:</b> this report shows renders of the original, undefaced head" in page


def test_face_found_on_the_ct_head(data_dir):
    ct = read_volume(data_dir / "heads/single/ct_head_1mm_scaled01.nii.gz")
    check, before, _ = check_pair(ct, ct, views=("front",))
    assert check.views[0].original_face_score >= 0.75
    assert check.views[0].original_dlib_faces >= 1
    assert check.verdict == "FAIL"


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
    limits = render_thresholds()
    for view in check.views:
        if view.view in VERDICT_VIEWS:
            assert view.similarity_forced["sface"] < limits["sface"], (view.view, view.similarity_forced)
