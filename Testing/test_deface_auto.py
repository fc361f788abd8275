"""`defacer deface` end to end with the shipped U-Net, on held-out real heads and the CT.

The heads are from the validation split (never trained on). The targets: the reference
brain (IXI brain_labels) is never touched and the labelled tissue of each feature (from the
verified landmarks) is mostly removed. The shipped model is undertrained (MODEL_CARD.md: it
finds the brain, not yet the eyes, nose and mouth), so those target tests are strict xfails
that start failing, as a reminder, once a model that meets them ships; meanwhile the tool
must refuse rather than write a head that keeps its face.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from DeFacerLib.face.labels import load_landmarks, training_labels
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.io import read_volume

REPO = Path(__file__).resolve().parents[1]
SPLIT = json.loads((REPO / "scripts" / "training" / "split.json").read_text())
VALIDATION_IXI = [rel for rel in SPLIT["validation"] if rel.startswith("heads/ixi/")][:3]
# Share of each feature's labelled tissue (within the removal depth) that must be removed.
MIN_REMOVED_FRACTION = {"eyes": 0.5, "nose": 0.5, "mouth": 0.5, "ears": 0.3}


def deface(source: Path, target: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(source), str(target), "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


UNDERTRAINED = pytest.mark.xfail(strict=True, reason="shipped U-Net finds no eyes/nose/mouth yet (MODEL_CARD.md)")


@pytest.mark.slow
@pytest.mark.parametrize("rel", VALIDATION_IXI[:1])
def test_face_not_found_means_nothing_written(rel, data_dir, tmp_path):
    """With the face not found, the command fails on one line and writes nothing at all."""
    out = tmp_path / "out.nii.gz"
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(data_dir / rel), str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stderr
    assert "the face was not found" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@UNDERTRAINED
@pytest.mark.parametrize("rel", VALIDATION_IXI)
def test_validation_head_brain_untouched_features_removed(rel, data_dir, tmp_path):
    head_path = data_dir / rel
    outcome = deface(head_path, tmp_path / "out.nii.gz")
    head, out = read_volume(head_path), read_volume(tmp_path / "out.nii.gz")
    name = head_path.name.replace("_T1.nii.gz", "_T1_DLMUSE.nii.gz")
    brain = read_volume(data_dir / "heads/ixi/brain_labels" / name).array > 0
    assert int((out.array[brain] != head.array[brain]).sum()) == 0
    assert outcome["report"]["protected_voxels_changed"] == 0
    landmarks = load_landmarks(REPO / "scripts" / "training" / "landmarks.json")[rel]["landmarks"]
    labels = training_labels(head, landmarks, brain=brain)
    changed = out.array != head.array
    removed = {f: float(changed[labels == LABEL_VALUES[f]].mean()) for f in FEATURES}
    assert outcome["features_removed"], outcome["features_missing"]
    for feature in outcome["features_removed"]:
        assert removed[feature] >= MIN_REMOVED_FRACTION[feature], (rel, removed)


@pytest.mark.slow
@UNDERTRAINED
def test_ct_head_is_defaced_with_the_face_found(data_dir, tmp_path):
    source = data_dir / "heads/single/ct_head_1mm_scaled01.nii.gz"
    outcome = deface(source, tmp_path / "ct.nii.gz")
    assert {"eyes", "nose"} <= set(outcome["features_removed"]), outcome
    head, out = read_volume(source), read_volume(tmp_path / "ct.nii.gz")
    changed = out.array != head.array
    assert changed.sum() > 10_000
    # the removed voxels hold the background (air) value of this 0-1 rescaled CT
    assert np.allclose(out.physical()[changed], outcome["report"]["fill_value_physical"], atol=1e-3)
    assert outcome["report"]["segmentation"]["present"]["eyes"]
