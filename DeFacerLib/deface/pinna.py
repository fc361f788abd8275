"""The pinna as what stands proud of the head's side outline, so that the ears' cut takes it whole.

    proud, under, share = SideOutlines(volume, head).on_box(lo, hi)   # masks on an index box of the grid
    proud, under, share = side_outline_masks(volume, head)             # ... on the whole grid

The ears are cut no deeper than 10 mm from the skin (removal.EARS_MAX_DEPTH_MM: the temporal
lobe lies 13-17 mm under the skin above and in front of the ear). A pinna pressed flat against
the head by the coil is thicker than that at its base, and a 10 mm shell leaves a shrunken copy
of it standing (up to 480 mm^2 of the side view more than 5 mm proud on a held-out IXI head,
scripts/evaluate_defacing.py's ear relief). Seen from the side, the head without its pinnae is a
smooth outline: the lateral extent of the head per (front-back, up-down) column, opened by a
ball of OUTLINE_BALL_RADIUS_MM rolled under it, too large to enter a pinna and small enough to
follow the head's own curve. What
lies lateral of that outline is the pinna (and smaller bumps of the scalp); what lies medial of
it is the side of the head. Where the skull itself bulges past the outline (above the
ear; 771 reference-brain voxels of IXI546 lie in the mask), the mask does reach the brain: the
cut keeps head tissue deeper than removal.DEEP_MM farther from the protected region
(removal.DEEP_PROTECT_MARGIN_MM), as every cut does. The
ears' cut (removal.py) takes it in each ear box grown by PINNA_REACH_MM, besides its 10 mm
shell. (Measuring that shell from the head without the pinna, or from the outline, would leave
no plateau in the pinna's shape, but reached the reference brain on IXI heads: not done.)
Instead the cut goes to the outline smoothed by FLOOR_SMOOTHING_MM, and what it took under
that outline is filled with tissue up to it, the surface voxels blended: values of removed
voxels only, so nothing the cut kept, the brain included, changes.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.orientation import canonical_reorientation
from DeFacerLib.volume import Volume

# A ball this large cannot rise far into a pinna (35 mm across: R - sqrt(R^2 - 17.5^2) = 3.2
# mm under a symmetric bump) and fits under the side of a head around the ear, so the outline
# follows the head's own curve. A flat window instead (a 70 mm grey opening, before) sinks under
# any dome (17 mm at the apex of an 80 mm one, Testing/test_pinna_outline.py), and the ears'
# floor, filled up to the outline, showed as a sunken box beside every ear: on the 27 IXI heads
# the rendered surface 35-60 mm from the concha lay > 2 mm under the original's over a median
# 1494 mm^2 per ear (scripts/evaluate_defacing.py's "ear floor sunk"). Balls of 40 / 50 / 70 /
# 100 mm: 0 / 2 / 222 / 4266 mm^2 sunk (median; worst ear 292 / 596 / 1052 / 6420); 40 mm
# started to keep pinna (244 mm^2 of one ear's side view > 3 mm above a 70 mm ball's outline,
# 32 at 50 mm; measured 2026-12-05 on the 27 IXI heads).
OUTLINE_BALL_RADIUS_MM = 50.0
# The ball rolls on the side view sampled this coarsely (the outline is smooth at this scale;
# on the 1 mm map a 50 mm ball costs 0.35 s a side, on this one 0.02 s), then the outline is
# interpolated back and kept under the head.
OUTLINE_STEP_MM = 4.0
# A column counts where the head stands this far proud of the outline: pinnae stand 7-24 mm
# proud on the IXI heads; above PROUD_MAX_MM the "outline" has slipped off the head (the
# field of view's edge, the shoulders), not under a pinna.
PROUD_MIN_MM = 3.0
PROUD_MAX_MM = 30.0
# The ears' cut goes to the outline smoothed this much (a Gaussian's sigma), and is closed by
# tissue up to it, so that the outline's voxel steps do not show as terraces.
FLOOR_SMOOTHING_MM = 3.0


def lateral_extent(head_c: np.ndarray, side: float, mid_i: int) -> np.ndarray:
    """Per (j, k) of a canonical (L, P, S) head mask: how far out (voxels) the head reaches on one
    side (side > 0: the left, +i), as an index counted from the array's opposite edge (the left:
    i itself; the right: shape - 1 - i); -1 where the column holds no head on that side."""
    shape_i = head_c.shape[0]
    # the outermost head voxel of each column is the first True from that side's edge (argmax
    # of the flipped half, a view): no full-size copy or int64 index map (1 GB at 0.5 mm)
    outward = head_c[mid_i:][::-1] if side > 0 else head_c[:mid_i]
    if outward.shape[0] == 0:
        return np.full(head_c.shape[1:], -1.0)
    reach = shape_i - 1 - np.argmax(outward, axis=0)
    return np.where(outward.any(axis=0), reach, -1).astype(float)


def head_outline(lateral: np.ndarray, spacing_c) -> np.ndarray:
    """The side outline without the pinna, in lateral_extent's voxel counts: the highest surface
    of ball caps (OUTLINE_BALL_RADIUS_MM, heights taken in mm) that fits under the head's side.
    Columns without head stay -1; the outline never lies lateral of the head."""
    spacing_c = np.asarray(spacing_c, float)
    on_head = lateral >= 0
    if not on_head.any():
        return lateral.astype(float)
    base = float(lateral[on_head].min())  # columns off the head are this low, not a cliff to -1
    height_mm = np.where(on_head, lateral - base, 0.0) * spacing_c[0]
    step = np.maximum(1, np.round(OUTLINE_STEP_MM / spacing_c[1:]).astype(int))
    coarse = height_mm[::step[0], ::step[1]]
    pixel_mm = spacing_c[1:] * step
    reach = np.floor(OUTLINE_BALL_RADIUS_MM / pixel_mm).astype(int)
    dj, dk = np.meshgrid(*(np.arange(-r, r + 1) * p for r, p in zip(reach, pixel_mm)), indexing="ij")
    footprint = dj ** 2 + dk ** 2 <= OUTLINE_BALL_RADIUS_MM ** 2
    ball = np.sqrt(np.maximum(OUTLINE_BALL_RADIUS_MM ** 2 - dj ** 2 - dk ** 2, 0.0)) - OUTLINE_BALL_RADIUS_MM
    opened = ndi.grey_opening(coarse, footprint=footprint, structure=np.where(footprint, ball, 0.0), mode="nearest")
    j, k = np.meshgrid(*(np.arange(n) / s for n, s in zip(lateral.shape, step)), indexing="ij")
    fine = ndi.map_coordinates(opened, [j, k], order=1, mode="nearest")
    outline = base + np.minimum(fine, height_mm) / spacing_c[0]
    return np.where(on_head, outline, -1.0)


def midline_index(head_c: np.ndarray) -> int:
    """The canonical left-right index halfway across the head."""
    across = np.flatnonzero(head_c.any(axis=(1, 2)))
    return int(0.5 * (across[0] + across[-1]))


def side_outline_masks(volume: Volume, head: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SideOutlines(volume, head).on_box over the whole grid."""
    return SideOutlines(volume, head).on_box((0, 0, 0), tuple(n - 1 for n in volume.shape3))


class SideOutlines:
    """The head's two side outlines (canonical 2D maps), turned into voxel masks on any index box
    of the volume's own grid: only the boxes the ears' cut needs are ever made in 3D."""

    def __init__(self, volume: Volume, head: np.ndarray):
        self.reorientation = canonical_reorientation(volume)
        self.spacing_c = np.asarray(volume.spacing_mm, float)[list(self.reorientation.permutation)]
        self.head_c = self.reorientation.apply(np.asarray(head, bool))
        self.sides = []
        if not self.head_c.any():
            return
        self.mid_i = midline_index(self.head_c)
        for side in (1.0, -1.0):
            lateral = lateral_extent(self.head_c, side, self.mid_i)
            outline = head_outline(lateral, self.spacing_c)
            height_mm = (lateral - outline) * self.spacing_c[0]
            on_head = (lateral >= 0) & (height_mm <= PROUD_MAX_MM)
            smooth = ndi.gaussian_filter(outline.astype(np.float32), FLOOR_SMOOTHING_MM / self.spacing_c[1:])
            self.sides.append((side, on_head, on_head & (height_mm > PROUD_MIN_MM), smooth))

    def on_box(self, lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(proud, under, share) on the index box lo..hi (inclusive) of the volume's own grid.
        The outline here is smoothed by FLOOR_SMOOTHING_MM, so that a cut to it and a floor up to
        it meet in one smooth surface. ``proud``: head voxels not wholly medial of their side's
        outline, in columns standing PROUD_MIN_MM to PROUD_MAX_MM proud of it (the pinnae).
        ``under``: every voxel wholly medial of it, in the columns where the outline lies at most
        PROUD_MAX_MM under the skin (the head's side without its pinna). ``share`` (float32, NaN
        elsewhere): for the voxels the outline passes through, the share of the voxel medial of it."""
        corners = self.reorientation.apply_index(np.array([lo, hi], float))
        c_lo, c_hi = corners.min(axis=0).astype(int), corners.max(axis=0).astype(int)
        shape = tuple(int(v) for v in c_hi - c_lo + 1)
        proud, under = np.zeros(shape, bool), np.zeros(shape, bool)
        share_box = np.full(shape, np.nan, np.float32)
        columns = (slice(c_lo[1], c_hi[1] + 1), slice(c_lo[2], c_hi[2] + 1))
        head = self.head_c[c_lo[0]:c_hi[0] + 1][(slice(None),) + columns]
        shape_i = self.head_c.shape[0] if self.sides else 0
        i = np.arange(c_lo[0], c_hi[0] + 1)[:, None, None]
        for side, on_head, standing, smooth in self.sides:
            outward = i if side > 0 else shape_i - 1 - i  # how far out, as lateral_extent counts
            on_side = (i >= self.mid_i) if side > 0 else (i < self.mid_i)
            # voxel t spans [t - 0.5, t + 0.5] outwards: the smoothed outline passes through voxel
            # `through`, which has `share` of itself medial of it; every voxel before it is under,
            # that one and every voxel beyond it is proud (where the column stands proud)
            through = np.floor(smooth[columns] + 0.5)
            share = smooth[columns] - through + 0.5
            proud |= (outward >= through[None]) & on_side & standing[columns][None] & head
            under |= on_side & on_head[columns][None] & (outward < through[None])
            here = on_side & on_head[columns][None] & (outward == through[None]) & (share[None] > 0.0)
            share_box[here] = np.broadcast_to(share[None], here.shape)[here]
        undo = self.reorientation.undo
        return undo(proud), undo(under), undo(share_box)
