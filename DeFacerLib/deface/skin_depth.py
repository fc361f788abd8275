"""Signed depth below the skin, in mm: how far a voxel lies inside (+) or outside (-) the head.

Removal is limited to a shell under the skin, so "depth" must be measured in millimetres
whatever the voxel size (anisotropic volumes such as 1x1x2 mm T2 included): an exact
Euclidean distance transform with the volume's spacing as sampling.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


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
