"""Intensity rules shared by every stage, kept in one place so they cannot drift apart."""
from __future__ import annotations

import numpy as np

AIR_HU = -1000.0
HU_AIR_CUT = -500.0  # on a Hounsfield scale, a voxel at or below this is air
HU_AIR_FRACTION = 0.05  # a head CT in HU has at least this share of its voxels at air


def looks_like_hu(physical_values: np.ndarray) -> bool:
    """True for CT in Hounsfield units (air near -1000 HU), False for rescaled CT or MR."""
    sample = np.asarray(physical_values).reshape(-1)[::7]
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
