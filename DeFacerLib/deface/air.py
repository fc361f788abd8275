"""The value removed voxels get: what the scanner shows for air in this image.

Filling with the image's own air keeps the output looking like a scan (no bright or black
slab to draw the eye, no new edges beyond the removal's own) and adds nothing that was not
there before.

"More than 10 mm outside the head" is a ball dilation of the (2 mm subsampled) head mask,
identical to thresholding its distance transform (skin_depth.dilate_mm), at a fraction of the cost.
"""
from __future__ import annotations

import numpy as np

from DeFacerLib.deface.skin_depth import dilate_mm
from DeFacerLib.intensity import AIR_HU, finite_only, finite_range, looks_like_hu
from DeFacerLib.volume import Volume

BACKGROUND_GAP_MM = 10.0  # skip the partial-volume rim and the near-face ghosts


def air_value(volume: Volume, head: np.ndarray | None = None) -> float:
    """Physical fill value for removed voxels.

    CT in HU -> -1000 (the writer clips it to the stored type through ``stored_value``).
    CT not in HU (rescaled) and MR -> the median of the physical values
    more than 10 mm outside the head (the typical background, noise floor included).
    PT -> 0 (no activity in air) when 0 lies within the data's range, else the background.
    Every statistic is over finite voxels: the result is never NaN or infinite.
    """
    values = volume.reference_array()
    stored_range = finite_range(values) or (0.0, 0.0)  # NaN/inf voxels (cut field of view) are no data
    minimum = stored_range[0] * volume.slope + volume.intercept
    maximum = stored_range[1] * volume.slope + volume.intercept
    low = min(minimum, maximum)
    if volume.modality == "CT" and looks_like_hu(values[::2, ::2, ::2] * volume.slope + volume.intercept):
        return AIR_HU
    if volume.modality == "PT" and low <= 0.0 <= max(minimum, maximum):
        return 0.0
    if head is None:
        from DeFacerLib.deface.head_mask import head_mask

        head = head_mask(volume)
    return _background_median(volume, values, head)


def _about_2mm(volume: Volume) -> tuple[tuple[slice, ...], np.ndarray]:
    """Slices that subsample the grid to ~2 mm voxels (a median needs no finer), and their step."""
    step = tuple(int(max(1, round(2.0 / s))) for s in volume.spacing_mm)
    return tuple(slice(None, None, k) for k in step), np.asarray(step)


def _background_median(volume: Volume, values: np.ndarray, head: np.ndarray) -> float:
    sub, step = _about_2mm(volume)
    small_head = np.asarray(head, dtype=bool)[sub]
    spacing = volume.spacing_mm * np.asarray(step)
    if small_head.any():  # farther than the gap from the head (a ball dilation, as a distance transform would)
        far = ~dilate_mm(small_head, BACKGROUND_GAP_MM, spacing)
    else:
        far = np.ones(small_head.shape, dtype=bool)
    if not far.any():
        far = ~small_head
    stored = finite_only(values[sub][far] if far.any() else values.ravel())
    if stored.size == 0:  # the background is all NaN/inf: the darkest finite value is the air
        stored = np.asarray([(finite_range(values) or (0.0, 0.0))[0]])
    physical = stored.astype(np.float64) * volume.slope + volume.intercept
    return float(np.median(physical))


def tissue_value(volume: Volume, head: np.ndarray) -> float:
    """Physical value of typical head tissue: the median inside the head mask (~2 mm subsample).

    The seal at the bottom of a face cut (removal.DEFAULT_SEAL_MM) gets it, so that the new
    surface is the smooth cut itself and not the sinuses, bone and orbits behind it, whose
    cross-section still reads as a face to a detector."""
    values = volume.reference_array()
    sub, _step = _about_2mm(volume)
    inside = finite_only(values[sub][np.asarray(head, dtype=bool)[sub]])
    if not inside.size:
        inside = finite_only(values.ravel())
    if not inside.size:
        inside = np.zeros(1)
    return float(np.median(inside.astype(np.float64) * volume.slope + volume.intercept))
