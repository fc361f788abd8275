"""Depth below the skin and other distances in mm, on any voxel size.

Removal is limited to a shell under the skin, so "depth" must be measured in millimetres
whatever the voxel size (anisotropic volumes such as 1x1x2 mm T2 included): an exact
Euclidean distance transform with the volume's spacing as sampling.

Speed: a distance transform costs about 60 ns per voxel, and a 1 mm head has 13.6 M voxels,
so the callers ask only for what decides something, where it decides it:

- ``inside_depth_mm(head, spacing, box=, exact_to_mm=)``: the depth inside one box, computed
  on that box grown by ``exact_to_mm`` (+ 1 voxel). Every value up to ``exact_to_mm`` equals
  the full-volume transform's, because the nearest outside voxel of such a voxel lies inside
  the grown box; a larger value may be too large, but it stays larger than ``exact_to_mm``,
  so any threshold at or below it gives the same answer as on the full volume.
- ``depth_at_most(head, spacing, limit, box=)``: "no deeper than limit" on a box, the one
  question removal (25 mm) and the frontal guard (10 mm) ask, through SimpleITK's Maurer
  transform on the grown box (float32, ~2.5x less CPU than scipy's); depths within 1e-3 mm
  of the limit are measured again in float64 over the few offsets of that length, so the
  answer is scipy's to the last tie (np.float32 rounding on request, as skin_depth_mm has);
  ``depths_at_most`` answers it for several limits from one transform (the removal's cut and
  its seal).
- ``dilate_mm`` / ``erode_mm`` (and ``dilate_mm_on_box``, the dilation seen on one box): a Euclidean ball of a few voxels as runs along one axis (one
  OR of shifted arrays per run) instead of a distance transform: the ball's offsets are
  those whose distance, computed with the distance transform's own float64 formula, is within
  the radius, so the result is identical to thresholding the transform. A wider ball (from
  ``MAURER_FROM_RUNS`` runs, counted without laying the ball out) is one Maurer transform.
- ``bounding_box``: a few reductions instead of ``find_objects`` (~50x faster), so that
  labelling and transforms run on the masks' own boxes.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi

Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # inclusive index min, max


def skin_depth_mm(head: np.ndarray, spacing_mm) -> np.ndarray:
    """float32 map: inside the head, the distance to the nearest voxel outside it (> 0);
    outside, minus the distance to the nearest head voxel (< 0).

    A voxel on the skin therefore reads one voxel spacing (about), not 0; the volume's
    edge is not skin (a neck cut off at the border stays deep). An empty head gives -inf
    everywhere, a head filling the whole volume +inf.
    """
    head = np.asarray(head, dtype=bool)
    spacing = np.asarray(spacing_mm, dtype=float).reshape(3)
    if not head.any():
        return np.full(head.shape, -np.inf, dtype=np.float32)
    if head.all():
        return np.full(head.shape, np.inf, dtype=np.float32)
    inside = ndi.distance_transform_edt(head, sampling=spacing).astype(np.float32)
    outside = ndi.distance_transform_edt(~head, sampling=spacing).astype(np.float32)
    return inside - outside


def inside_depth_mm(head: np.ndarray, spacing_mm, *, box: Box | None = None,
                    exact_to_mm: float = np.inf) -> np.ndarray:
    """float32 depth below the skin on ``box`` (whole volume if None): for a head voxel the
    distance to the nearest voxel outside the head, 0 outside the head.

    Values up to ``exact_to_mm`` are those of ``skin_depth_mm``; larger ones are only known
    to be larger (see the module docstring). A head voxel with no outside voxel within the
    array reads +inf.
    """
    head = np.asarray(head, dtype=bool)
    spacing = np.asarray(spacing_mm, dtype=float).reshape(3)
    domain = _Domain(head, spacing, box, exact_to_mm)
    depth = np.zeros(domain.box_shape, dtype=np.float32)
    if domain.empty:
        return depth
    grown = domain.grown(head)
    if grown.all():
        depth[domain.target] = np.inf
    else:
        depth[domain.target] = ndi.distance_transform_edt(grown, sampling=spacing)[domain.part]
    return depth


def depth_at_most(head: np.ndarray, spacing_mm, limit_mm: float, *, box: Box | None = None,
                  precision=np.float64) -> np.ndarray:
    """Boolean on ``box``: head voxels whose skin depth is <= ``limit_mm`` (False outside the
    head), exactly as thresholding scipy's float64 distance transform decides, or, with
    ``precision=np.float32``, as thresholding ``skin_depth_mm``'s float32 map decides.

    The distance transform is SimpleITK's (Maurer, float32 squared distances, about 2x faster
    than scipy's and without its index arrays). float32 rounds: a depth within TIE_MM of the
    limit (on a 1 mm grid, every voxel exactly 25 mm deep; with 0.99999736 mm voxels scipy's
    float64 puts some of them just above 25) is measured again with scipy's own float64
    arithmetic over the offsets whose length lies within 3 TIE_MM of the limit.
    """
    return depths_at_most(head, spacing_mm, (limit_mm,), box=box, precision=precision)[0]


def depths_at_most(head: np.ndarray, spacing_mm, limits_mm, *, box: Box | None = None,
                   precision=np.float64) -> list[np.ndarray]:
    """``depth_at_most`` for several limits from one distance transform, of the box grown by
    the largest limit (exact for each: a larger domain only adds outside voxels farther away
    than the smaller limits can reach)."""
    head = np.asarray(head, dtype=bool)
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    deepest = max(limits_mm)
    domain = _Domain(head, spacing, box, deepest + 4 * TIE_MM * max(1.0, deepest / 25.0))
    results = [np.zeros(domain.box_shape, dtype=bool) for _ in limits_mm]
    if domain.empty:
        return results
    grown = domain.grown(head)
    if grown.all():
        return results  # no outside voxel within reach: every head voxel is deeper
    squared, image = _squared_depth_mm2(grown, spacing)
    inside = grown[domain.part]
    squared_part = squared[domain.part]
    offset = np.array([p.start for p in domain.part])
    for result, limit_mm in zip(results, limits_mm):
        tie_mm = TIE_MM * max(1.0, limit_mm / 25.0)
        shallow = inside & (squared_part <= (limit_mm - tie_mm) ** 2)
        band = inside & (squared_part > (limit_mm - tie_mm) ** 2) & (squared_part <= (limit_mm + tie_mm) ** 2)
        if band.any():
            points = np.argwhere(band)
            nearest = _nearest_outside_mm(grown, points + offset, spacing, limit_mm, 3.0 * tie_mm)
            shallow[tuple(points[nearest.astype(precision) <= limit_mm].T)] = True
        result[domain.target] = shallow
    del squared, image
    return results


TIE_MM = 1e-3  # float32 squared distances near 25 mm are good to ~1e-5 mm; 100x margin


def _squared_depth_mm2(head: np.ndarray, spacing: np.ndarray):
    """Squared distance (mm^2) from each head voxel to the nearest non-head voxel, 0 outside;
    the array is a view into the returned SimpleITK image (keep both alive together)."""
    import SimpleITK as sitk

    outside = sitk.GetImageFromArray((~head).view(np.uint8))
    outside.SetSpacing(tuple(float(v) for v in spacing[::-1]))  # ITK's x is the last numpy axis
    maurer = sitk.SignedMaurerDistanceMapImageFilter()
    maurer.SetSquaredDistance(True)
    maurer.SetUseImageSpacing(True)
    maurer.SetInsideIsPositive(False)  # head voxels lie outside the "outside" object: positive
    image = maurer.Execute(outside)
    return sitk.GetArrayViewFromImage(image), image


def _nearest_outside_mm(head: np.ndarray, points: np.ndarray, spacing: np.ndarray, around_mm: float,
                        shell_mm: float) -> np.ndarray:
    """For voxels whose nearest non-head voxel lies within shell_mm of around_mm: that distance,
    over the offsets of such lengths, computed as scipy's distance_transform_edt does (float64)."""
    extent = np.floor((around_mm + shell_mm) / spacing + 1e-9).astype(int)
    grids = np.meshgrid(*(np.arange(-e, e + 1) for e in extent), indexing="ij")
    scaled = [g.astype(np.float64) * spacing[a] for a, g in enumerate(grids)]
    length = np.sqrt((scaled[0] * scaled[0] + scaled[1] * scaled[1]) + scaled[2] * scaled[2])
    in_shell = np.abs(length - around_mm) <= shell_mm
    shell, lengths = np.argwhere(in_shell) - extent, length[in_shell]
    nearest = np.full(len(points), np.inf)
    upper = np.asarray(head.shape)
    for delta, delta_mm in zip(shell, lengths):
        moved = points + delta
        valid = np.all((moved >= 0) & (moved < upper), axis=1)  # beyond the array is not "outside"
        index = moved[valid]
        outside = ~head[index[:, 0], index[:, 1], index[:, 2]]
        rows = np.flatnonzero(valid)[outside]
        nearest[rows] = np.minimum(nearest[rows], delta_mm)
    return nearest


class _Domain:
    """Where a depth on ``box`` must be computed: the box grown by the reach of ``exact_to_mm``,
    cut to the head's bounding box plus one voxel (the nearest outside voxel of a head voxel
    is always within that: clamping a farther one onto it only brings it closer)."""

    def __init__(self, head: np.ndarray, spacing: np.ndarray, box: Box | None, exact_to_mm: float):
        shape = np.asarray(head.shape)
        lo, hi = (np.zeros(3, int), shape - 1) if box is None else (np.asarray(box[0]), np.asarray(box[1]))
        self.box_shape = tuple(int(v) for v in hi - lo + 1)
        self.empty = True
        found = bounding_box(head)
        if found is None:
            return
        reach = np.ceil(exact_to_mm / spacing).astype(int) + 1 if np.isfinite(exact_to_mm) else shape
        grown_lo = np.maximum(np.maximum(lo - reach, np.array([s.start for s in found]) - 1), 0)
        grown_hi = np.minimum(np.minimum(hi + reach, np.array([s.stop for s in found])), shape - 1)
        part_lo, part_hi = np.maximum(lo, grown_lo), np.minimum(hi, grown_hi)
        if np.any(part_lo > part_hi):
            return  # the box holds no head voxel
        self.empty = False
        self.slices = tuple(slice(int(a), int(b) + 1) for a, b in zip(grown_lo, grown_hi))
        self.part = tuple(slice(int(a - g), int(b - g) + 1) for a, b, g in zip(part_lo, part_hi, grown_lo))
        self.target = tuple(slice(int(a - o), int(b - o) + 1) for a, b, o in zip(part_lo, part_hi, lo))

    def grown(self, head: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(head[self.slices])


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Slices of the smallest box holding every True voxel of a 3D mask (None if empty);
    a few reductions instead of ``find_objects``' full labelled scan (~50x faster)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.flags.f_contiguous and not mask.flags.c_contiguous:  # reduce along memory order, not across it
        box = bounding_box(mask.T)
        return None if box is None else box[::-1]
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if rows.size == 0:
        return None
    plane = mask[rows[0]:rows[-1] + 1].any(axis=0)
    cols = np.flatnonzero(plane.any(axis=1))
    deps = np.flatnonzero(plane.any(axis=0))
    return (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1),
            slice(int(deps[0]), int(deps[-1]) + 1))


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    """Voxels within ``radius_mm`` of ``mask`` (itself included): exactly
    ``distance_transform_edt(~mask, sampling) <= radius_mm``; outside the array is empty."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    if ball_run_count(radius_mm, spacing) >= MAURER_FROM_RUNS:
        # the same set from one distance transform: the outside voxels within the radius
        return mask | depth_at_most(~mask, spacing, radius_mm)
    return _ball_union(mask, radius_mm, spacing)


# A ball of this many runs or more is cheaper as a Maurer distance transform (measured on 1 mm
# and 2 mm heads: 75 runs 1.5-2x faster that way, 27 runs 1.3x slower); both give the same set.
MAURER_FROM_RUNS = 50


def ball_run_count(radius_mm: float, spacing: np.ndarray) -> int:
    """About how many runs ``ball_runs`` would give (a disc's lattice points, one per row of
    the other two axes), counted row by row: the choice of method must not lay out the ball,
    which for a 1000 mm radius is 8e9 offsets (the answer only picks the faster method)."""
    spacing = np.asarray(spacing, dtype=np.float64).reshape(3)
    others = [a for a in range(3) if a != int(np.argmin(spacing))]
    rows_mm = np.arange(-np.floor(radius_mm / spacing[others[0]] + 1e-9),
                        np.floor(radius_mm / spacing[others[0]] + 1e-9) + 1) * spacing[others[0]]
    half = np.floor(np.sqrt(np.maximum(radius_mm * radius_mm - rows_mm * rows_mm, 0.0))
                    / spacing[others[1]] + 1e-9)
    return int(np.sum(2 * half + 1))


def dilate_mm_on_box(mask: np.ndarray, radius_mm: float, spacing_mm, box: Box) -> np.ndarray:
    """``dilate_mm(mask)`` on the inclusive index ``box`` only: the dilation of the box grown
    by the radius (every voxel that can reach into the box), cut back to the box."""
    if radius_mm <= 0:
        return mask[tuple(slice(int(a), int(b) + 1) for a, b in zip(*box))].copy()
    grown, inner, spacing = _grown_box(mask, radius_mm, spacing_mm, box)
    return dilate_mm(grown, radius_mm, spacing)[inner]


def dilations_mm_on_box(mask: np.ndarray, radii_mm, spacing_mm, box: Box) -> list[np.ndarray]:
    """``dilate_mm_on_box`` for several radii (> 0) from one distance transform of the box grown
    by the largest: the same sets (each exact on a larger domain), one transform instead of one each."""
    grown, inner, spacing = _grown_box(mask, max(radii_mm), spacing_mm, box)
    grown = np.asarray(grown, dtype=bool)
    if not grown.any():
        return [np.zeros(grown[inner].shape, dtype=bool) for _ in radii_mm]
    return [(grown | near)[inner] for near in depths_at_most(~grown, spacing, tuple(radii_mm))]


def _grown_box(mask: np.ndarray, radius_mm: float, spacing_mm, box: Box):
    """(``mask`` on ``box`` grown by the radius and a voxel, the slices of ``box`` in it, spacing)."""
    lo, hi = np.asarray(box[0]), np.asarray(box[1])
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    reach = np.ceil(radius_mm / spacing).astype(int) + 1
    grown_lo = np.maximum(lo - reach, 0)
    grown_hi = np.minimum(hi + reach, np.asarray(mask.shape) - 1)
    grown = mask[tuple(slice(int(a), int(b) + 1) for a, b in zip(grown_lo, grown_hi))]
    inner = tuple(slice(int(a - g), int(b - g) + 1) for a, b, g in zip(lo, hi, grown_lo))
    return grown, inner, spacing


def erode_mm(mask: np.ndarray, radius_mm: float, spacing_mm) -> np.ndarray:
    """Voxels farther than ``radius_mm`` from every voxel outside ``mask``: exactly
    ``distance_transform_edt(mask, sampling) > radius_mm``, beyond the array counting as
    inside (as for the transform). A mask without outside voxels stays whole."""
    mask = np.asarray(mask, dtype=bool)
    if mask.all():
        return mask.copy()
    return ~dilate_mm(~mask, radius_mm, spacing_mm)


def ball_runs(radius_mm: float, spacing: np.ndarray) -> tuple[int, dict[tuple[int, int], int]]:
    """The ball {offset: |offset * spacing| <= radius_mm} as runs along its longest axis:
    (run axis, {(offset on the other two axes): half-length of the run in voxels})."""
    axis = int(np.argmin(spacing))
    others = [a for a in range(3) if a != axis]
    extent = np.floor(radius_mm / spacing + 1e-9).astype(int) + 1
    grids = np.meshgrid(*(np.arange(-e, e + 1) for e in extent), indexing="ij")
    scaled = [g.astype(np.float64) * spacing[a] for a, g in enumerate(grids)]
    # The distance transform's own arithmetic: squares of scaled offsets summed over axes in order.
    distance = np.sqrt((scaled[0] * scaled[0] + scaled[1] * scaled[1]) + scaled[2] * scaled[2])
    inside = distance <= radius_mm
    runs: dict[tuple[int, int], int] = {}
    for index in zip(*np.nonzero(inside)):
        key = (int(grids[others[0]][index]), int(grids[others[1]][index]))
        runs[key] = max(runs.get(key, 0), abs(int(grids[axis][index])))
    return axis, runs


def _ball_union(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    axis, runs = ball_runs(radius_mm, spacing)
    moved = np.moveaxis(mask, axis, 2)  # runs along the last axis: contiguous shifts
    along = {0: moved}
    for half in range(1, max(runs.values()) + 1):
        grown = along[half - 1].copy()
        grown[:, :, half:] |= moved[:, :, :-half]
        grown[:, :, :-half] |= moved[:, :, half:]
        along[half] = grown
    out = np.zeros(moved.shape, dtype=bool)
    n0, n1 = moved.shape[:2]
    for (d0, d1), half in runs.items():
        if abs(d0) >= n0 or abs(d1) >= n1:
            continue
        source = along[half]
        out[max(d0, 0):n0 + min(d0, 0), max(d1, 0):n1 + min(d1, 0)] |= \
            source[max(-d0, 0):n0 + min(-d0, 0), max(-d1, 0):n1 + min(-d1, 0)]
    return np.moveaxis(out, 2, axis)


def box_corners(lo, hi) -> np.ndarray:
    """The 8 corners (8, 3) of the box lo..hi, as floats (index or world coordinates alike)."""
    return np.array(list(itertools.product(*zip(np.asarray(lo, float), np.asarray(hi, float)))))


def box_bounds(box) -> tuple[list[int], list[int]]:
    """(lo, hi), the inclusive index bounds of a box of slices (local_box's inverse at crop 0)."""
    return [int(b.start) for b in box], [int(b.stop) - 1 for b in box]


def local_box(lo, hi, crop_lo) -> tuple[slice, ...]:
    """Slices of the inclusive box lo..hi inside the crop that starts at crop_lo."""
    return tuple(slice(int(a - c), int(b - c) + 1) for a, b, c in zip(lo, hi, crop_lo))
