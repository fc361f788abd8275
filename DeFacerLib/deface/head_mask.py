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
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.errors import InputError
from DeFacerLib.intensity import otsu_threshold
from DeFacerLib.volume import Volume

WORK_SPACING_MM = 2.0  # grid for the morphology; finer volumes are block-averaged to it
OPEN_RADIUS_MM = 4.0  # ghosts/bed touch the head through bridges thinner than ~8 mm
RESTORE_MM = 8.0  # detail within this distance of the opened core is given back
MIN_CONTRAST = 5.0  # (tissue mean - background mean) / background sd; pure noise gives < 3
MIN_HEAD_FRACTION = 0.01  # a head smaller than 1 % of the field of view is "no head"


def head_mask(volume: Volume) -> np.ndarray:
    """Boolean head mask in ``volume``'s array frame (first frame of a 4D volume).

    Raises InputError when no head can be found (no clear foreground, or too small).
    """
    values = _first_frame_physical(volume)
    spacing = np.asarray(volume.spacing_mm, dtype=float)
    name = _name(volume)

    factors = tuple(int(max(1, round(WORK_SPACING_MM / s))) if s < 0.75 * WORK_SPACING_MM else 1 for s in spacing)
    coarse = _block_mean(values, factors) if any(f > 1 for f in factors) else values
    coarse_spacing = spacing * np.asarray(factors)

    smooth = ndi.gaussian_filter(coarse, sigma=0.7, mode="nearest")
    threshold = _tissue_threshold(smooth, name)
    raw = smooth > threshold

    core = _erode(raw, OPEN_RADIUS_MM, coarse_spacing)
    core = _dilate(core, OPEN_RADIUS_MM, coarse_spacing)
    core = _largest_component(core)
    if core is None or core.mean() < MIN_HEAD_FRACTION:
        raise InputError(f"{name}: no head found (no large bright object against a dark background); "
                         "check that the file is a head scan")
    mask = raw & _dilate(core, RESTORE_MM, coarse_spacing)
    mask = _largest_component(mask | core)
    mask = _fill_holes_with_border(mask)

    if coarse is not values:
        mask = _refine_to_full(mask, factors, values.shape, values, threshold)
    if mask.mean() < MIN_HEAD_FRACTION:
        raise InputError(f"{name}: no head found (the head would occupy {100 * mask.mean():.2f} % of the volume); "
                         "check that the file is a head scan")
    return mask


# ---- steps --------------------------------------------------------------------------------

def _first_frame_physical(volume: Volume) -> np.ndarray:
    array = volume.array[..., 0] if volume.array.ndim == 4 else volume.array
    values = array.astype(np.float32)
    if volume.slope != 1.0 or volume.intercept != 0.0:
        values = values * np.float32(volume.slope) + np.float32(volume.intercept)
    if not np.all(np.isfinite(values)):
        finite = values[np.isfinite(values)]
        values = np.where(np.isfinite(values), values, finite.min() if finite.size else 0.0)
    return values


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
        raise InputError(f"{name}: no head found (the image is uniform); check that the file is a head scan")
    clipped = np.clip(sample, lo, hi)
    otsu = otsu_threshold(clipped)
    background = clipped[clipped <= otsu]
    tissue = clipped[clipped > otsu]
    bg_level = float(np.median(background))
    bg_sd = max(1.4826 * float(np.median(np.abs(background - bg_level))), 1e-3 * float(hi - lo))
    contrast = (float(tissue.mean()) - bg_level) / bg_sd
    if contrast < MIN_CONTRAST:
        raise InputError(f"{name}: no head found (no contrast between background and tissue, "
                         f"{contrast:.1f} noise sd); check that the file is a head scan")
    span = otsu - bg_level
    return float(np.clip(bg_level + 6.0 * bg_sd, bg_level + 0.1 * span, bg_level + 0.5 * span))



def _erode(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    return ndi.distance_transform_edt(mask, sampling=spacing) > radius_mm


def _dilate(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    if not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    labels, count = ndi.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_holes_with_border(mask: np.ndarray) -> np.ndarray:
    """3D hole filling, then 2D filling of every slice along each axis.

    Each axis is padded by an empty slice so the first and last slices (the neck cut)
    are filled as 2D images too instead of counting as border.
    """
    filled = ndi.binary_fill_holes(mask)
    for axis in range(3):
        structure = np.zeros((3, 3, 3), bool)
        index = [slice(None)] * 3
        index[axis] = 1
        structure[tuple(index)] = ndi.generate_binary_structure(2, 1)
        padding = [(0, 0)] * 3
        padding[axis] = (1, 1)
        padded = np.pad(filled, padding)
        padded = ndi.binary_fill_holes(padded, structure=structure)
        crop = [slice(None)] * 3
        crop[axis] = slice(1, -1)
        filled = padded[tuple(crop)]
    return filled


def _block_mean(values: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    shape = [int(np.ceil(n / f)) for n, f in zip(values.shape, factors)]
    padded = np.pad(values, [(0, s * f - n) for s, f, n in zip(shape, factors, values.shape)], mode="edge")
    blocks = padded.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _upsample(mask: np.ndarray, factors: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    out = mask
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    return out[: shape[0], : shape[1], : shape[2]]


def _refine_to_full(mask: np.ndarray, factors, shape, values: np.ndarray, threshold: float) -> np.ndarray:
    """Coarse mask -> full grid: the sure interior, plus boundary voxels above the threshold."""
    inner = _upsample(ndi.binary_erosion(mask), factors, shape)
    outer = _upsample(ndi.binary_dilation(mask), factors, shape)
    smooth = ndi.gaussian_filter(values, sigma=0.7, mode="nearest")
    return ndi.binary_fill_holes(inner | (outer & (smooth > threshold)))


def _name(volume: Volume) -> str:
    if volume.source is not None and volume.source.path:
        return str(volume.source.path)
    return "volume"
