"""The hand-checked landmark table and the U-Net's training labels, on the real heads.

Landmarks are checked against anatomy (depth under the skin, sides, eye spacing); labels
against plausible feature volumes, the reference brain and the head mask.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from DeFacerLib.deface import head_mask
from DeFacerLib.face.labels import (
    LANDMARK_NAMES,
    UNKNOWN,
    feature_centres,
    feature_volumes_cm3,
    load_landmarks,
    training_labels,
)
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.io import read_volume

LANDMARKS_JSON = Path(__file__).resolve().parents[1] / "scripts" / "training" / "landmarks.json"
TABLE = load_landmarks(LANDMARKS_JSON)

# (min, max) signed depth under the skin in mm (negative: outside the head mask)
DEPTH_RANGE_MM = {
    "eye_left": (8.0, 30.0), "eye_right": (8.0, 30.0), "nose_tip": (-4.0, 4.0),
    "mouth": (-6.0, 12.0), "ear_left": (-8.0, 8.0), "ear_right": (-8.0, 8.0),
}
# plausible labelled volume per feature (cm^3), both sides together for eyes and ears
VOLUME_RANGE_CM3 = {"eyes": (8.0, 45.0), "nose": (8.0, 45.0), "mouth": (6.0, 40.0), "ears": (4.0, 45.0)}


@lru_cache(maxsize=None)
def _head(data_dir: Path, rel: str):
    """(volume, head mask), read once per session: the depth and label tests share them."""
    volume = read_volume(data_dir / rel)
    return volume, head_mask(volume)


def _local_depth_mm(head: np.ndarray, volume, point_mm) -> float:
    """Signed distance (mm) of a world point under the skin, from a 45 mm box around it."""
    ijk = np.round(volume.world_to_index(np.asarray(point_mm, float))).astype(int)
    radius = np.ceil(45.0 / volume.spacing_mm).astype(int)
    lo = np.maximum(ijk - radius, 0)
    hi = np.minimum(ijk + radius + 1, volume.shape3)
    box = head[tuple(slice(a, b) for a, b in zip(lo, hi))]
    local = tuple(ijk - lo)
    if box[local]:
        return float(ndi.distance_transform_edt(box, sampling=volume.spacing_mm)[local])
    return -float(ndi.distance_transform_edt(~box, sampling=volume.spacing_mm)[local])


def test_table_covers_every_head_and_each_exists(data_dir):
    ixi = sorted(f"heads/ixi/t1/{p.name}" for p in (data_dir / "heads/ixi/t1").glob("IXI*_T1.nii.gz"))
    singles = sorted(f"heads/single/{p.name}" for p in (data_dir / "heads/single").iterdir())
    for rel in ixi + singles:
        assert rel in TABLE, f"{rel} has no landmarks"
    for rel, entry in TABLE.items():
        assert (data_dir / rel).exists(), f"{rel} is in landmarks.json but not in the data"
        named = set(entry["landmarks"]) | set(entry["missing"])
        assert named == set(LANDMARK_NAMES), f"{rel}: landmarks + missing = {sorted(named)}"
        assert "verified" in entry["verification"] or "NOT verified" in entry["verification"], rel


def test_sides_and_eye_spacing():
    for rel, entry in TABLE.items():
        lm = {k: np.asarray(v) for k, v in entry["landmarks"].items()}
        if "eye_left" in lm and "eye_right" in lm:
            assert lm["eye_left"][0] > lm["eye_right"][0], f"{rel}: eye_left is not on the patient's left (+x)"
            ipd = float(np.linalg.norm(lm["eye_left"] - lm["eye_right"]))
            assert 50.0 <= ipd <= 75.0, f"{rel}: inter-pupillary distance {ipd:.1f} mm"
        if "ear_left" in lm and "ear_right" in lm:
            assert lm["ear_left"][0] > lm["ear_right"][0] + 100, f"{rel}: ears not on their sides"
        if "mouth" in lm:
            assert lm["mouth"][2] < lm["nose_tip"][2] - 8, f"{rel}: mouth not below the nose tip"


@pytest.mark.slow
def test_landmark_depths_under_the_skin(data_dir):
    depths = {}
    for rel, entry in TABLE.items():
        volume, head = _head(data_dir, rel)
        for name, point in entry["landmarks"].items():
            depth = _local_depth_mm(head, volume, point)
            depths[(rel, name)] = depth
            low, high = DEPTH_RANGE_MM[name]
            assert low <= depth <= high, f"{rel}: {name} lies {depth:.1f} mm under the skin, expected {low}-{high}"
    eyes = [d for (rel, n), d in depths.items() if n.startswith("eye")]
    assert 12.0 < np.median(eyes) < 25.0, f"median eye-centre depth {np.median(eyes):.1f} mm"


IXI_FOR_LABELS = ("IXI132-HH-1415", "IXI255-HH-1882", "IXI516-HH-2297")


@pytest.mark.slow
@pytest.mark.parametrize("subject", IXI_FOR_LABELS)
def test_training_labels_ixi(data_dir, subject):
    rel = f"heads/ixi/t1/{subject}_T1.nii.gz"
    volume, head = _head(data_dir, rel)
    brain = read_volume(data_dir / f"heads/ixi/brain_labels/{subject}_T1_DLMUSE.nii.gz").array > 0
    labels = training_labels(volume, TABLE[rel]["landmarks"], brain=brain, head=head)
    assert labels.dtype == np.uint8 and labels.shape == volume.shape3
    assert not np.any(labels == UNKNOWN), "UNKNOWN used although the reference brain was given"
    sizes = feature_volumes_cm3(volume, labels)
    for feature in FEATURES:
        low, high = VOLUME_RANGE_CM3[feature]
        assert low <= sizes[feature] <= high, f"{rel}: {feature} labelled {sizes[feature]:.1f} cm3, expected {low}-{high}"
    features = np.isin(labels, [LABEL_VALUES[f] for f in FEATURES])
    assert not np.any(features & brain), f"{rel}: {np.count_nonzero(features & brain)} feature voxels in the brain"
    assert np.array_equal(labels == LABEL_VALUES["brain"], brain)
    assert not np.any(features & ~head), f"{rel}: feature voxels outside the head"
    # the label centres sit near the landmarks (eyes and ears: one component per side)
    centres = feature_centres(volume, labels)
    assert len(centres["eyes"]) == 2, f"{rel}: {len(centres['eyes'])} eye components"
    eye = np.asarray(TABLE[rel]["landmarks"]["eye_left"])
    nearest = min(float(np.linalg.norm(c - eye)) for c in centres["eyes"])
    assert nearest < 12.0, f"{rel}: eye label centre {nearest:.1f} mm from the landmark"


@pytest.mark.slow
def test_training_labels_ct_without_brain(data_dir):
    rel = "heads/single/ct_head_1mm_scaled01.nii.gz"
    volume, head = _head(data_dir, rel)
    labels = training_labels(volume, TABLE[rel]["landmarks"], head=head)
    sizes = feature_volumes_cm3(volume, labels)
    for feature in FEATURES:
        low, high = VOLUME_RANGE_CM3[feature]
        assert low <= sizes[feature] <= high, f"{rel}: {feature} labelled {sizes[feature]:.1f} cm3, expected {low}-{high}"
    assert not np.any((labels > 0) & ~head), "labels outside the head"
    unknown = labels == UNKNOWN
    # without a reference brain the deep head is UNKNOWN: at least a brain's worth (> 900 cm3)
    unknown_cm3 = np.count_nonzero(unknown) * float(np.prod(volume.spacing_mm)) / 1000
    assert 900 < unknown_cm3 < 4000, f"{rel}: UNKNOWN covers {unknown_cm3:.0f} cm3"
    assert not np.any(labels == LABEL_VALUES["brain"])
