"""A geometric guard for the frontal lobe, added to a *predicted* brain mask.

A network's brain mask can miss a rim of the frontal lobe, and the frontal lobe lies only
12-20 mm under the forehead skin, right above the eye boxes. So when the brain comes from
the model, everything above the eyes that is deeper than a thin skin layer is protected
as well: brows and lids (the outer ``skin_layer_mm``) stay removable, bone and brain never.
A brain mask the user supplies is trusted as it is and gets no guard.
"""
from __future__ import annotations

import numpy as np

from DeFacerLib.deface.skin_depth import skin_depth_mm
from DeFacerLib.volume import Volume

ABOVE_EYE_CENTRES_MM = 10.0  # the globe's upper third stays removable; the orbital roof sits ~15-20 mm above centre
SKIN_LAYER_MM = 10.0  # skin, fat and brow over the frontal bone (forehead soft tissue is 4-8 mm)
EYES_ABOVE_NOSE_CENTRE_MM = 25.0  # eye centres sit ~20-30 mm above the middle of the external nose


def frontal_guard(volume: Volume, head: np.ndarray, eyes: np.ndarray | None, nose: np.ndarray | None = None,
                  *, depth_mm: np.ndarray | None = None) -> np.ndarray:
    """Voxels above the eye centres and deeper than the skin layer (volume's own array frame).

    Heights are world superior coordinates (LPS z), so any orientation works. With no eyes,
    the eye level is estimated from the nose; with neither, nothing is guarded here.
    """
    eye_level_mm = _eye_level_mm(volume, eyes, nose)
    if eye_level_mm is None:
        return np.zeros(volume.shape3, dtype=bool)
    superior_mm = _world_superior_mm(volume)
    if depth_mm is None:
        depth_mm = skin_depth_mm(head, volume.spacing_mm)
    return (superior_mm > eye_level_mm + ABOVE_EYE_CENTRES_MM) & (depth_mm > SKIN_LAYER_MM)


def _eye_level_mm(volume: Volume, eyes: np.ndarray | None, nose: np.ndarray | None) -> float | None:
    if eyes is not None and eyes.any():
        return float(np.mean(_world_superior_mm(volume)[eyes]))
    if nose is not None and nose.any():
        return float(np.mean(_world_superior_mm(volume)[nose])) + EYES_ABOVE_NOSE_CENTRE_MM
    return None


def _world_superior_mm(volume: Volume) -> np.ndarray:
    """LPS z (superior) of every voxel centre, as a float32 array on the volume's grid."""
    affine = volume.affine_lps
    i, j, k = (np.arange(n, dtype=np.float32) for n in volume.shape3)
    return (affine[2, 0] * i[:, None, None] + affine[2, 1] * j[None, :, None]
            + affine[2, 2] * k[None, None, :] + np.float32(affine[2, 3])).astype(np.float32)
