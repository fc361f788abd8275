"""Reorientation is exact and keeps every voxel where it is in the world; writers keep the affine.

Property tests cover all 48 axis permutations/flips, random spacings and origins and small
oblique rotations; real-data tests take the IXI head (PSR), the MGZ (LIA) and the Trio
DICOM series (PIR) to canonical and back.
"""
from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from DeFacerLib.io import read_volume, with_format, write_volume
from DeFacerLib.orientation import from_canonical, to_canonical
from DeFacerLib.volume import Volume

SIGNED_PERMUTATIONS = [
    (perm, signs) for perm in itertools.permutations(range(3)) for signs in itertools.product((1.0, -1.0), repeat=3)
]
assert len(SIGNED_PERMUTATIONS) == 48


def rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * k @ k


@st.composite
def volumes(draw) -> Volume:
    perm, signs = draw(st.sampled_from(SIGNED_PERMUTATIONS))
    signed = np.zeros((3, 3))
    for array_axis, world_axis in enumerate(perm):
        signed[world_axis, array_axis] = signs[array_axis]
    axis = np.array(draw(st.tuples(*[st.floats(-1, 1)] * 3)))
    angle = draw(st.floats(0, np.deg2rad(15))) if np.linalg.norm(axis) > 1e-3 else 0.0
    direction = (rotation(axis, angle) if angle else np.eye(3)) @ signed
    shape = draw(st.tuples(*[st.integers(2, 6)] * 3))
    spacing = draw(st.tuples(*[st.floats(0.3, 4.0)] * 3))
    origin = draw(st.tuples(*[st.floats(-150, 150)] * 3))
    seed = draw(st.integers(0, 2**31 - 1))
    array = np.random.default_rng(seed).integers(-1000, 3000, size=shape).astype(np.int16)
    return Volume(array=array, spacing_mm=spacing, origin_mm=origin, direction=direction)


def all_indices(shape) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)


@settings(max_examples=300, deadline=None)
@given(volumes())
def test_canonical_round_trip_is_exact_and_keeps_world_positions(volume):
    canonical, reorientation = to_canonical(volume)
    assert canonical.describe_orientation() == "LPS"
    back = from_canonical(canonical.array, volume, reorientation)
    assert back.array.dtype == volume.array.dtype and np.array_equal(back.array, volume.array)
    canonical_ijk = all_indices(canonical.shape3)
    original_ijk = reorientation.undo_index(canonical_ijk).astype(int)
    np.testing.assert_allclose(
        canonical.index_to_world(canonical_ijk), volume.index_to_world(original_ijk), atol=1e-9
    )
    assert np.array_equal(canonical.array[tuple(canonical_ijk.T)], volume.array[tuple(original_ijk.T)])
    assert np.array_equal(reorientation.apply_index(original_ijk), canonical_ijk)


@settings(max_examples=25, deadline=None)
@given(volumes(), st.sampled_from([("nifti", ".nii.gz"), ("nrrd", ".nrrd")]))
def test_writers_keep_the_affine(volume, target):
    fmt, suffix = target
    with tempfile.TemporaryDirectory() as folder:
        out = write_volume(with_format(volume, fmt, path=Path(folder) / "in"), Path(folder) / f"v{suffix}")
        again = read_volume(out)
    np.testing.assert_allclose(again.affine_lps, volume.affine_lps, atol=1e-5)
    assert np.array_equal(again.array, volume.array)


@pytest.mark.parametrize(
    "relative,codes",
    [
        ("heads/ixi/t1/IXI132-HH-1415_T1.nii.gz", "PSR"),
        ("heads/single/mne_sample_T1.mgz", "LIA"),
        ("dicom/siemens_trio_mprage_1mm", "PIR"),
    ],
)
def test_real_volumes_to_canonical_and_back(data_dir, relative, codes):
    volume = read_volume(data_dir / relative)
    assert volume.describe_orientation() == codes
    canonical, reorientation = to_canonical(volume)
    assert canonical.describe_orientation() == "LPS"
    back = from_canonical(canonical.array, volume, reorientation)
    assert np.array_equal(back.array, volume.array) and back.array.dtype == volume.array.dtype
    # the corner voxels sit at the same world positions in both frames
    corners = all_indices((2, 2, 2)) * (np.array(canonical.shape3) - 1)
    np.testing.assert_allclose(
        canonical.index_to_world(corners), volume.index_to_world(reorientation.undo_index(corners)), atol=1e-6
    )
