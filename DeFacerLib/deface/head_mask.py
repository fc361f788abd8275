"""The head: every voxel of the patient, with air, noise, ghosts and the scanner bed left out.

The mask is the reference for "how deep under the skin" (skin depth) and for "is there a
head at all". It is computed in the volume's own array frame and works for any modality
because it only assumes a dark background and a bright, large, connected object:

1. smooth lightly and threshold between background and tissue (Otsu on the robust range,
   then pulled towards the background so that dark skin and partial-volume edges stay in);
2. refuse images without a clear background/tissue split (pure noise);
3. open with a ball in mm (cuts the thin bridges to ringing/motion ghosts in front of the
   face, to the bed and to speckle) and keep the largest component as the head's core;
4. give back the detail the opening shaved off (pinnae, nose tip) within a few mm of the core;
5. fill holes in 3D and then slice by slice along each axis, after padding: a neck cut off at
   the volume's edge opens the airway and sinuses to the border, so a 3D fill alone would
   leave them out.

Large volumes (finer than ~1.5 mm) are processed on a block-averaged ~2 mm grid and the
result is refined against the full-resolution threshold: the morphology costs a few
distance transforms and 1 mm of boundary precision is irrelevant at the depths we remove.

Speed (same mask, voxel for voxel, as the distance-transform formulation): the openings and
the restore are ball dilations/erosions run as shifted ORs (skin_depth.dilate_mm/erode_mm,
identical to thresholding the transform), and hole filling labels the background once and
keeps what is connected to the border (what binary_fill_holes computes by repeated
dilation). The full-resolution smoothing is computed only on the bounding box of the
uncertain band between the coarse mask's erosion and dilation (plus the kernel's reach).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.skin_depth import bounding_box, dilate_mm, erode_mm
from DeFacerLib.errors import NoHeadFound
from DeFacerLib.intensity import otsu_threshold, reference_physical
from DeFacerLib.volume import Volume

WORK_SPACING_MM = 2.0  # grid for the morphology; finer volumes are block-averaged to it
OPEN_RADIUS_MM = 4.0  # ghosts/bed touch the head through bridges thinner than ~8 mm
RESTORE_MM = 8.0  # detail within this distance of the opened core is given back
MIN_CONTRAST = 5.0  # (tissue mean - background mean) / background sd; pure noise gives < 3
MIN_HEAD_FRACTION = 0.01  # a head smaller than 1 % of the field of view is "no head"
# CT: nothing is darker than air. A reconstruction pads outside its circular field of view with
# -2048 or -3024 HU; left in, Otsu split that padding (22 % of a head CT's voxels) from all else,
# the "head" was the whole circle, air included, and the face went unfound (exit 3).
CT_AIR_HU = -1024.0


def head_mask(volume: Volume) -> np.ndarray:
    """Boolean head mask in ``volume``'s array frame (of its reference frame when 4D: Volume.reference_array).

    Raises NoHeadFound (an InputError) when no head can be found (no clear foreground, or too small).
    """
    spacing = np.asarray(volume.spacing_mm, dtype=float)
    name = _name(volume)

    factors = tuple(int(max(1, round(WORK_SPACING_MM / s))) if s < 0.75 * WORK_SPACING_MM else 1 for s in spacing)
    values = _reference_stored(volume, factors) if any(f > 1 for f in factors) else None
    if values is None:
        values = reference_physical(volume)
    if volume.modality == "CT" and values.min() < CT_AIR_HU:  # stored values here are the physical ones
        values = np.maximum(values, np.asarray(CT_AIR_HU).astype(values.dtype))
    coarse = _block_mean(values, factors) if any(f > 1 for f in factors) else values
    coarse_spacing = spacing * np.asarray(factors)

    smooth = ndi.gaussian_filter(coarse, sigma=0.7, mode="nearest")
    threshold = _tissue_threshold(smooth, name)
    raw = smooth > threshold

    core = _erode(raw, OPEN_RADIUS_MM, coarse_spacing)
    core = _dilate(core, OPEN_RADIUS_MM, coarse_spacing)
    core = largest_component(core)
    if core is None or _fraction(core) < MIN_HEAD_FRACTION:
        raise NoHeadFound(f"{name}: no head found (no large bright object against a dark background); "
                         "check that the file is a head scan")
    mask = raw & _dilate(core, RESTORE_MM, coarse_spacing)
    mask = largest_component(mask | core)
    mask = _fill_holes_with_border(mask)

    if coarse is not values:
        mask = _refine_to_full(mask, factors, values.shape, values, threshold)
    if _fraction(mask) < MIN_HEAD_FRACTION:
        raise NoHeadFound(f"{name}: no head found (the head would occupy {100 * _fraction(mask):.2f} % of the volume); "
                         "check that the file is a head scan")
    return mask


# ---- steps --------------------------------------------------------------------------------

def _reference_stored(volume: Volume, factors: tuple[int, ...]) -> np.ndarray | None:
    """The stored integers themselves when they are the physical values (slope 1, intercept 0)
    and float32 holds every block sum exactly: the block means and the full-resolution
    smoothing (float32 output) then equal those of the float32 copy, without making it."""
    if volume.slope != 1.0 or volume.intercept != 0.0 or volume.array.dtype.kind not in "iu":
        return None
    array = volume.reference_array()
    if array.dtype.kind not in "iu":  # a 4D PET's mean over frames
        return None
    largest = max(abs(int(np.iinfo(array.dtype).min)), int(np.iinfo(array.dtype).max))
    if largest * int(np.prod(factors)) >= 2 ** 24:
        return None
    return array


def _fraction(mask: np.ndarray) -> float:
    return np.count_nonzero(mask) / mask.size


def _tissue_threshold(values: np.ndarray, name: str) -> float:
    """A threshold a few noise sd above the background, kept between Otsu's and the background.

    Otsu lands between the background and the *average* tissue, so dark tissue at the
    surface (thin skin, partial-volume edges) falls below it. The background level and its
    noise are measured robustly (median and MAD of the class below Otsu: dark tissue such as
    skull and CSF, and ghosts, would inflate a plain sd); the threshold is 6 noise sd above
    the background, but between 10 % and 50 % of the way from the background to Otsu's.
    """
    sample = values.ravel()[:: max(1, values.size // 2_000_000)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if not hi > lo:
        raise NoHeadFound(f"{name}: no head found (the image is uniform); check that the file is a head scan")
    clipped = np.clip(sample, lo, hi)
    otsu = otsu_threshold(clipped)
    background = clipped[clipped <= otsu]
    tissue = clipped[clipped > otsu]
    bg_level = float(np.median(background))
    bg_sd = max(1.4826 * float(np.median(np.abs(background - bg_level))), 1e-3 * float(hi - lo))
    contrast = (float(tissue.mean()) - bg_level) / bg_sd
    if contrast < MIN_CONTRAST:
        raise NoHeadFound(f"{name}: no head found (no contrast between background and tissue, "
                         f"{contrast:.1f} noise sd); check that the file is a head scan")
    span = otsu - bg_level
    return float(np.clip(bg_level + 6.0 * bg_sd, bg_level + 0.1 * span, bg_level + 0.5 * span))



def _erode(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    return erode_mm(mask, radius_mm, spacing)


def _dilate(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    return dilate_mm(mask, radius_mm, spacing)


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    labels, count = ndi.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_holes_with_border(mask: np.ndarray) -> np.ndarray:
    """3D hole filling, then 2D filling of every slice along each axis.

    The first and last slices along an axis (the neck cut) are filled as 2D images too
    instead of counting as border: a slice's border is only its own in-plane edge.
    """
    filled = fill_holes(mask)
    for axis in range(3):
        structure = np.zeros((3, 3, 3), bool)
        index = [slice(None)] * 3
        index[axis] = 1
        structure[tuple(index)] = ndi.generate_binary_structure(2, 1)
        filled = fill_holes(filled, structure)
    return filled


def fill_holes(mask: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
    """``ndi.binary_fill_holes(mask, structure)`` in one labelling pass: background pieces
    (connected through ``structure``, default 6-neighbours) that no structure offset links
    to beyond the array are holes. Only the mask's bounding box plus one voxel is labelled:
    the background outside the box reaches the border along the axis it lies out on."""
    if structure is None:
        structure = ndi.generate_binary_structure(mask.ndim, 1)
    if mask.ndim == 3:
        box = bounding_box(mask)
        if box is None:
            return mask.copy()
        grown = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, mask.shape))
        if any(g.stop - g.start < n for g, n in zip(grown, mask.shape)):
            filled = mask.copy()
            filled[grown] = fill_holes(np.ascontiguousarray(mask[grown]), structure)
            return filled
    labels, count = ndi.label(~mask, structure=structure)
    if count == 0:
        return mask.copy()
    touching = np.zeros(count + 1, dtype=bool)
    for axis in range(mask.ndim):
        if not np.take(structure, [0, 2], axis=axis).any():
            continue  # no neighbour along this axis: its end slices are not border
        touching[np.take(labels, 0, axis=axis)] = True
        touching[np.take(labels, -1, axis=axis)] = True
    touching[0] = True  # the mask itself
    return ~touching[labels] | mask


def _block_mean(values: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Mean of each block of ``factors`` voxels (float32); the last partial block along an
    axis repeats the edge voxel."""
    if values.dtype.kind in "iu":
        # Integer sums are exact (see _reference_stored): add the block's slices in int32 and
        # divide once, as the float32 mean does, ten times faster than a 6-axis reduction.
        total = values
        for axis, f in enumerate(factors):
            total = _sum_of_slices(total, axis, f)
        return total.astype(np.float32) / np.float32(np.prod(factors))
    shape = [int(np.ceil(n / f)) for n, f in zip(values.shape, factors)]
    padding = [(0, s * f - n) for s, f, n in zip(shape, factors, values.shape)]
    padded = np.pad(values, padding, mode="edge") if any(p[1] for p in padding) else values
    blocks = padded.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _sum_of_slices(values: np.ndarray, axis: int, factor: int) -> np.ndarray:
    if factor == 1:
        return values
    n = values.shape[axis]
    count = -(-n // factor)
    total = None
    for k in range(factor):
        index = np.minimum(np.arange(k, count * factor, factor), n - 1)
        part = np.take(values, index, axis=axis) if index[-1] != k + (count - 1) * factor else \
            values[(slice(None),) * axis + (slice(k, None, factor),)]
        total = part.astype(np.int32) if total is None else np.add(total, part, dtype=np.int32)
    return total


def _upsample(mask: np.ndarray, factors: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    out = mask
    for axis in (2, 1, 0):  # innermost first: element repeats, then row and plane copies
        if factors[axis] > 1:
            out = np.repeat(out, factors[axis], axis=axis)
    return out[: shape[0], : shape[1], : shape[2]]


def _refine_to_full(mask: np.ndarray, factors, shape, values: np.ndarray, threshold: float) -> np.ndarray:
    """Coarse mask -> full grid: the sure interior, plus boundary voxels above the threshold."""
    inner_coarse = ndi.binary_erosion(mask)
    band_coarse = ndi.binary_dilation(mask) & ~inner_coarse
    candidates = _upsample(band_coarse, factors, shape)  # = dilation's blocks minus erosion's
    found = bounding_box(band_coarse)
    if found is not None:
        # The smoothed value decides only on the band; a 7-tap kernel (sigma 0.7, truncate 4)
        # reads 3 voxels either side, so the box grown by 3 gives the same values inside it.
        reach = 3
        box = tuple(slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(found, factors, shape))
        grown = tuple(slice(max(b.start - reach, 0), min(b.stop + reach, n)) for b, n in zip(box, shape))
        inner_box = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown))
        smooth = ndi.gaussian_filter(values[grown], sigma=0.7, mode="nearest", output=np.float32)[inner_box]
        candidates[box] &= smooth > threshold
    return fill_holes(_upsample(inner_coarse, factors, shape) | candidates)


def _name(volume: Volume) -> str:
    if volume.source is not None and volume.source.path:
        return str(volume.source.path)
    return "volume"


# A 4D volume's head motion is measured around the features to remove, this far beyond them
# (the brain next to the cuts moves with the skin there; the neck at the field of view's edge
# changes from frame to frame more than the head moves).
MOTION_REACH_MM = 15.0


def frames_motion_mm(volume: Volume, head: np.ndarray, features: np.ndarray) -> float:
    """How far the head's surface within MOTION_REACH_MM of ``features`` lies, in any frame of a
    4D volume, from the reference frame's (``head``; Volume.reference_array), in mm; 0 for one
    frame or no features.

    The head and the brain are found on the reference frame and the same cut is made in every frame,
    so a head that moves between frames (an fMRI run: a roll with a sideways and upward shift
    overwrote 22 brain voxels in 12 of 300 frames) needs the protect margin grown by this much
    (pipeline.deface_volume). An upper bound: the mask's own noise counts too."""
    box = bounding_box(features)
    if volume.array.ndim != 4 or volume.array.shape[3] < 2 or box is None:
        return 0.0
    spacing = np.asarray(volume.spacing_mm, dtype=float)
    reach = np.ceil(MOTION_REACH_MM / spacing).astype(int)
    crop = tuple(slice(max(0, s.start - r), s.stop + r) for s, r in zip(box, reach))
    first = head[crop]
    to_head = ndi.distance_transform_edt(~first, sampling=spacing)  # outside: how far from the head
    to_air = ndi.distance_transform_edt(first, sampling=spacing)  # inside: how far from its surface
    distance = np.where(first, to_air, to_head)
    worst = 0.0
    for frame in range(volume.array.shape[3]):  # frame 0 too: a PET's reference is the frames' mean
        try:
            moved = head_mask(volume.with_array(volume.array[..., frame]))[crop] ^ first
        except NoHeadFound:  # a blank frame: nothing in it to protect
            continue
        if moved.any():
            worst = max(worst, float(distance[moved].max()))
    return worst
