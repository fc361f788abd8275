"""The face shield (``defacer deface --shield``, opt-in): a featureless, hollow block of tissue
closing the front of the head after the face cut (used by removal.remove_features).
"""
from __future__ import annotations

import numpy as np

from DeFacerLib.deface.face_cut import behind_the_face
from DeFacerLib.deface.skin_depth import erode_mm, local_box
from DeFacerLib.volume import Volume

# The face shield (opt-in, ``shield=True``): what is left in front of the head after the face
# cut, from well above the brows to below the chin and from temple to temple, is closed by a
# hollow block of the seal's tissue (walls as thick as the seal) up to one flat plane ahead of
# the eyes, so the front of the head is the same featureless block on everyone. Why: removal
# alone cannot go below what the brain's own shape gives away (with every head voxel in front
# of a shell around the brain removed, SFace still names 15-17 % of the IXI heads against a
# gallery defaced the same way; docs/reid_study.md); only a surface that is nobody's hides it.
# Nothing of the head is changed by it: it closes air (and the cut) in front of what the head
# keeps, never a head voxel the cut left, and never the sinuses or airways behind it. Hollow,
# because a registration has to match whatever tissue is added (a solid block put 3.4x the
# voxels in and cost more there; docs/benchmarks.md). The sizes were chosen on the IXI
# re-identification study (docs/reid_study.md): reaching 40 mm back beside the face, SFace
# still named 5 of 54 probes against the same scan; 60 mm (over the temples) 3-4, under the
# 2/N target (4).
SHIELD_AHEAD_OF_EYES_MM = 35.0  # the plane: in front of the brow band the guard keeps
SHIELD_BEHIND_EYES_MM = 60.0  # how far back beside the face (the temples, the cheeks) it fills
SHIELD_HALF_WIDTH_MM = 90.0  # either side of the eyes' midpoint
SHIELD_ABOVE_EYES_MM = 110.0
SHIELD_BELOW_EYES_MM = 130.0
SHIELD_CLEAR_OF_EDGE_VOXELS = 2


def fill_shield(volume: Volume, head: np.ndarray, removed_crop, frame, result: np.ndarray, tissue_stored,
                wall_mm: float) -> tuple[int, tuple | None]:
    """In place: the face shield (SHIELD_*) in ``result``; returns the voxels filled and the
    block's index box (inclusive first and last indices; None: no room for it).

    The block is a box of the voxel grid (its axes the ones closest to the face's forward, up
    and sideways), so each of its faces is a plane of voxels: a block cut square to a tilted face
    would show stair steps, and the same steps on every render of one scan. In it, every voxel
    with nothing of the kept head in front of it along forward (air in front of the face and
    beside it, and the cut) is the block's, up to SHIELD_AHEAD_OF_EYES_MM in front of the eyes;
    of it, the outer wall (``wall_mm``: the seal's thickness, where the block meets air) becomes tissue."""
    eyes, up, forward, _ = frame
    world_per_index = volume.direction  # columns: each voxel axis as a world unit vector
    axis_forward = int(np.argmax(np.abs(world_per_index.T @ forward)))
    rest = [a for a in range(3) if a != axis_forward]
    axis_up = max(rest, key=lambda a: abs(world_per_index[:, a] @ up))
    axis_side = next(a for a in rest if a != axis_up)
    centre = volume.world_to_index(eyes[None, :])[0]
    spacing = np.asarray(volume.spacing_mm, float)
    lo, hi = np.zeros(3), np.zeros(3)
    for axis, unit, (back_mm, front_mm) in (
            (axis_forward, forward, (SHIELD_BEHIND_EYES_MM, SHIELD_AHEAD_OF_EYES_MM)),
            (axis_up, up, (SHIELD_BELOW_EYES_MM, SHIELD_ABOVE_EYES_MM)),
            (axis_side, None, (SHIELD_HALF_WIDTH_MM, SHIELD_HALF_WIDTH_MM))):
        sign = 1.0 if unit is None or world_per_index[:, axis] @ unit > 0 else -1.0
        ends = (centre[axis] - sign * back_mm / spacing[axis], centre[axis] + sign * front_mm / spacing[axis])
        lo[axis], hi[axis] = min(ends), max(ends)
    # a field of view narrower than the block: its faces stay SHIELD_CLEAR_OF_EDGE_VOXELS inside it,
    # else a face of the block is the volume's edge, which a skin render leaves open
    clear = SHIELD_CLEAR_OF_EDGE_VOXELS
    last = np.asarray(volume.shape3) - 1 - clear
    lo = np.clip(np.ceil(lo).astype(int), clear, last)
    hi = np.clip(np.floor(hi).astype(int), clear, last)
    if np.any(lo > hi):
        return 0, None
    box = local_box(lo, hi, (0, 0, 0))
    kept = np.asarray(head)[box].copy()
    if removed_crop is not None:  # the head the cut left
        crop_lo, removed = removed_crop
        crop_hi = np.asarray(crop_lo) + np.asarray(removed.shape) - 1
        a, b = np.maximum(lo, crop_lo), np.minimum(hi, crop_hi)
        if np.all(a <= b):
            kept[local_box(a, b, lo)] &= ~removed[local_box(a, b, crop_lo)]
    fill = ~behind_the_face(kept, volume, forward)
    # hollow: only a wall as thick as the seal, so that the block's outside is all a render sees
    # and a registration has as little new tissue as can be to match (the inside stays air)
    inside = erode_mm(np.pad(fill | kept, 1), wall_mm, volume.spacing_mm)[1:-1, 1:-1, 1:-1]  # walls meet the head
    fill &= ~inside
    result[box][fill] = tissue_stored
    return int(fill.sum()), (tuple(int(v) for v in lo), tuple(int(v) for v in hi))
