"""A geometric guard for the frontal lobe, added to a *predicted* brain mask.

A network's brain mask can miss a rim of the frontal lobe, and the frontal lobe lies only
12-20 mm under the forehead skin, right above the eye boxes. So when the brain comes from
the model, everything above the eyes, over the front of the head, that is deeper than a thin
skin layer is protected as well: brows and lids (the outer ``skin_layer_mm``) stay removable,
bone and brain never.
A brain mask the user supplies is trusted as it is and gets no guard.

Between the orbits the gyrus rectus comes lower still: on the 27 IXI reference brains it
reaches down to the eye centres' height, 1-6 mm behind them on five heads (IXI274, 452, 565,
206, 546), and 14-18 mm behind and 4 mm above them on IXI162, where an eye box 4 mm deeper
than usual touched it. So the medial strip between the eyes (MEDIAL_HALF_WIDTH_MM either
side of their midpoint) is guarded from the eye level up, from MEDIAL_BEHIND_EYES_MM behind
the eye region's centre back, whatever the depth: what lies there is the ethmoid and the
olfactory fossa, never the face.

The depth is computed only for the head above the eye level (plus the skin layer's reach),
and only as "deeper than SKIN_LAYER_MM or not", with the float32 rounding of skin_depth_mm
that the guard has always used: the guard is the same voxel for voxel, at a third of the
cost of two full-volume distance transforms.
"""
from __future__ import annotations

import numpy as np

from DeFacerLib.deface.skin_depth import bounding_box, box_bounds, box_corners, depth_at_most, dilate_mm_on_box
from DeFacerLib.volume import Volume

ABOVE_EYE_CENTRES_MM = 10.0  # the globe's upper third stays removable; the orbital roof sits ~15-20 mm above centre
SKIN_LAYER_MM = 10.0  # skin, fat and brow over the frontal bone (forehead soft tissue is 4-8 mm)
EYES_ABOVE_NOSE_CENTRE_MM = 25.0  # eye centres sit ~20-30 mm above the middle of the external nose
NOSE_AHEAD_OF_EYES_MM = 30.0  # ... and behind it: 18-36 mm, median 30, on 9 IXI heads (the U-Net's masks' centres)
MEDIAL_HALF_WIDTH_MM = 15.0  # the globes' inner edges lie ~15-20 mm from the midline
MEDIAL_BEHIND_EYES_MM = 10.0  # behind the eye region's centre (~4 mm in front of the globe centres)
BOTH_EYES_MIN_WIDTH_MM = 50.0  # two eye regions span ~90 mm left to right, one ~35 mm
# The forehead part keeps clear of the eye region by the removal's protect margin, so that,
# grown by that margin, it stops at the eye region instead of reaching into it: grown over the
# upper lids and the globe's upper third, it kept ~18 % of the labelled eye tissue (median
# eyes removed 82 % on the 27 IXI heads; 96 % with the clearance). The brain beside the eyes is
# still the predicted brain's, grown by the margin: the voxels this frees lie 2.8 mm or more
# from the reference brain on all 27 (median of the heads' closest 5.7 mm), no closer than
# what the cut already came (2.0 mm), and change 0 reference-brain voxels.
EYE_CLEARANCE_MM = 5.0  # = removal.DEFAULT_PROTECT_MARGIN_MM
# The forehead part reaches back no farther than this behind the eye centres (world posterior):
# every face cut lies in front of it (the eyes' boxes and cores reach ~25 mm behind the globe's
# centre), and the ears (their front ~60 mm behind) are no business of a frontal guard. Reaching
# over the whole head, the guard's world-horizontal eye level crossed the ears: on a head pitched
# 15 degrees it lies ~20 mm higher or lower there, and the ears' cut kept 70 % of the labelled
# ear tissue on IXI274 (scripts/evaluate_tilted_heads.py). Behind this, the predicted brain grown
# by the margin, and the deep tissue's margin from it (removal.DEEP_PROTECT_MARGIN_MM), protect.
FRONTAL_REACH_BEHIND_EYES_MM = 40.0
WORLD_POSTERIOR = np.array([0.0, 1.0, 0.0])  # LPS
WORLD_SUPERIOR = np.array([0.0, 0.0, 1.0])


def frontal_guard(volume: Volume, head: np.ndarray, eyes: np.ndarray | None, nose: np.ndarray | None = None,
                  *, depth_mm: np.ndarray | None = None, eye_points_mm: dict | None = None) -> np.ndarray:
    """Voxels above the eye centres, deeper than the skin layer and no farther than
    FRONTAL_REACH_BEHIND_EYES_MM behind the eyes, plus the medial strip (volume's own array frame).

    Heights are along the world's superior axis made square to the eye-to-eye line when both
    eyes' landmarks are given (``eye_points_mm``; a head rolled in the scanner), else along the
    world's superior axis; any voxel orientation works. With no eyes, the eye level and the
    front-back position are estimated from the nose; with neither, nothing is guarded here.
    ``depth_mm``: the head's skin depth on the whole grid when the caller has it
    (skin_depth_mm, or skin_depth.inside_depth_mm exact to at least SKIN_LAYER_MM); else it is computed
    for the head above the eyes only. ``eye_points_mm``: the eyes' landmarks ({"eye_left": [x, y, z],
    ...}, world LPS; face.landmarks.refine_landmarks): the clearance also keeps clear of the eye
    tissue around each (_eye_region).
    """
    if not ((eyes is not None and eyes.any()) or (nose is not None and nose.any())):
        return np.zeros(volume.shape3, dtype=bool)
    up = _face_up(eye_points_mm)
    above = volume.along_mm(up, dtype=np.float32) > _eyes_along_mm(volume, up, eyes, nose) + ABOVE_EYE_CENTRES_MM
    behind_mm = _eyes_along_mm(volume, WORLD_POSTERIOR, eyes, nose) + FRONTAL_REACH_BEHIND_EYES_MM
    above &= volume.along_mm(WORLD_POSTERIOR, dtype=np.float32) <= behind_mm
    # the medial strip is laid out in world axes (narrow, at the midline): its level is world superior
    medial = _medial_strip(volume, head, eyes, _eyes_along_mm(volume, WORLD_SUPERIOR, eyes, nose))
    if depth_mm is not None:
        forehead = above & (depth_mm > SKIN_LAYER_MM)
    else:
        # Only the head above the eyes needs a depth, and only up to the skin layer: a distance
        # transform of that part grown by the layer (skin_depth.depth_at_most, exact there).
        candidates = above & np.asarray(head, dtype=bool)
        box = bounding_box(candidates)
        forehead = np.zeros(volume.shape3, dtype=bool)
        if box is not None:
            bounds = tuple(tuple(bound) for bound in box_bounds(box))
            # float32: the guard has always compared skin_depth_mm's float32 map, which rounds ties
            shallow = depth_at_most(head, volume.spacing_mm, SKIN_LAYER_MM, box=bounds, precision=np.float32)
            forehead[box] = candidates[box] & ~shallow
    return (forehead & ~_near_eyes(_eye_region(volume, eyes, eye_points_mm), volume.spacing_mm)) | medial


# The network's eye region is the globe and little more; the eye tissue (face.labels.SHAPES:
# globe, lids, the fat above it, up to 14 mm above the globe's centre) reaches higher, under
# the orbital roof. With the region alone the guard, grown by the margin, kept the top of that
# tissue (eyes removed 84 % on niivue_T2w, 93.3 % pooled over the held-out heads). So the region
# also takes that ellipsoid around each eye's landmark (face.labels.eye_tissue; the landmark
# fitted to the globe): 93 % on niivue_T2w, 94.8 % pooled; all 27 IXI heads 94.8 -> 95.7 %
# pooled, and 0 reference-brain voxels changed on every one of them. The predicted brain, grown
# by the margin, and the medial strip stay protected as before. (The eyes' cut now also takes
# that ellipsoid at any depth, pipeline.deface_volume: docs/benchmarks.md has today's figures.)


def _eye_region(volume: Volume, eyes: np.ndarray | None, eye_points_mm: dict | None) -> np.ndarray | None:
    """The predicted eyes, with the eye tissue's ellipsoid around each eye landmark added."""
    if eyes is None or not eye_points_mm:
        return eyes
    from DeFacerLib.face.labels import eye_tissue

    tissue = eye_tissue(volume, eye_points_mm)
    return eyes if tissue is None else np.asarray(eyes, dtype=bool) | tissue


def _near_eyes(eyes: np.ndarray | None, spacing_mm) -> np.ndarray | np.bool_:
    """The eye region grown by EYE_CLEARANCE_MM (computed on its own box grown by the clearance)."""
    box = bounding_box(eyes) if eyes is not None else None
    if box is None:
        return np.False_
    reach = np.ceil(EYE_CLEARANCE_MM / np.asarray(spacing_mm, dtype=float)).astype(int)
    lo = [max(0, b.start - r) for b, r in zip(box, reach)]
    hi = [min(n - 1, b.stop - 1 + r) for b, r, n in zip(box, reach, eyes.shape)]
    near = np.zeros(eyes.shape, dtype=bool)
    near[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = dilate_mm_on_box(eyes, EYE_CLEARANCE_MM, spacing_mm, (lo, hi))
    return near


def _medial_strip(volume: Volume, head: np.ndarray, eyes: np.ndarray | None, eye_level_mm: float) -> np.ndarray:
    """Head voxels at or above the eye level, within MEDIAL_HALF_WIDTH_MM of the eyes' midpoint
    (world left-right) and MEDIAL_BEHIND_EYES_MM or more behind the eye region's centre (world
    posterior). Nothing without both eyes (one eye or the nose alone does not say where the
    midpoint is). Computed on the strip's own index box only."""
    strip = np.zeros(volume.shape3, dtype=bool)
    if eyes is None or not eyes.any():
        return strip
    eyes_mm = volume.index_to_world(np.argwhere(eyes))
    if np.ptp(eyes_mm[:, 0]) < BOTH_EYES_MIN_WIDTH_MM:
        return strip
    centre_mm = eyes_mm.mean(axis=0)
    shape = np.asarray(volume.shape3)
    far_mm = volume.index_to_world(box_corners(np.zeros(3), shape - 1)).max(axis=0)
    low_mm = np.array([centre_mm[0] - MEDIAL_HALF_WIDTH_MM, centre_mm[1] + MEDIAL_BEHIND_EYES_MM, eye_level_mm])
    high_mm = np.array([centre_mm[0] + MEDIAL_HALF_WIDTH_MM, far_mm[1], far_mm[2]])
    if np.any(high_mm < low_mm):
        return strip
    corners = volume.world_to_index(box_corners(low_mm, high_mm))
    lo = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, shape - 1)
    hi = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 1, 0, shape - 1)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
    left_mm, behind_mm, up_mm = (volume.along_mm(np.eye(3)[axis], lo, hi, dtype=np.float32) for axis in range(3))
    strip[box] = (np.asarray(head, dtype=bool)[box] & (up_mm >= np.float32(eye_level_mm))
                  & (np.abs(left_mm - np.float32(centre_mm[0])) <= MEDIAL_HALF_WIDTH_MM)
                  & (behind_mm - np.float32(centre_mm[1]) >= MEDIAL_BEHIND_EYES_MM))
    return strip


def _eyes_along_mm(volume: Volume, unit: np.ndarray, eyes: np.ndarray | None, nose: np.ndarray | None) -> float:
    """The eye region's mean coordinate along ``unit`` (world LPS), computed on its own box; with
    no eyes, the nose's moved to where the eyes sit: EYES_ABOVE_NOSE_CENTRE_MM up and
    NOSE_AHEAD_OF_EYES_MM back."""
    feature = eyes if eyes is not None and eyes.any() else nose
    box = bounding_box(feature)
    lo, hi = box_bounds(box)
    mean_mm = float(np.mean(volume.along_mm(unit, lo, hi, dtype=np.float32)[np.asarray(feature, dtype=bool)[box]]))
    if feature is eyes:
        return mean_mm
    nose_to_eyes_mm = np.array([0.0, NOSE_AHEAD_OF_EYES_MM, EYES_ABOVE_NOSE_CENTRE_MM])
    return mean_mm + float(np.asarray(unit, dtype=float) @ nose_to_eyes_mm)


def _face_up(eye_points_mm: dict | None) -> np.ndarray:
    """The height axis of the guard, world LPS: superior made square to the eye-to-eye line when
    both eyes' landmarks are known, so that the eye level follows a head rolled in the scanner.
    (With the world's superior axis, a head rolled 25 degrees had its eye level ~20 mm off at the
    outer orbit, and an eye box took 4 reference-brain voxels of IXI255 there.)"""
    up = WORLD_SUPERIOR
    if eye_points_mm and {"eye_left", "eye_right"} <= set(eye_points_mm):
        across = np.subtract(eye_points_mm["eye_left"], eye_points_mm["eye_right"], dtype=float)
        if np.linalg.norm(across) > 0:
            across /= np.linalg.norm(across)
            square = up - (up @ across) * across
            if np.linalg.norm(square) > 0.5:  # the eyes are side by side, not one above the other
                up = square / np.linalg.norm(square)
    return up
