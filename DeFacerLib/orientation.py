"""Reorienting a Volume to one canonical frame and back, by axis permutation and flips only.

Every stage that reasons about anatomy ("in front of", "above") works in the canonical
frame: array axis 0 runs towards the patient's Left, axis 1 Posterior, axis 2 Superior
(LPS+). No resampling ever happens, so the round trip is exact, voxel for voxel. Oblique
acquisitions keep their residual rotation in ``direction``; the canonical axes are the
closest anatomical ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from DeFacerLib.volume import Volume

_POSITIVE = "LPS"
_NEGATIVE = "RAI"


def axis_codes(direction: np.ndarray) -> list[str]:
    """For each array axis, the anatomical direction (L/R, P/A, S/I) it most points to."""
    order = _closest_world_axes(direction)
    codes = []
    for array_axis, world_axis in enumerate(order):
        sign = np.sign(direction[world_axis, array_axis])
        codes.append(_POSITIVE[world_axis] if sign >= 0 else _NEGATIVE[world_axis])
    return codes


def _closest_world_axes(direction: np.ndarray) -> list[int]:
    """Assign each array axis a distinct world axis, greedily by largest |cosine|."""
    weights = np.abs(np.asarray(direction, dtype=float))
    assignment = [-1, -1, -1]
    used_world: set[int] = set()
    for flat in np.argsort(-weights, axis=None):
        world_axis, array_axis = divmod(int(flat), 3)
        if assignment[array_axis] == -1 and world_axis not in used_world:
            assignment[array_axis] = world_axis
            used_world.add(world_axis)
    return assignment


@dataclass(frozen=True)
class Reorientation:
    """How a volume's array was permuted and flipped to reach the canonical frame."""

    permutation: tuple[int, int, int]  # canonical axis c comes from original axis permutation[c]
    flips: tuple[bool, bool, bool]  # canonical axis c was reversed
    original_shape: tuple[int, int, int]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Original-frame array (3D or with trailing axes) -> canonical-frame array."""
        axes = list(self.permutation) + list(range(3, array.ndim))
        out = np.transpose(array, axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=axis)
        return out

    def undo(self, array: np.ndarray) -> np.ndarray:
        """Canonical-frame array -> original-frame array (exact inverse of ``apply``)."""
        out = array
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=axis)
        inverse = list(np.argsort(self.permutation)) + list(range(3, array.ndim))
        return np.transpose(out, inverse)

    def apply_index(self, ijk: np.ndarray) -> np.ndarray:
        """Original voxel indices (N, 3) -> canonical voxel indices (exact inverse of ``undo_index``)."""
        ijk = np.asarray(ijk, dtype=float).reshape(-1, 3)
        canonical = ijk[:, list(self.permutation)]
        canonical_shape = np.array([self.original_shape[p] for p in self.permutation], dtype=float)
        return np.where(np.asarray(self.flips), canonical_shape - 1 - canonical, canonical)

    def undo_index(self, ijk: np.ndarray) -> np.ndarray:
        """Canonical voxel indices (N, 3) -> original voxel indices."""
        ijk = np.array(ijk, dtype=float, copy=True).reshape(-1, 3)
        canonical_shape = [self.original_shape[p] for p in self.permutation]
        for axis, flip in enumerate(self.flips):
            if flip:
                ijk[:, axis] = canonical_shape[axis] - 1 - ijk[:, axis]
        original = np.empty_like(ijk)
        for canonical_axis, original_axis in enumerate(self.permutation):
            original[:, original_axis] = ijk[:, canonical_axis]
        return original


def canonical_reorientation(volume: Volume) -> Reorientation:
    world_of_axis = _closest_world_axes(volume.direction)
    permutation = tuple(int(np.argsort(world_of_axis)[c]) for c in range(3))
    flips = tuple(bool(volume.direction[c, permutation[c]] < 0) for c in range(3))
    return Reorientation(permutation, flips, volume.shape3)


def to_canonical(volume: Volume) -> tuple[Volume, Reorientation]:
    """The same voxels, re-indexed so array axes run L, P, S; plus how to go back."""
    reorientation = canonical_reorientation(volume)
    array = np.ascontiguousarray(reorientation.apply(volume.array))
    direction = volume.direction[:, list(reorientation.permutation)].copy()
    spacing = volume.spacing_mm[list(reorientation.permutation)]
    origin = volume.origin_mm.copy()
    for axis, flip in enumerate(reorientation.flips):
        if flip:
            origin = origin + direction[:, axis] * spacing[axis] * (array.shape[axis] - 1)
            direction[:, axis] = -direction[:, axis]
    canonical = Volume(
        array=array,
        spacing_mm=spacing,
        origin_mm=origin,
        direction=direction,
        modality=volume.modality,
        slope=volume.slope,
        intercept=volume.intercept,
        source=volume.source,
    )
    return canonical, reorientation


def from_canonical(canonical_array: np.ndarray, original: Volume, reorientation: Reorientation) -> Volume:
    """Put a canonical-frame array back into the original volume's frame and geometry."""
    return original.with_array(np.ascontiguousarray(reorientation.undo(canonical_array)))
