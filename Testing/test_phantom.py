"""The synthetic head: labels, orientation codes, geometry and value scaling."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from DeFacerLib.deface import head_mask, skin_depth_mm
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.orientation import to_canonical
from DeFacerLib.phantom import make_phantom, valid_orientation

ALL_CODES = sorted(
    "".join(letters)
    for perm in itertools.permutations(("LR", "PA", "SI"))
    for letters in itertools.product(*perm)
)


def test_all_48_orientation_codes_are_valid_and_nonsense_is_refused():
    assert len(ALL_CODES) == 48 and all(valid_orientation(c) for c in ALL_CODES)
    for bad in ("LLS", "LP", "XYZ", "LPSR"):
        with pytest.raises(ValueError):
            make_phantom(orientation=bad)


@pytest.fixture(scope="module")
def canonical_mr():
    return make_phantom(modality="MR")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(code=st.sampled_from(ALL_CODES))
def test_any_orientation_is_the_same_head_voxel_for_voxel(canonical_mr, code):
    reference, reference_labels = canonical_mr
    volume, labels = make_phantom(modality="MR", orientation=code)
    assert volume.describe_orientation() == code
    assert labels.shape == volume.shape3 and labels.dtype == np.uint8
    canonical, reorientation = to_canonical(volume)
    assert np.array_equal(canonical.array, reference.array)
    assert np.array_equal(reorientation.apply(labels), reference_labels)
    np.testing.assert_allclose(canonical.origin_mm, reference.origin_mm, atol=1e-9)
    np.testing.assert_allclose(canonical.direction, np.eye(3), atol=1e-12)
    # Same world position for the same anatomy: the nose's centroid in LPS mm.
    nose_world = volume.index_to_world(np.argwhere(labels == LABEL_VALUES["nose"])).mean(axis=0)
    ref_world = reference.index_to_world(np.argwhere(reference_labels == LABEL_VALUES["nose"])).mean(axis=0)
    np.testing.assert_allclose(nose_world, ref_world, atol=1e-6)


def test_anatomy_is_where_a_head_has_it(canonical_mr):
    volume, labels = canonical_mr
    centroid = {name: volume.index_to_world(np.argwhere(labels == value)).mean(axis=0)
                for name, value in LABEL_VALUES.items()}
    # LPS: anterior is -y, superior +z, left +x.
    assert centroid["nose"][1] < centroid["eyes"][1] < centroid["brain"][1]
    assert centroid["mouth"][2] < centroid["nose"][2] < centroid["eyes"][2] < centroid["brain"][2]
    ears = volume.index_to_world(np.argwhere(labels == LABEL_VALUES["ears"]))
    assert ears[:, 0].min() < -65 and ears[:, 0].max() > 65  # one pinna on each side
    eyes = volume.index_to_world(np.argwhere(labels == LABEL_VALUES["eyes"]))
    assert (eyes[:, 0] < 0).sum() == (eyes[:, 0] > 0).sum()  # two symmetric globes
    counts = {name: int((labels == value).sum()) for name, value in LABEL_VALUES.items()}
    assert all(count > 300 for count in counts.values()), counts
    # The features are at the surface, as the real ones: median depth under the skin.
    head = head_mask(volume)
    depth = skin_depth_mm(head, volume.spacing_mm)
    for name in FEATURES:
        median = float(np.median(depth[labels == LABEL_VALUES[name]]))
        assert median <= 16.0, f"{name}: median depth {median:.1f} mm"
    assert float(np.median(depth[labels == LABEL_VALUES["brain"]])) > 30.0
    # The neck leaves through the bottom of the field of view, as in real scans.
    assert head[:, :, 0].sum() > 500


def test_ct_values_are_stored_with_an_intercept_and_read_as_hounsfield():
    volume, labels = make_phantom(modality="CT", orientation="RAS", noise=0.0)
    assert volume.array.dtype == np.int16 and volume.slope == 1.0 and volume.intercept == -1024.0
    hu = volume.physical()
    assert np.median(hu[(labels == 0)][:1000]) == pytest.approx(-1000.0, abs=1.0)
    assert np.median(hu[labels == LABEL_VALUES["brain"]]) == pytest.approx(30.0, abs=10.0)
    assert hu.max() > 900.0  # skull
    assert volume.array.min() >= 0  # stored = HU + 1024


def test_oblique_rotates_world_geometry_only(canonical_mr):
    reference, reference_labels = canonical_mr
    volume, labels = make_phantom(modality="MR", oblique_deg=12.0)
    assert np.array_equal(volume.array, reference.array) and np.array_equal(labels, reference_labels)
    np.testing.assert_allclose(volume.direction.T @ volume.direction, np.eye(3), atol=1e-12)
    angle = np.degrees(np.arccos((np.trace(volume.direction) - 1) / 2))
    assert angle == pytest.approx(12.0, abs=1e-6)
    centre = (np.asarray(volume.shape3) - 1) / 2
    np.testing.assert_allclose(volume.index_to_world(centre), 0.0, atol=1e-9)
    assert volume.describe_orientation() == "LPS"


def test_mr_background_is_rician_noise_and_seeded():
    first, _ = make_phantom(modality="MR", seed=3)
    second, labels = make_phantom(modality="MR", seed=3)
    assert np.array_equal(first.array, second.array)
    background = first.physical()[:8, :8, -8:]
    # Rician floor with sigma = 20: mean about 20 * sqrt(pi/2) = 25, never negative.
    assert background.min() >= 0 and 15.0 < background.mean() < 35.0
