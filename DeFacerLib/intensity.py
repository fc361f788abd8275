"""Intensity rules shared by every stage, kept in one place so they cannot drift apart."""
from __future__ import annotations

import numpy as np

AIR_HU = -1000.0
HU_AIR_CUT = -500.0  # on a Hounsfield scale, a voxel at or below this is air
HU_AIR_FRACTION = 0.05  # a head CT in HU has at least this share of its voxels at air


def looks_like_hu(physical_values: np.ndarray) -> bool:
    """True for CT in Hounsfield units (air near -1000 HU), False for rescaled CT or MR."""
    sample = np.asarray(physical_values).reshape(-1)[::7]
    if sample.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]  # NaN outside a resampled field of view is not air
    if sample.size == 0:
        return False
    return float(np.count_nonzero(sample <= HU_AIR_CUT)) / sample.size >= HU_AIR_FRACTION


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of the histogram."""
    counts, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight0 = np.cumsum(counts).astype(float)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def finite_only(values: np.ndarray) -> np.ndarray:
    """``values`` without its NaN and +/-inf voxels (as a flat array when any are dropped).

    Float volumes carry NaN outside a resampled field of view; one NaN turns a median or a
    percentile into NaN, and that NaN would become the value written over a face."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        return values
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """(min, max) over the finite values (None when there are none)."""
    finite = finite_only(values)
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


def non_finite_as_background(values: np.ndarray, background: float | None = None) -> np.ndarray:
    """``values`` with NaN and +/-inf voxels set to ``background`` (default: the smallest finite
    value, i.e. the darkest air), so that they count as outside the head everywhere. The
    array itself when it has no such voxel (integer data never has)."""
    if values.dtype.kind != "f":
        return values
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    if background is None:
        found = finite_range(values)
        background = found[0] if found is not None else 0.0
    return np.where(bad, values.dtype.type(background), values)


def reference_physical(volume) -> np.ndarray:
    """``Volume.physical`` of the volume's reference frame (``Volume.reference_array``: the mean
    of a 4D PET's frames, else the first frame), in C order (readers may give Fortran order;
    labelling is 2.5x slower on it), NaN/inf as the darkest air: what the head mask, the PET
    brain and the QA render threshold."""
    return non_finite_as_background(volume.reference_volume().physical(order="C"))  # NaN/inf count as air, never as head or skin
