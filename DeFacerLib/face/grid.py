"""The network's fixed grid: any head Volume in, a 64^3 cube at 3.75 mm out, and back again.

The U-Net sees every head the same way, whatever the scanner wrote: canonical axes (L, P, S),
isotropic 3.75 mm voxels, a 240 mm cube (an adult head is ~160 x 210 x 220 mm from vertex to
chin) placed on the head, and intensities scaled by robust percentiles inside the head so
that T1, T2, CT and PET all land in about [0, 1].

Placement: left-right and front-back on the centre of the head's bounding box, and the top of
the cube GRID_TOP_MARGIN_MM above the vertex, so that the face and ears (which lie in the
upper ~200 mm of a head) are always inside even when the scan runs down to the shoulders.

The grid's axes are the canonical volume's own array axes (permutation and flips of the
input's, no rotation), so the map between the two is a diagonal scale plus an offset and both
directions run through ``scipy.ndimage.affine_transform`` without building coordinate arrays.

Speed on a 1 mm head (13.6 M voxels): the way in (anti-alias Gaussian, then linear sampling)
is separable, so each axis gets one small (64 x n) matrix, Gaussian and interpolation in one,
and the volume meets them in three matrix products in its own axis order (no reoriented copy,
no smoothed full-size copy). Same operators as ``gaussian_filter`` + ``affine_transform``
(mode "nearest" for the smoothing, "constant" outside the volume for the sampling); the sums
run in float32 instead of float64, so the image differs by ~1e-6. The way back
(``labels_to_volume``) computes a class's interpolated probability only where it can win:
it can beat the background at a voxel only if it does so at one of the 8 grid nodes around
it (linear weights are non-negative), so outside the box of those nodes the label is the
one the full computation gives; the background itself is computed on the union of the
classes' boxes. Labels are identical but at exact probability ties (float32 rounding): on
five test heads, one voxel of 9 M changed class (the network saw an image within 3e-7).
The image statistics are the same numbers: the robust range gathers the same subsample
(indices first, then 1 M values), and the background median of integer data is counted
with ``bincount`` instead of sorting 8 M floats.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.head_mask import CT_AIR_HU, head_mask
from DeFacerLib.intensity import finite_only
from DeFacerLib.orientation import Reorientation, canonical_reorientation
from DeFacerLib.volume import Volume

GRID_SHAPE = (64, 64, 64)
GRID_SPACING_MM = 3.75
GRID_TOP_MARGIN_MM = 12.0  # air kept above the vertex
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0  # robust intensity range inside the head


@dataclass(frozen=True)
class GridMapping:
    """How one volume's array maps onto the network grid: canonical index = scale * grid + offset."""

    reorientation: Reorientation
    canonical_shape: tuple[int, int, int]
    canonical_spacing_mm: tuple[float, float, float]
    scale: tuple[float, float, float]  # canonical voxels per grid voxel, per axis
    offset: tuple[float, float, float]  # canonical index of grid voxel (0, 0, 0)
    grid_shape: tuple[int, int, int] = GRID_SHAPE

    def grid_to_canonical_index(self, grid_ijk: np.ndarray) -> np.ndarray:
        return np.asarray(grid_ijk, dtype=float) * np.asarray(self.scale) + np.asarray(self.offset)

    def canonical_to_grid_index(self, canonical_ijk: np.ndarray) -> np.ndarray:
        return (np.asarray(canonical_ijk, dtype=float) - np.asarray(self.offset)) / np.asarray(self.scale)

    def volume_to_grid(self, array: np.ndarray, *, order: int, cval: float = 0.0,
                       dtype=np.float32) -> np.ndarray:
        """An array on the ORIGINAL volume's grid -> the network grid (order 0 for labels)."""
        canonical = np.ascontiguousarray(self.reorientation.apply(array))
        if order > 0:
            canonical = _antialias(canonical.astype(np.float32), np.asarray(self.scale))
        out = ndi.affine_transform(canonical, np.asarray(self.scale), offset=np.asarray(self.offset),
                                   output_shape=self.grid_shape, order=order, mode="constant",
                                   cval=cval, output=dtype if order > 0 else canonical.dtype, prefilter=False)
        return out.astype(dtype, copy=False)

    def labels_to_volume(self, grid: np.ndarray) -> np.ndarray:
        """Grid labels (3D ints) or class probabilities (3D + channels last) -> uint8 labels on
        the original volume's array grid. Probabilities are interpolated linearly per class and
        then argmax-ed, which gives smoother borders than nearest-neighbour labels.

        The map is a per-axis scale and offset, so interpolation is separable: three small
        matrix products per class instead of a 3D resampling (a 1 mm head takes ~1 s, not ~10 s).
        """
        if grid.ndim == 3:
            inside = [self._axis_inside(axis) for axis in range(3)]
            outside = ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
            index = [np.clip(np.rint(self._axis_source(axis)), 0, self.grid_shape[axis] - 1).astype(np.intp)
                     for axis in range(3)]
            canonical = grid.astype(np.uint8)[np.ix_(*index)]
            canonical[outside] = 0
        else:
            canonical = self._interpolated_argmax(grid)
        return np.ascontiguousarray(self.reorientation.undo(canonical))

    def _interpolated_argmax(self, grid: np.ndarray) -> np.ndarray:
        """argmax over classes of the linearly interpolated probabilities, canonical frame;
        0 outside the grid. Each class is evaluated only in the box where it can win (see
        the module docstring); ties keep the lower class, as ``argmax`` does."""
        weights = [self._axis_weights(axis) for axis in range(3)]
        inside = [np.nonzero(self._axis_inside(axis))[0] for axis in range(3)]
        canonical = np.zeros(self.canonical_shape, dtype=np.uint8)
        if any(len(rows) == 0 for rows in inside):
            return canonical
        background = np.asarray(grid[..., 0], dtype=np.float32)
        boxes = {}
        for c in range(1, grid.shape[-1]):
            box = self._rows_touching(np.asarray(grid[..., c], dtype=np.float32) > background, weights, inside)
            if box is not None:
                boxes[c] = box
        if not boxes:
            return canonical
        union = tuple(slice(min(b[a].start for b in boxes.values()), max(b[a].stop for b in boxes.values()))
                      for a in range(3))
        best = _interpolate(background, weights, union)
        label = np.zeros(best.shape, dtype=np.uint8)
        for c, box in boxes.items():
            prob = _interpolate(np.asarray(grid[..., c], dtype=np.float32), weights, box)
            local = tuple(slice(b.start - u.start, b.stop - u.start) for b, u in zip(box, union))
            current = best[local]
            better = prob > current
            label[local][better] = c
            np.maximum(current, prob, out=current)
        canonical[union] = label
        return canonical

    @staticmethod
    def _rows_touching(nodes: np.ndarray, weights, inside) -> tuple[slice, slice, slice] | None:
        """Canonical index box (inside the grid) of the voxels whose interpolation reads a
        True node with a non-zero weight."""
        if not nodes.any():
            return None
        box = []
        for axis in range(3):
            present = nodes.any(axis=tuple(a for a in range(3) if a != axis))
            rows = inside[axis][(weights[axis][inside[axis]][:, present] > 0).any(axis=1)]
            if rows.size == 0:
                return None
            box.append(slice(int(rows.min()), int(rows.max()) + 1))
        return tuple(box)

    def _axis_source(self, axis: int) -> np.ndarray:
        """Grid coordinate of every canonical voxel along one axis."""
        return (np.arange(self.canonical_shape[axis]) - self.offset[axis]) / self.scale[axis]

    def _axis_inside(self, axis: int) -> np.ndarray:
        source = self._axis_source(axis)
        return (source > -0.5) & (source < self.grid_shape[axis] - 0.5)

    def _axis_weights(self, axis: int) -> np.ndarray:
        """(canonical n, grid n) linear-interpolation matrix along one axis (edge values extended)."""
        n = self.grid_shape[axis]
        source = np.clip(self._axis_source(axis), 0, n - 1)
        low = np.minimum(np.floor(source).astype(np.intp), n - 2)
        frac = (source - low).astype(np.float32)
        weights = np.zeros((source.size, n), dtype=np.float32)
        rows = np.arange(source.size)
        weights[rows, low] = 1.0 - frac
        weights[rows, low + 1] += frac
        return weights


def to_grid(volume: Volume, *, head: np.ndarray | None = None) -> tuple[np.ndarray, GridMapping]:
    """(float32 GRID_SHAPE image scaled to ~[0, 1], GridMapping) for a head volume.

    ``head`` is the boolean head mask on the volume's grid; computed when not given.
    """
    if head is None:
        head = head_mask(volume)
    reorientation = canonical_reorientation(volume)
    head_c = reorientation.apply(np.asarray(head, dtype=bool))  # a view: nothing copied
    spacing = np.asarray(volume.spacing_mm, dtype=float)[list(reorientation.permutation)]
    centre_mm = _grid_centre_mm(head_c, spacing)
    scale = GRID_SPACING_MM / spacing
    half = (np.asarray(GRID_SHAPE) - 1) / 2.0
    offset = centre_mm / spacing - half * scale
    mapping = GridMapping(reorientation, tuple(head_c.shape), tuple(spacing), tuple(scale), tuple(offset))

    reference = volume.reference_volume()
    array, values = reference.array, reference.physical()
    if volume.modality == "CT":  # a reconstruction's padding (-2048, -3024 HU) is air to the model too
        values = np.maximum(values, CT_AIR_HU)
    values_c = reorientation.apply(values)  # canonical order for the (sub-sampled) statistics
    low, high = _robust_range(values_c, head_c)
    outside = _median_outside(volume, array, values, np.asarray(head, dtype=bool))
    background = float(np.clip((outside - low) / (high - low), -0.5, 2.0)) if outside is not None else 0.0
    # NaN/inf voxels (outside a resampled field of view) are background: one NaN would spread
    # through the resampling's sums over the whole grid, and the model would see no face
    # (+/-inf too: clipping would make them the brightest tissue or the darkest air)
    not_finite = ~np.isfinite(values) if array.dtype.kind == "f" else None  # stored integers are always finite
    normalised = _normalised_in_place(values, low, high)
    if not_finite is not None:
        normalised[not_finite] = np.float32(background)
    return _sample(normalised, mapping, background), mapping


def _normalised_in_place(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``np.clip((values - low) / (high - low), -0.5, 2.0)`` in float32, computed in ``values``
    (to_grid's own float32 copy): the same numbers without two more copies of the volume
    (0.9 GB of a 0.5 mm head's peak)."""
    np.subtract(values, low, out=values)
    values /= high - low
    return np.clip(values, -0.5, 2.0, out=values)


def _median_outside(volume: Volume, stored: np.ndarray, values: np.ndarray, head: np.ndarray):
    """``np.percentile(values[~head], 50)`` (None when the head fills the volume). Integer data
    with a positive slope: counted with ``bincount`` in memory order, the one or two middle
    stored values converted as ``physical()`` does and interpolated by ``percentile`` itself
    (the scaling is monotonic, so the middle values are those of the stored integers)."""
    if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2 or not volume.slope > 0:
        outside = finite_only(values[~head])
        return np.percentile(outside, 50) if outside.size else None
    order = "F" if stored.flags.f_contiguous and not stored.flags.c_contiguous else "C"
    outside = stored.ravel(order=order)[~head.ravel(order=order)]
    if outside.size == 0:
        return None
    low = int(outside.min())
    cumulative = np.cumsum(_counts_from(outside, low, int(outside.max())))
    middle = (outside.size - 1) / 2  # percentile's virtual index of the median
    ranks = sorted({int(np.floor(middle)), int(np.ceil(middle))})
    picked = np.array([np.searchsorted(cumulative, rank, side="right") + low for rank in ranks])
    physical = picked.astype(stored.dtype).astype(np.float32)  # as Volume.physical()
    if volume.slope != 1.0 or volume.intercept != 0.0:
        physical = physical * np.float32(volume.slope) + np.float32(volume.intercept)
    return np.percentile(physical, 50)


def _counts_from(values: np.ndarray, low: int, high: int, chunk: int = 1 << 22) -> np.ndarray:
    """``np.bincount(values - low)`` for integers low..high, a chunk at a time: bincount takes
    int64 indices, so the whole volume's would cost 8 bytes a voxel (0.8 GB at 0.5 mm)."""
    counts = np.zeros(high - low + 1, dtype=np.intp)
    for start in range(0, values.size, chunk):
        counts += np.bincount(values[start:start + chunk].astype(np.intp) - low, minlength=counts.size)
    return counts


def _sample(normalised: np.ndarray, mapping: GridMapping, background: float) -> np.ndarray:
    """``affine_transform(_antialias(canonical), scale, offset, order=1, mode="constant",
    cval=background)`` as three matrix products on the volume's own axes."""
    operators, inside = [], []
    for axis in range(3):
        operator = _axis_sampling(mapping.canonical_shape[axis], mapping.scale[axis], mapping.offset[axis],
                                  mapping.grid_shape[axis])
        inside.append(operator.any(axis=1))
        if mapping.reorientation.flips[axis]:
            operator = operator[:, ::-1]
        operators.append(operator.astype(np.float32))
    # canonical axis c is original axis permutation[c]; contract in memory order (a reader's
    # Fortran-order array is contracted through its C-order transpose: no copy of the volume)
    canonical_of = [list(mapping.reorientation.permutation).index(axis) for axis in range(3)]
    axes = [0, 1, 2]
    if normalised.flags.f_contiguous and not normalised.flags.c_contiguous:
        normalised, axes = normalised.T, [2, 1, 0]
    out = np.tensordot(operators[canonical_of[axes[0]]], normalised, axes=(1, 0))  # (g, n1, n2)
    out = np.tensordot(out, operators[canonical_of[axes[1]]], axes=(1, 1))  # (g, n2, g)
    out = np.tensordot(out, operators[canonical_of[axes[2]]], axes=(1, 1))  # (g, g, g) on axes `axes`
    original = np.transpose(out, np.argsort(axes))  # original axis order
    image = np.ascontiguousarray(np.transpose(original, mapping.reorientation.permutation), dtype=np.float32)
    outside = ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
    image[outside] = np.float32(background)
    return image


def _axis_sampling(n: int, scale: float, offset: float, grid_n: int) -> np.ndarray:
    """(grid_n, n) float64 operator: anti-alias Gaussian ("nearest" edges) then linear
    interpolation at scale * g + offset; a row of zeros where the sample lies outside [0, n-1]
    (scipy's "constant" mode: the whole sample becomes cval)."""
    position = np.arange(grid_n, dtype=np.float64) * scale + offset
    low = np.floor(position)
    frac = position - low
    low = low.astype(np.intp)
    valid = (position >= 0) & (position <= n - 1)
    sampling = np.zeros((grid_n, n))
    rows = np.nonzero(valid)[0]
    sampling[rows, low[rows]] += 1.0 - frac[rows]
    upper = rows[low[rows] + 1 < n]
    sampling[upper, low[upper] + 1] += frac[upper]
    sigma = _antialias_sigma(np.asarray([scale]))[0]
    if sigma <= 0:
        return sampling
    radius = int(4.0 * sigma + 0.5)  # gaussian_filter's truncate=4.0
    taps = np.exp(-0.5 / (sigma * sigma) * np.arange(-radius, radius + 1) ** 2)
    taps /= taps.sum()
    smoothing = np.zeros((n, n))
    index = np.arange(n)
    for shift, weight in zip(range(-radius, radius + 1), taps):
        np.add.at(smoothing, (index, np.clip(index + shift, 0, n - 1)), weight)
    return sampling @ smoothing


def _interpolate(grid: np.ndarray, weights, box) -> np.ndarray:
    """Separable linear interpolation of one grid channel onto a canonical index box."""
    out = np.tensordot(weights[0][box[0]], grid, axes=(1, 0))  # (n0, g1, g2)
    out = np.tensordot(out, weights[1][box[1]], axes=(1, 1))  # (n0, g2, n1)
    return np.tensordot(out, weights[2][box[2]], axes=(1, 1))  # (n0, n1, n2)


def _grid_centre_mm(head_c: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Centre of the cube in canonical-index millimetres (index * spacing)."""
    fov_mm = np.asarray(GRID_SHAPE) * GRID_SPACING_MM
    superior = np.nonzero(head_c.any(axis=(0, 1)))[0]
    top_mm = (superior.max() + 0.5) * spacing[2]
    bottom_mm = top_mm - fov_mm[2] + GRID_TOP_MARGIN_MM
    lowest = max(0, int(np.floor(bottom_mm / spacing[2])))
    upper = head_c[:, :, lowest:]  # only the part of the head that can be in the cube
    centre = np.empty(3)
    for axis in (0, 1):
        present = np.nonzero(upper.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        centre[axis] = (present.min() + present.max()) / 2.0 * spacing[axis]
    centre[2] = top_mm + GRID_TOP_MARGIN_MM - fov_mm[2] / 2.0
    return centre


def _robust_range(values: np.ndarray, head: np.ndarray) -> tuple[float, float]:
    index = np.flatnonzero(head)  # C order of the (canonical) view, as values[head] would run
    if index.size > 2_000_000:  # percentiles of a subsample are as good and 10x faster
        index = index[:: index.size // 1_000_000]
    inside = finite_only(values[np.unravel_index(index, head.shape)])
    if inside.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(inside, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if not high > low:
        high = low + 1.0
    return float(low), float(high)


def _antialias_sigma(scale: np.ndarray) -> np.ndarray:
    """Gaussian sigma (in input voxels) before downsampling by ``scale`` (> 1 means coarser)."""
    return np.where(scale > 1.25, 0.42 * np.sqrt(np.maximum(scale ** 2 - 1.0, 0.0)), 0.0)


def _antialias(array: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Gaussian pre-filter before downsampling by ``scale`` (> 1 means coarser), per axis."""
    sigma = _antialias_sigma(scale)
    if not np.any(sigma > 0):
        return array
    return ndi.gaussian_filter(array, sigma=sigma, mode="nearest")
