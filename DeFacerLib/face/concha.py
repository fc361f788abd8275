"""The ear's landmark, the concha, found as the deepest bowl of the skin seen from the side.

    conchae = find_conchae(volume, head, {"ear_left": estimate_mm, ...})   # world LPS mm

The U-Net's ear region covers the pinna, but where the concha lies inside it varies from ear
to ear, so the region's centroid less a mean offset is 6 mm (median) from where blind readers
put the concha (scripts/training/ear_consensus.json). Seen from the side, the concha is the
bowl the helix, antihelix, tragus and antitragus enclose, and it runs into the ear canal: the
deepest depression of the skin surface there. So, in a window around the model's estimate:

- the skin's side depth map: per (front-back, up-down) column, how far out the skin isosurface
  reaches (the QA renderer's threshold and smoothing, what the readers looked at);
- its bowls: the map grey-closed over BOWL_CLOSING_MM (wider than the concha's opening) less
  the map itself, smoothed over BOWL_SMOOTHING_MM;
- the landmark: the centroid of the deepest fifth of the bowls within SEARCH_RADIUS_MM of the
  estimate, moved by CONCHA_FROM_BOWL_MM (the bowls' centroid leans towards the canal, in front
  of and below the concha's centre), placed UNDER_SKIN_MM under the head's side surface there,
  as the readers' points are.

Canonical frame (array axes L, P, S); ``side`` > 0 is the patient's left (+i).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.pinna import lateral_extent
from DeFacerLib.intensity import non_finite_as_background
from DeFacerLib.orientation import canonical_reorientation
from DeFacerLib.volume import Volume

SEARCH_RADIUS_MM = 20.0
BOWL_CLOSING_MM = 25.0  # a concha is ~15-20 mm across; the head's side curves over far more
BOWL_SMOOTHING_MM = 3.0
SKIN_SMOOTHING_MM = 1.0  # as the QA renderer's skin surface (qa.render.skin_surface)
DEEPEST_PERCENTILE = 80.0
# Mean of (readers' concha - bowls' centroid) over the training heads' ears, (posterior,
# superior) mm (scripts/evaluate_defacing.py --offsets measures it again).
CONCHA_FROM_BOWL_MM = (3.7, 1.8)
UNDER_SKIN_MM = 2.0  # scripts/training/annotate_ears.py puts each reading this far under the skin
THRESHOLD_SAMPLE_VOXELS = 250_000  # 0.01-0.04 s on an MR head, where the renderer's 2e6 takes 0.03-0.2 s
CROP_MM = 45.0  # around the estimate: the pinna stands at most ~30 mm proud of the head
# An ear the field of view cuts: the skin reaches the volume's side in this share of the
# window's columns or more (uncut heads: at most 0.054, chris_t1; IXI481 with its left side cut
# 4 / 8 / 16 mm: 0.13 / 0.36 / 0.86). Its bowls would be the cut's, so the model's estimate stands.
CUT_BY_FIELD_OF_VIEW = 0.10


def find_conchae(volume: Volume, head: np.ndarray | None, estimates_mm: dict,
                 from_bowl_mm=CONCHA_FROM_BOWL_MM) -> dict[str, np.ndarray]:
    """World LPS conchae near the estimates (``ear_left``/``ear_right`` -> world LPS mm) of
    ``volume``, for those found. ``head``: the head mask on the volume's grid, if computed."""
    from DeFacerLib.deface import head_mask
    from DeFacerLib.qa.render import skin_threshold

    ears = [name for name in ("ear_left", "ear_right") if name in estimates_mm]
    if not ears or volume.slope <= 0:
        return {}
    reorientation = canonical_reorientation(volume)
    head = head_mask(volume) if head is None else head
    values_c = reorientation.apply(non_finite_as_background(  # NaN/inf are air, not skin
        volume.reference_array()))
    head_c = reorientation.apply(head)
    spacing_c = np.asarray(volume.spacing_mm, float)[list(reorientation.permutation)]
    # values_c hold stored values; a coarser sample than the renderer's moves the cut by 0-2 %
    stored_threshold = (skin_threshold(volume, THRESHOLD_SAMPLE_VOXELS) - volume.intercept) / volume.slope
    found = {}
    for name in ears:
        estimate_c = reorientation.apply_index(volume.world_to_index(np.asarray(estimates_mm[name], float)[None, :]))[0]
        point_c = concha_point(values_c, head_c, spacing_c, estimate_c, 1.0 if name == "ear_left" else -1.0,
                               stored_threshold, from_bowl_mm)
        if point_c is not None:
            found[name] = volume.index_to_world(reorientation.undo_index(point_c))[0]
    return found


def concha_point(values_c: np.ndarray, head_c: np.ndarray, spacing_c, estimate_c, side: float,
                 threshold: float, from_bowl_mm=CONCHA_FROM_BOWL_MM) -> np.ndarray | None:
    """Canonical index of the concha near ``estimate_c`` (canonical index), or None where the
    window holds no skin or the field of view cuts the ear (CUT_BY_FIELD_OF_VIEW). ``values_c`` (compared with ``threshold``) and the head mask ``head_c``
    are canonical; ``from_bowl_mm``: (posterior, superior) mm from the bowls' centroid."""
    spacing = np.asarray(spacing_c, float)
    centre = np.round(np.asarray(estimate_c, float)).astype(int)
    reach = np.ceil(CROP_MM / spacing).astype(int)
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach + 1, values_c.shape)
    if np.any(hi - lo < 3):
        return None
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    skin = ndi.gaussian_filter(values_c[crop].astype(np.float32), np.maximum(SKIN_SMOOTHING_MM / spacing, 0.8),
                               truncate=2.0) > threshold
    # how far out (voxels from the crop's medial edge) the skin and the head reach per column
    whole_width = 0 if side > 0 else skin.shape[0]
    depth = lateral_extent(skin, side, whole_width)
    head_depth = lateral_extent(np.asarray(head_c[crop], bool), side, whole_width)
    base = np.where(depth >= 0, depth, 0.0)
    size = tuple(max(3, int(BOWL_CLOSING_MM / s)) for s in spacing[1:])
    bowl_mm = ndi.gaussian_filter((ndi.grey_closing(base, size=size) - base) * spacing[0],
                                  BOWL_SMOOTHING_MM / spacing[1:])
    jj, kk = np.meshgrid(np.arange(depth.shape[0]), np.arange(depth.shape[1]), indexing="ij")
    local = centre[1:] - lo[1:]
    window = (np.hypot((jj - local[0]) * spacing[1], (kk - local[1]) * spacing[2]) <= SEARCH_RADIUS_MM) & (depth >= 0)
    if not window.any():
        return None
    at_side = hi[0] == values_c.shape[0] if side > 0 else lo[0] == 0
    if at_side and np.count_nonzero(window & (depth >= skin.shape[0] - 1)) >= CUT_BY_FIELD_OF_VIEW * window.sum():
        return None
    weight = np.where(window, np.maximum(bowl_mm - np.percentile(bowl_mm[window], DEEPEST_PERCENTILE), 0.0), 0.0)
    if weight.sum() <= 0:
        return None
    j = (jj * weight).sum() / weight.sum() + from_bowl_mm[0] / spacing[1]
    k = (kk * weight).sum() / weight.sum() + from_bowl_mm[1] / spacing[2]
    ji = int(np.clip(round(j), 0, depth.shape[0] - 1))
    ki = int(np.clip(round(k), 0, depth.shape[1] - 1))
    if head_depth[ji, ki] < 0:
        return None
    outward = head_depth[ji, ki] - UNDER_SKIN_MM / spacing[0]
    n = skin.shape[0]
    i = outward if side > 0 else n - 1 - outward
    return np.array([i, j, k]) + lo
