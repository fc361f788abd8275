"""The pinna as what stands proud of the head's side outline, so that the ears' cut takes it whole.

    proud = proud_of_side_outline(volume, head)   # bool, on the volume's own grid

The ears are cut no deeper than 10 mm from the skin (removal.EARS_MAX_DEPTH_MM: the temporal
lobe lies 13-17 mm under the skin above and in front of the ear). A pinna pressed flat against
the head by the coil is thicker than that at its base, and a 10 mm shell leaves a shrunken copy
of it standing (up to 480 mm^2 of the side view more than 5 mm proud on a held-out IXI head,
scripts/evaluate_defacing.py's ear relief). Seen from the side, the head without its pinnae is a
smooth outline: the lateral extent of the head per (front-back, up-down) column, grey-opened by
OUTLINE_OPENING_MM, which is wider than a pinna and narrower than the head's own curve. What
lies lateral of that outline is the pinna (and smaller bumps of the scalp); what lies medial of
it is the side of the head, skull and brain included, which this mask never reaches. The
ears' cut (removal.py) takes it in each ear box grown by PINNA_REACH_MM, besides its 10 mm
shell. (Measuring that shell from the head without the pinna, or from the outline, would leave
no plateau in the pinna's shape, but reached the reference brain on IXI heads: not done.)
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.orientation import canonical_reorientation
from DeFacerLib.volume import Volume

OUTLINE_OPENING_MM = 70.0  # a pinna is ~35 x 65 mm; the head's side curves over ~150 mm
# A column counts where the head stands this far proud of the outline: pinnae stand 7-24 mm
# proud on the IXI heads; above PROUD_MAX_MM the "outline" has slipped off the head (the
# field of view's edge, the shoulders), not under a pinna.
PROUD_MIN_MM = 3.0
PROUD_MAX_MM = 30.0


def lateral_extent(head_c: np.ndarray, side: float, mid_i: int) -> np.ndarray:
    """Per (j, k) of a canonical (L, P, S) head mask: how far out (voxels) the head reaches on one
    side (side > 0: the left, +i), as an index counted from the array's opposite edge (the left:
    i itself; the right: shape - 1 - i); -1 where the column holds no head on that side."""
    shape_i = head_c.shape[0]
    half = head_c.copy()
    idx = np.arange(shape_i)[:, None, None]
    if side > 0:
        half[:mid_i] = False
        return np.where(half.any(axis=0), np.max(np.where(half, idx, -1), axis=0), -1).astype(float)
    half[mid_i:] = False
    return np.where(half.any(axis=0), shape_i - 1 - np.min(np.where(half, idx, shape_i + 5), axis=0), -1).astype(float)


def head_outline(lateral: np.ndarray, spacing_c) -> np.ndarray:
    """The side outline without the pinna: lateral_extent grey-opened by OUTLINE_OPENING_MM."""
    size = tuple(max(3, int(OUTLINE_OPENING_MM / s)) for s in np.asarray(spacing_c, float)[1:])
    return ndi.grey_opening(lateral, size=size)


def midline_index(head_c: np.ndarray) -> int:
    """The canonical left-right index halfway across the head."""
    across = np.flatnonzero(head_c.any(axis=(1, 2)))
    return int(0.5 * (across[0] + across[-1]))


def proud_of_side_outline(volume: Volume, head: np.ndarray) -> np.ndarray:
    """Head voxels lateral of their side's outline, in columns standing PROUD_MIN_MM to
    PROUD_MAX_MM proud of it: the pinnae, on the volume's own grid (any orientation)."""
    reorientation = canonical_reorientation(volume)
    spacing_c = np.asarray(volume.spacing_mm, float)[list(reorientation.permutation)]
    head_c = reorientation.apply(np.asarray(head, bool))
    proud_c = np.zeros(head_c.shape, bool)
    if head_c.any():
        mid_i = midline_index(head_c)
        shape_i = head_c.shape[0]
        idx = np.arange(shape_i)[:, None, None]
        for side in (1.0, -1.0):
            lateral = lateral_extent(head_c, side, mid_i)
            outline = head_outline(lateral, spacing_c)
            height_mm = (lateral - outline) * spacing_c[0]
            columns = (lateral >= 0) & (height_mm > PROUD_MIN_MM) & (height_mm <= PROUD_MAX_MM)
            outward = idx if side > 0 else shape_i - 1 - idx  # how far out, as lateral_extent counts
            on_side = (idx >= mid_i) if side > 0 else (idx < mid_i)
            proud_c |= (outward > outline[None]) & on_side & columns[None] & head_c
    return reorientation.undo(proud_c)
