"""The guarded removal engine: boxes around features, a shell under the skin, never the brain.

For each feature the removal region is

    box(feature) ∩ {skin depth <= max depth of the feature} ∩ NOT dilate(protected, protect_margin_mm)

and its voxels are set to the image's air value. With the whole face (the default) one more
region joins them: the box spanning the eyes, nose and mouth down past the chin, cut to the
same shell and also flat at a face plane (face_span, face_plane_regions), and under that
box's floor what hangs from the cut over air (the chin's underside, face_cut.chin_overhang,
its box reported as the face's second component box); the deepest
part of every face cut is the seal, set to the head's tissue value (DEFAULT_SEAL_MM), and so
is every face-cut voxel next to the guard (what the guard keeps is not left bare), and so is
the eye visor (EYE_VISOR_*: around the eyes the cut is tissue up to a flat plane just in front
of the corneas); the flat surfaces' voxels get a share of it (anti-aliased, so the new face is
smooth). Only the values of removed voxels differ between these: the replaced region
(RemovalReport.removed_mask) is the cut. Opt-in, the face shield (shield.py) then closes the
air in front of what the head keeps with walls of the same tissue, up to one flat plane ahead
of the eyes: a featureless, hollow block over the front (it adds; it takes nothing the cut
kept). Then
the result is checked: every voxel inside ``protected`` must be byte-identical to the
input, or GuaranteeError is raised and
nothing is returned. The input array is never written to.

Skin depth is negative outside the head, so the region includes the air, noise and motion
ghosts inside the box. That is deliberate: a ghost in front of the face is a shifted copy of
the face (IXI has several), and setting air to the air value adds nothing to the image.

Defaults, from anatomy and the IXI heads (2 mm):
- ``margin_mm = 10``: a segmentation of the eye globe, the nose or the lips underestimates
  what identifies them; 10 mm around the globe reaches the lids, the lid folds and the
  lower brow, around the nose its alar base, around the lips the philtrum and the chin's
  upper edge. More would start to take the forehead and cheeks for no gain.
- ``max_depth_mm = 25``: eyeball centres lie about 12–20 mm below the lid skin and a globe
  is about 24 mm across, so 25 mm takes the front of the orbit including the globe's
  centre; the nose and the lips protrude 15–30 mm, but no point inside them is more than
  about half their width (< 20 mm) from their own skin, so the whole protrusion goes, and
  the flat face behind is cut no deeper than the facial bones. Ears: at most 10 mm
  (EARS_MAX_DEPTH_MM): the pinna is thin and stands off the head, and the temporal lobe
  lies only 13-17 mm under the skin next to it; and, in the ears' boxes grown by PINNA_REACH_MM,
  everything lateral of the head's side outline (pinna.py), which takes a pinna pressed flat
  against the head whole where its base is thicker than 10 mm, and never reaches under the outline.
  What the ears' cut took under the outline is then filled with tissue up to it (smoothed,
  anti-aliased): the side of the head reads as a head without ears, not as a sunken box with
  the pinna's print in its floor.
- ``protect_margin_mm = 5``: the brain segmentation may miss a partial-volume rim of
  1–2 voxels at 2 mm; 5 mm covers that while the skin over the forehead (scalp + skull +
  CSF, about 12–20 mm above the frontal lobes) stays removable. With a *predicted* brain
  (``deep_margin_mm``, set by pipeline.deface_volume) head tissue deeper than DEEP_MM keeps
  DEEP_PROTECT_MARGIN_MM (10 mm) from it, but for the eyes' core: on heads tilted in the scanner
  the predicted brain fell up to 7.5 mm short; the ears' shell keeps its tissue deeper than
  EARS_DEEP_MM 7.5 mm from it (the brain lies 8-10 mm under the skin above some ears).

Speed (a 1 mm head has 13.6 M voxels; the regions are the same, voxel for voxel, as
computing both distance maps over the boxes' union grown by 25 mm): only box voxels can
change, so the depth is decided on the boxes, by one distance transform per group of
overlapping boxes (the face, each ear) grown by ``max_depth_mm`` and cut to the head
(skin_depth.depths_at_most, float64 ties kept); the guard margin is a ball dilation of each
box grown by ``protect_margin_mm`` (skin_depth.dilate_mm_on_box, exact); each feature's components
are labelled inside its own bounding box. The output array keeps the input's memory order
(Fortran for NIfTI), so writing it needs no transposing copy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.air import air_value, tissue_value
from DeFacerLib.deface.face_cut import (
    CHIN_BELOW_MOUTH_MM,
    CHIN_OVERHANG_MM,
    FACE_REGION,
    FaceSpan,
    blend_plane_surface,
    blend_values,
    chin_overhang,
    chin_overhang_box,
    down_axis,
    face_plane_regions,
    face_span,
)
from DeFacerLib.deface.head_mask import head_mask as compute_head_mask
from DeFacerLib.deface.pieces import SECOND_PIECE_MIN_FRACTION, feature_pieces
from DeFacerLib.deface.pinna import SideOutlines
from DeFacerLib.deface.shield import fill_shield
from DeFacerLib.deface.skin_depth import bounding_box, box_bounds, box_corners, depths_at_most, dilate_mm_on_box, dilations_mm_on_box, local_box
from DeFacerLib.errors import GuaranteeError, InputError, check_choices
from DeFacerLib.features import (
    DEFAULT_MARGIN_MM,
    DEFAULT_MAX_DEPTH_MM,
    DEFAULT_PROTECT_MARGIN_MM,
    DEFAULT_SEAL_MM,
    DEFAULT_SHIELD,
    DEFAULT_WHOLE_FACE,
    EARS_MAX_DEPTH_MM,
    FEATURES,
    SEAL_MIN_VOXELS,
)
from DeFacerLib.volume import Volume

# What stands proud of the head's side outline (pinna.py) is cut in each ear box grown by this:
# the U-Net's ear region plus the margin can stop short of the helix rim or the lobule (8 mm
# short on IXI206's left ear).
PINNA_REACH_MM = 15.0
# Deep tissue near the brain is kept farther from it. The U-Net's brain can fall 6-7.5 mm short
# of the reference (past the 5 mm protect margin) on heads tilted 15 degrees in the scanner,
# and there the cuts reached brain (scripts/evaluate_tilted_heads.py, 13 of 108 tilted IXI
# runs, up to 163 voxels): the pinna cut where the skull bulges past the side outline above the
# ear (771 reference-brain voxels of IXI546 lie in its proud mask, 12 mm under the skin), the
# eyes' boxes behind the orbit (the temporal pole, 15-24 mm deep) and the face plane below it.
# Nothing that identifies lies deeper than DEEP_MM next to the brain, except the eye tissue
# under the orbital roof (the eyes' core), so with a predicted brain every cut but the eyes'
# core keeps head tissue deeper than DEEP_MM at least DEEP_PROTECT_MARGIN_MM from the protected
# region (``deep_margin_mm``). The skin, the pinna and the ears' 10 mm shell are shallower and
# keep the 5 mm margin (the shell deeper than EARS_DEEP_MM more, below). A brain mask the user
# gives is trusted as it is (as by the frontal guard): with the exact reference brain, the wider
# margin kept enough of the brow and the orbits' roofs in a face box cut to make IXI162's front
# render match its original again.
DEEP_MM = 10.0
DEEP_PROTECT_MARGIN_MM = 10.0
# The ears' 10 mm shell reaches deeper than the skull above the ear: 20-50 mm above the concha
# the reference brain lies 8.3-10 mm under the skin (IXI255), where only the 5 mm margin kept
# it, and where the U-Net's brain fell short (IXI255 as FLAIR-like and inverted contrasts, with 5
# mm axial slices, turned 15-20 degrees) the shell took 1-80 of its voxels. No pinna lies 8 mm
# under the skin there (the proud cut, which takes the pinna however thick, is not limited), so
# with a predicted brain the ears' shell keeps tissue deeper than EARS_DEEP_MM this much less than
# the deep margin from it (7.5 mm). The full 10 mm took the copies' last voxels too but cost the
# ears' labelled tissue there, scalp within 8-12 mm of the reference brain (IXI162 96 -> 93 %,
# IXI516 97 -> 92 %); 7.5 mm costs none of the 27 IXI heads' 96-100 %.
EARS_DEEP_MM = 8.0
EARS_DEEP_MARGIN_LESS_MM = 2.5
# The seal (features.DEFAULT_SEAL_MM) is not laid in the ears' cut: it is 10 mm deep, so a seal layer would keep a shrunken copy of a
# pinna or concha thicker than 14 mm (the phantom's does). Their cut is instead filled with tissue up to
# the head's side outline (pinna.side_outline_masks): a floor that is nobody's ear.
UNSEALED_FEATURES = ("ears",)
# Where a face cut stops at the guard (the frontal guard, the protected brain grown by its
# margin), the guarded tissue would be the new surface: bone and sinus, darker than skin, which
# the render shows as ragged holes along the brow. So the cut's voxels within the seal's
# thickness of the guard are sealed too (their values only: never more voxels).


def feature_max_depth_mm(feature: str, max_depth_mm: float = DEFAULT_MAX_DEPTH_MM) -> float:
    """How deep below the skin ``feature`` may be cut: ``max_depth_mm``, ears at most EARS_MAX_DEPTH_MM."""
    return min(float(max_depth_mm), EARS_MAX_DEPTH_MM) if feature == "ears" else float(max_depth_mm)

# Paired features keep their two largest pieces (both eyes, both ears; two eyes the model
# joined are split, pieces.py); a second piece under SECOND_PIECE_MIN_FRACTION of the first
# is a stray speck and is ignored.
PAIRED_FEATURES = ("eyes", "ears")


@dataclass
class FeatureRemoval:
    """One feature's cut: whether the feature was given (``present``), voxels removed, and its box
    in voxel indices and LPS millimetres (the sidecar's ``report.features``)."""

    present: bool
    voxels_removed: int = 0
    box_index_min: tuple[int, int, int] | None = None  # inclusive voxel indices, array frame
    box_index_max: tuple[int, int, int] | None = None
    box_world_mm: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # LPS min, max
    component_boxes: list[tuple[tuple[int, int, int], tuple[int, int, int]]] = field(default_factory=list)
    # ears: each component box grown by PINNA_REACH_MM, where only the proud pinna is cut (pinna.py)
    reach_boxes: list[tuple[tuple[int, int, int], tuple[int, int, int]]] = field(default_factory=list)


@dataclass
class RemovalReport:
    """What ``remove_features`` did: each feature's FeatureRemoval, the fill and seal values,
    counts, the shield and the parameters used; ``to_dict`` is the sidecar's ``report``."""

    features: dict[str, FeatureRemoval]
    fill_value_physical: float
    fill_value_stored: float
    total_removed: int  # distinct voxels (per 3D position) set to the fill value
    total_sealed: int  # voxels of the cuts' deepest layer set to the tissue value (seal_mm)
    seal_value_stored: float | None  # that tissue value, stored units (None: no seal)
    protected_voxels: int
    protected_voxels_changed: int = 0  # always 0 in a returned report: the engine raises otherwise
    shield_voxels: int | None = None  # voxels the face shield filled (None: no shield asked or placed)
    shield_box_index: tuple | None = None  # the shield's box: inclusive first and last voxel indices
    parameters: dict = field(default_factory=dict)
    # the replaced voxels: (first index of their crop, boolean mask on it); not in to_dict
    removed_crop: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def missing(self) -> list[str]:
        return [name for name, item in self.features.items() if not item.present]

    def removed_mask(self, shape) -> np.ndarray:
        """Every voxel the removal replaced (with air, the seal or a blend of them), on the
        volume's grid. "Changed" is not the same: a replaced voxel may happen to hold the value
        it gets (air in a sinus, tissue of the seal's value)."""
        mask = np.zeros(tuple(shape), dtype=bool)
        if self.removed_crop is not None:
            lo, crop = self.removed_crop
            mask[tuple(slice(int(a), int(a) + n) for a, n in zip(lo, crop.shape))] = crop
        return mask

    def to_dict(self) -> dict:
        data = dataclasses.asdict(dataclasses.replace(self, removed_crop=None))
        data.pop("removed_crop")
        return _plain(data)


MAX_DISTANCE_MM = 1000.0  # larger than any head; 1e308 mm overflowed to a negative voxel count (internal error)


def distance_is_valid(value_mm: float) -> bool:
    """A margin, depth or seal: a finite number of millimetres, not negative (a negative margin
    would shrink what the user asked to protect or remove), at most MAX_DISTANCE_MM."""
    return (isinstance(value_mm, (int, float, np.floating, np.integer)) and bool(np.isfinite(value_mm))
            and 0 <= value_mm <= MAX_DISTANCE_MM)


def remove_features(
    volume: Volume,
    feature_masks: dict[str, np.ndarray],
    protected: np.ndarray,
    *,
    margin_mm: float = DEFAULT_MARGIN_MM,
    max_depth_mm: float = DEFAULT_MAX_DEPTH_MM,
    protect_margin_mm: float = DEFAULT_PROTECT_MARGIN_MM,
    head: np.ndarray | None = None,
    fill_value: float | None = None,
    whole_face: bool = DEFAULT_WHOLE_FACE,
    seal_mm: float = DEFAULT_SEAL_MM,
    shield: bool = DEFAULT_SHIELD,
    feature_cores: dict[str, np.ndarray] | None = None,
    deep_margin_mm: float = 0.0,
) -> tuple[Volume, RemovalReport]:
    """Remove the near-surface tissue of each feature; return the new Volume and a report.

    ``feature_masks`` maps names from FEATURES to boolean masks in the volume's array frame
    (3D); absent or empty masks are reported as missing. ``protected`` (3D bool) is never
    changed, nor anything within ``protect_margin_mm`` of it. A 4D volume gets the same
    removal in every frame. Ears are cut no deeper than EARS_MAX_DEPTH_MM (feature_max_depth_mm).
    ``whole_face``: also remove the box spanning the chosen face parts (FACE_PARTS) and the
    chin below the mouth, reported as the region "face" (face_span). ``seal_mm``: the
    layer just deeper than each cut (and as guarded) is set to the head's tissue value, so the
    new surface is the cut (0: air only). ``shield``: close the front of the head with a hollow
    block of tissue up to a flat plane ahead of the eyes (SHIELD_*; needs the whole face's eyes
    and mouth or nose), reported as ``shield_voxels`` (None: not placed). ``feature_cores``:
    per feature, tissue its cut takes at any depth inside its boxes (never the guarded): the
    eyes' ellipsoids around the located globes (pipeline.deface_volume), whose back lies deeper
    than ``max_depth_mm`` under deep-set lids; deeper than the shell it becomes the seal.
    ``deep_margin_mm``: head tissue deeper than DEEP_MM (but a core) keeps this far from
    ``protected`` (0: off; a predicted brain gets DEEP_PROTECT_MARGIN_MM, pipeline.deface_volume).
    Raises InputError for masks of the wrong shape or unknown feature names, GuaranteeError
    if a protected voxel would change.
    """
    name = volume.source.path if volume.source is not None and volume.source.path else "volume"
    shape = volume.shape3
    protected = as_mask(protected, shape, "protected mask", name)
    feature_cores = {feature: as_mask(core, shape, f"{feature} core", name)
                     for feature, core in (feature_cores or {}).items() if core is not None}
    check_choices("feature", sorted(feature_masks), FEATURES, InputError, where=f"{name}: ")
    for option, value in (("margin_mm", margin_mm), ("max_depth_mm", max_depth_mm),
                          ("protect_margin_mm", protect_margin_mm), ("seal_mm", seal_mm),
                          ("deep_margin_mm", deep_margin_mm)):
        if not distance_is_valid(value):
            raise InputError(f"{option} must be a finite distance >= 0 mm and <= {MAX_DISTANCE_MM:g} mm (got {value})")
    deep_margin_mm = max(protect_margin_mm, deep_margin_mm) if deep_margin_mm > 0 else 0.0  # never under the margin

    features, boxes = _feature_boxes(volume, feature_masks, margin_mm, name)
    if head is None and boxes:
        head = compute_head_mask(volume)
    face = face_span(volume, head, boxes) if whole_face and boxes else None
    span = face.box if face is not None else None
    if span is not None:
        boxes[FACE_REGION] = [span]
        features[FACE_REGION] = _removal_of(volume, [span])

    if fill_value is None:
        fill_value = air_value(volume, head) if boxes else 0.0
    stored = volume.stored_value(fill_value)
    seal_stored = volume.stored_value(tissue_value(volume, head)) if boxes and seal_mm > 0 else None
    result = volume.array.copy(order="K")  # keep the reader's memory order: no transposing copy, faster writing
    cut = None
    if boxes:
        head = as_mask(head, shape, "head mask", name)
        guard = _Guard(protected, head, volume.spacing_mm, protect_margin_mm, deep_margin_mm, feature_cores.get("eyes"))
        seal = seal_thickness_mm(seal_mm, volume.spacing_mm) if seal_stored is not None else 0.0
        cut = _plan_cut(volume, head, guard, boxes, face, features, feature_cores, max_depth_mm, seal)
        cut.write(result, stored, seal_stored)

    shield_voxels = shield_box = None
    if shield and face is not None:
        frame = face.frame
        if frame is not None:
            tissue = seal_stored if seal_stored is not None else volume.stored_value(tissue_value(volume, head))
            shield_voxels, shield_box = fill_shield(volume, head, cut.crop if cut else None, frame, result, tissue,
                                                    seal_thickness_mm(DEFAULT_SEAL_MM, volume.spacing_mm))
    verify_protected_unchanged(volume.array, result, protected, name)
    report = RemovalReport(
        features=features,
        fill_value_physical=float(float(stored) * volume.slope + volume.intercept),
        fill_value_stored=float(stored),
        total_removed=cut.total if cut else 0,
        total_sealed=cut.sealed if cut else 0,
        seal_value_stored=None if seal_stored is None else float(seal_stored),
        protected_voxels=int(np.count_nonzero(protected)),
        protected_voxels_changed=0,
        shield_voxels=shield_voxels,
        shield_box_index=shield_box,
        removed_crop=cut.crop if cut else None,
        parameters={
            "margin_mm": float(margin_mm),
            "max_depth_mm": float(max_depth_mm),
            "max_depth_mm_per_feature": {f: feature_max_depth_mm(f, max_depth_mm) for f in FEATURES},
            "deep_margin_mm": float(deep_margin_mm),
            "protect_margin_mm": float(protect_margin_mm),
            "fill_value_requested": float(fill_value),
            "paired_features": list(PAIRED_FEATURES),
            "whole_face": bool(whole_face),
            "seal_mm": seal_thickness_mm(seal_mm, volume.spacing_mm),
            "chin_below_mouth_mm": CHIN_BELOW_MOUTH_MM,
            "chin_overhang_mm": CHIN_OVERHANG_MM,
            "shield": bool(shield),
        },
    )
    return volume.with_array(result), report


def changed_region_mask(report: dict, shape) -> np.ndarray:
    """Every voxel the removal (and the shield) may have changed, from a report or a sidecar's
    ``report`` alone: the union of the recorded boxes (each feature's components grown by the
    margin, the ears' reach, the whole face's box, the shield's box). Boxes, not the cut's
    voxels: the cut's deep boundary follows the face at a fixed depth, so it would keep a copy
    of the face's shape. For masking the defaced region out of a registration's metric or an
    analysis (docs/benchmarks.md, registration)."""
    mask = np.zeros(tuple(int(n) for n in shape[:3]), dtype=bool)
    boxes = [box for entry in report.get("features", {}).values() if entry.get("present")
             for box in [*entry.get("component_boxes", []), *entry.get("reach_boxes", [])]]
    if report.get("shield_box_index"):
        boxes.append(report["shield_box_index"])
    for lo, hi in boxes:
        mask[tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))] = True
    return mask


def verify_protected_unchanged(original: np.ndarray, result: np.ndarray, protected: np.ndarray,
                               name: str = "volume") -> None:
    """Raise GuaranteeError unless every protected voxel (all frames) is byte-identical."""
    if original.shape != result.shape or original.dtype != result.dtype:
        raise GuaranteeError(f"{name}: the defaced array changed shape or type "
                             f"({original.shape} {original.dtype} -> {result.shape} {result.dtype}); nothing written")
    before = np.ascontiguousarray(original[protected])
    after = np.ascontiguousarray(result[protected])
    if before.tobytes() == after.tobytes():
        return
    count = before.shape[0]
    changed = int((before.view(np.uint8).reshape(count, -1) != after.view(np.uint8).reshape(count, -1)).any(axis=1).sum())
    raise GuaranteeError(f"{name}: {changed} protected (brain) voxel(s) would change; nothing written "
                         "(report this as a bug)")


def seal_thickness_mm(seal_mm: float, spacing_mm) -> float:
    """The seal actually laid: ``seal_mm``, but at least SEAL_MIN_VOXELS of the coarsest axis (0: none)."""
    return float(max(seal_mm, SEAL_MIN_VOXELS * float(np.max(spacing_mm)))) if seal_mm > 0 else 0.0


# ---- the cut ----------------------------------------------------------------------------

def _feature_boxes(volume: Volume, feature_masks: dict, margin_mm: float, name: str):
    """Per feature asked for, its FeatureRemoval (box, components) and its boxes: the largest
    component(s) (both eyes, both ears) grown by ``margin_mm``; an absent or empty mask is missing."""
    features: dict[str, FeatureRemoval] = {}
    boxes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    margin_vox = np.ceil(margin_mm / volume.spacing_mm).astype(int)
    last = np.asarray(volume.shape3) - 1
    for feature in (f for f in FEATURES if f in feature_masks):  # only the features asked for
        mask = feature_masks[feature]
        components = [] if mask is None else _component_boxes(
            as_mask(mask, volume.shape3, f"{feature} mask", name), volume.spacing_mm, feature,
            keep=2 if feature in PAIRED_FEATURES else 1)
        if not components:
            features[feature] = FeatureRemoval(present=False)
            continue
        boxes[feature] = [(np.maximum(lo - margin_vox, 0), np.minimum(hi + margin_vox, last)) for lo, hi in components]
        features[feature] = _removal_of(volume, boxes[feature])
    return features, boxes


def _removal_of(volume: Volume, boxes: list) -> FeatureRemoval:
    """A present feature's report entry: the box around its ``boxes``, in voxels and in the world."""
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return FeatureRemoval(present=True, box_index_min=tuple(int(v) for v in lo), box_index_max=tuple(int(v) for v in hi),
                          box_world_mm=_world_bounds(volume, lo, hi),
                          component_boxes=[(tuple(int(v) for v in a), tuple(int(v) for v in b)) for a, b in boxes])


def _key(lo, hi) -> tuple:
    return (tuple(int(v) for v in lo), tuple(int(v) for v in hi))


class _Guard:
    """What every cut keeps, on any box: the protected region grown by the protect margin, and
    head tissue deeper than DEEP_MM (but the eyes' core) within ``deep_margin_mm`` of it.

    Only box voxels can change, so the guard is needed on the boxes alone, each from a distance
    transform over the box grown by its own reach: exact there, so a box inside one already
    done is a slice of it (the eyes, nose and mouth lie mostly inside the face span, done first)."""

    def __init__(self, protected, head, spacing_mm, protect_margin_mm, deep_margin_mm, eye_core):
        self.protected, self.head, self.spacing = protected, head, np.asarray(spacing_mm, float)
        self.protect_margin_mm, self.deep_margin_mm, self.eye_core = protect_margin_mm, deep_margin_mm, eye_core
        self._kept: dict[tuple, np.ndarray] = {}

    def with_growths(self, lo, hi, *extra_mm) -> list[np.ndarray]:
        """On the box: the guard, then the protected region grown by each of ``extra_mm``; one
        distance transform for all. The guard is remembered for the box."""
        box = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
        radii = [r for r in (self.protect_margin_mm, self.deep_margin_mm, *extra_mm) if r > 0]
        grown = dict(zip(radii, dilations_mm_on_box(self.protected, radii, self.spacing, (lo, hi)))) if radii else {}
        near = grown[self.protect_margin_mm] if self.protect_margin_mm > 0 else self.protected[box].copy()
        if self.deep_margin_mm > 0:
            shallow, = _within_depths(self.head, (DEEP_MM,), self.spacing, (lo, hi))
            deep_near = grown[self.deep_margin_mm] & ~shallow
            if self.eye_core is not None:
                deep_near &= ~self.eye_core[box]
            near = near | deep_near
        self._kept.setdefault(_key(lo, hi), near)
        return [near, *(grown[r] for r in extra_mm)]

    def ears_deep(self, lo, hi) -> np.ndarray:
        """On an ear's box, what its shell keeps besides the guard: head tissue deeper than
        EARS_DEEP_MM within the deep margin less EARS_DEEP_MARGIN_LESS_MM of the protected region
        (nothing without the deep margin: a brain the user gives is trusted as it is)."""
        margin_mm = self.deep_margin_mm - EARS_DEEP_MARGIN_LESS_MM
        if self.deep_margin_mm <= 0 or margin_mm <= 0:
            return np.zeros(tuple(int(b) - int(a) + 1 for a, b in zip(lo, hi)), dtype=bool)
        shallow, = _within_depths(self.head, (EARS_DEEP_MM,), self.spacing, (lo, hi))
        # one distance transform, as the guard's: dilate_mm_on_box first lays out the whole ball,
        # 7.4 GiB for --protect-margin-mm 1000 (the deep margin grows with it)
        near, = dilations_mm_on_box(self.protected, (margin_mm,), self.spacing, (lo, hi))
        return near & ~shallow

    def on(self, lo, hi) -> np.ndarray:
        key = _key(lo, hi)
        if key not in self._kept:
            outer = next((k for k in self._kept if all(a <= b for a, b in zip(k[0], key[0]))
                          and all(a >= b for a, b in zip(k[1], key[1]))), None)
            if outer is None:
                return self.with_growths(lo, hi)[0]
            self._kept[key] = self._kept[outer][local_box(key[0], key[1], outer[0])]
        return self._kept[key]


@dataclass
class _Cut:
    """The voxels the removal replaces, on the crop every box (and the ears' reach) fits in:
    ``removal`` every one, ``air`` those that become air (the rest: the seal's tissue), and the
    anti-aliased surfaces' shares (the face plane on the span, the ears' floor)."""

    lo: np.ndarray
    removal: np.ndarray
    air: np.ndarray
    span_local: tuple | None = None
    plane_share: np.ndarray | None = None
    ear_share: tuple | None = None  # (indices on the crop, shares): the few voxels the floor straddles

    def local(self, lo, hi) -> tuple:
        return local_box(lo, hi, self.lo)

    @property
    def slices(self) -> tuple:
        return tuple(slice(int(a), int(a) + n) for a, n in zip(self.lo, self.removal.shape))

    @property
    def crop(self) -> tuple:
        return (tuple(int(v) for v in self.lo), self.removal)

    @property
    def total(self) -> int:
        return int(self.removal.sum())

    @property
    def sealed(self) -> int:
        return int((self.removal & ~self.air).sum())

    def write(self, result: np.ndarray, air_stored, seal_stored) -> None:
        """In place: the seal (where one cut reaches deeper than another's seal, that voxel is
        air), the air, then the anti-aliased surfaces' blends."""
        view = result[self.slices]
        if seal_stored is not None:
            view[self.removal & ~self.air] = seal_stored
        view[self.air] = air_stored
        if seal_stored is not None and self.plane_share is not None:
            blend_plane_surface(view[self.span_local], self.removal[self.span_local], self.plane_share,
                                air_stored, seal_stored)
        if seal_stored is not None and self.ear_share is not None:  # the ears' floor
            straddle, share = self.ear_share
            blended = blend_values(share, air_stored, seal_stored, result.dtype)
            view[straddle] = blended[:, None] if result.ndim == 4 else blended


def _plan_cut(volume: Volume, head, guard: _Guard, boxes: dict, face, features: dict, feature_cores: dict,
              max_depth_mm: float, seal_mm: float) -> _Cut:
    """Every cut (the shells under the skin, the ears' pinna, the face plane), on one crop;
    each feature's FeatureRemoval gets its voxel count. ``face``: face_span's FaceSpan or None."""
    span, in_face = (face.box, face.in_face) if face is not None else (None, None)
    shape = np.asarray(volume.shape3)
    reach_vox = np.ceil(PINNA_REACH_MM / volume.spacing_mm).astype(int)
    pinna_boxes = [(np.maximum(lo - reach_vox, 0), np.minimum(hi + reach_vox, shape - 1)) for lo, hi in boxes.get("ears", [])]
    if pinna_boxes:
        features["ears"].reach_boxes = [_key(a, b) for a, b in pinna_boxes]
    slab = chin_overhang_box(volume, face.voxel_box) if face is not None else None  # under it: the chin's overhang
    every = [b for bl in [*boxes.values(), pinna_boxes, [slab] if slab else []] for b in bl]
    lo, hi = np.min([b[0] for b in every], axis=0), np.max([b[1] for b in every], axis=0)
    crop_shape = tuple(int(v) for v in hi - lo + 1)
    cut = _Cut(lo, np.zeros(crop_shape, dtype=bool), np.zeros(crop_shape, dtype=bool))

    span_seal_guard = None  # the protected region grown by the margin and the seal, on the span
    if span is not None and seal_mm and guard.protect_margin_mm > 0:  # from the span's one distance transform
        span_seal_guard = guard.with_growths(*span, guard.protect_margin_mm + seal_mm)[1]
    elif span is not None:
        guard.on(*span)
    for box in pinna_boxes:  # before the ears' own boxes, which lie inside them: those are slices
        guard.on(*box)
    face_limit = {FACE_REGION: in_face} if face is not None else {}
    _cut_shells(cut, volume, head, guard, boxes, features, feature_cores, max_depth_mm, seal_mm, face_limit)
    if pinna_boxes:
        _cut_pinnae(cut, volume, head, guard, pinna_boxes, face, features, sealed=seal_mm > 0)
    if span is not None:
        cut.span_local = cut.local(*span)
        plane_cut, plane_air, visor, cut.plane_share = face_plane_regions(volume, head, guard.on(*span), face.frame,
                                                                         span, seal_mm, in_face)
        removal, air = cut.removal[cut.span_local], cut.air[cut.span_local]
        features[FACE_REGION].voxels_removed += int((plane_cut & ~removal).sum())
        removal |= plane_cut
        air |= plane_air
        air &= ~visor  # the eye boxes' own cuts too: the visor is one flat surface
        if seal_mm:  # what the guard keeps is not left bare either
            air &= ~(span_seal_guard if span_seal_guard is not None
                     else dilate_mm_on_box(guard.protected, guard.protect_margin_mm + seal_mm, guard.spacing, span))
    if slab is not None:
        _cut_chin_overhang(cut, volume, head, guard, face, slab, features)
    return cut


def _cut_chin_overhang(cut: _Cut, volume: Volume, head, guard: _Guard, face: FaceSpan, slab, features: dict) -> None:
    """In place: what hangs under the cut floor of the face's box along the voxel axes
    (face_cut.chin_overhang) becomes air; the whole face's report gets its voxels and their box."""
    axis, down = down_axis(volume)
    floor_lo, floor_hi = np.array(face.voxel_box[0]), np.array(face.voxel_box[1])
    floor_lo[axis] = floor_hi[axis] = floor_lo[axis] if down < 0 else floor_hi[axis]
    floor_cut = np.take(cut.removal[cut.local(floor_lo, floor_hi)], 0, axis=axis)
    head_slab = np.asarray(head)[tuple(slice(int(a), int(b) + 1) for a, b in zip(*slab))]
    ends_at_edge = slab[0][axis] == 0 if down < 0 else slab[1][axis] == volume.shape3[axis] - 1
    overhang = chin_overhang(head_slab, floor_cut, axis, down, ends_at_edge) & ~guard.on(*slab)
    if not overhang.any():
        return
    local = cut.local(*slab)
    cut.removal[local] |= overhang
    cut.air[local] |= overhang
    found = np.argwhere(overhang)
    box = (np.asarray(slab[0]) + found.min(axis=0), np.asarray(slab[0]) + found.max(axis=0))
    removed = features[FACE_REGION].voxels_removed + int(overhang.sum())
    features[FACE_REGION] = dataclasses.replace(_removal_of(volume, [face.box, box]), voxels_removed=removed)


def _cut_shells(cut: _Cut, volume: Volume, head, guard: _Guard, boxes: dict, features: dict, feature_cores: dict,
                max_depth_mm: float, seal_mm: float, limits: dict | None = None) -> None:
    """In place: each feature's box cut to its shell under the skin (feature_max_depth_mm) and
    clear of the guard, plus its core at any depth; the shell's deepest ``seal_mm`` is the seal.
    ``limits``: per feature with one box, the voxels of that box it may cut (else all)."""
    limits = limits or {}
    spacing = np.asarray(volume.spacing_mm, float)
    depths = {feature: feature_max_depth_mm(feature, max_depth_mm) for feature in boxes}
    for depth in sorted(set(depths.values())):
        shell = np.zeros(cut.removal.shape, dtype=bool)
        shallow = np.zeros(cut.removal.shape, dtype=bool)  # above the shell's deepest seal_mm
        allowed = np.zeros(cut.removal.shape, dtype=bool)
        distinct = _distinct_boxes({f: b for f, b in boxes.items() if depths[f] == depth})
        for lo, hi in _depth_groups(distinct, depth, spacing, np.asarray(volume.shape3)):
            local = cut.local(lo, hi)
            if seal_mm:  # one distance transform for both depths
                shell[local], shallow[local] = _within_depths(head, (depth, depth - seal_mm), spacing, (lo, hi))
            else:
                shell[local], = _within_depths(head, (depth,), spacing, (lo, hi))
                shallow[local] = shell[local]
        ear_boxes = {_key(lo, hi) for lo, hi in boxes.get("ears", [])}
        for lo, hi in distinct:
            local = cut.local(lo, hi)
            kept = guard.on(lo, hi)
            if _key(lo, hi) in ear_boxes:
                kept = kept | guard.ears_deep(lo, hi)
            allowed[local] |= shell[local] & ~kept
        for feature in (f for f in boxes if depths[f] == depth):
            region = np.zeros(cut.removal.shape, dtype=bool)
            for lo, hi in boxes[feature]:
                region[cut.local(lo, hi)] = limits[feature] if feature in limits else True
            core = feature_cores.get(feature)
            region &= allowed
            for lo, hi in boxes[feature] if core is not None else ():  # its core, at any depth
                region[cut.local(lo, hi)] |= core[tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))] & ~guard.on(lo, hi)
            features[feature].voxels_removed = int(region.sum())
            cut.removal |= region
            cut.air |= region if feature in UNSEALED_FEATURES else region & shallow


def _cut_pinnae(cut: _Cut, volume: Volume, head, guard: _Guard, pinna_boxes: list, face, features: dict,
                sealed: bool) -> None:
    """In place: around the ears' boxes, all of the pinna however thick (what stands proud of
    the head's side outline, pinna.py); with a seal, the ears' cut under the outline becomes a
    floor of tissue up to it, anti-aliased (``cut.ear_share``), not on the face (``face``:
    face_span's FaceSpan or None)."""
    span, in_face = (face.box, face.in_face) if face is not None else (None, None)
    outlines = SideOutlines(volume, head)
    pinna = np.zeros(cut.removal.shape, dtype=bool)
    ear_floor = np.zeros(cut.removal.shape, dtype=bool)
    ear_share = np.full(cut.removal.shape, np.nan, np.float32)
    for lo, hi in pinna_boxes:
        proud, under, floor_share = outlines.on_box(lo, hi)
        local = cut.local(lo, hi)
        pinna[local] |= proud & ~guard.on(lo, hi)
        ear_floor[local] |= under
        ear_share[local] = np.where(np.isnan(ear_share[local]), floor_share, ear_share[local])
    pinna &= ~cut.removal
    features["ears"].voxels_removed += int(pinna.sum())
    cut.removal |= pinna
    cut.air |= pinna
    if sealed:
        if span is not None:
            ear_floor[cut.local(*span)] &= ~in_face
            ear_share[cut.local(*span)][in_face] = np.nan
        ear_floor &= cut.removal
        cut.air &= ~ear_floor
        ear_share[~(cut.removal & cut.air)] = np.nan
        straddle = np.nonzero(np.isfinite(ear_share))  # kept sparse: float32 on the whole crop was
        cut.ear_share = (straddle, ear_share[straddle])  # 0.2 GB of a 0.5 mm head's peak


# ---- helpers -----------------------------------------------------------------------------

def as_mask(mask, shape, what: str, name: str) -> np.ndarray:
    """``mask`` as booleans on the volume's grid, or one line naming ``what`` and ``name`` when its
    shape differs (numpy's broadcast error, or a silent broadcast, otherwise)."""
    array = np.asarray(mask)
    if array.shape != tuple(shape):
        raise InputError(f"{name}: the {what} has shape {array.shape}, the volume {tuple(shape)}; "
                         "give masks on the volume's own grid")
    return array.astype(bool, copy=False)


def _component_boxes(mask: np.ndarray, spacing_mm, feature: str, keep: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bounding boxes (inclusive index min, max) of the largest piece(s) (pieces.feature_pieces)."""
    box = bounding_box(mask)  # the mask's own box: label only that
    if box is None:
        return []
    offset = np.array([s.start for s in box])
    labels, count = feature_pieces(mask[box], spacing_mm, feature)
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes)[:keep]
    chosen = [int(order[0])] + [int(i) for i in order[1:] if sizes[i] >= SECOND_PIECE_MIN_FRACTION * sizes[order[0]]]
    slices = ndi.find_objects(labels)
    return [tuple(offset + np.array(bound) for bound in box_bounds(slices[i])) for i in chosen]


def _distinct_boxes(boxes: dict[str, list]) -> list[tuple[np.ndarray, np.ndarray]]:
    seen: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for feature_boxes in boxes.values():
        for lo, hi in feature_boxes:
            seen.setdefault((tuple(lo), tuple(hi)), (lo, hi))
    return list(seen.values())


def _depth_groups(distinct, reach_mm: float, spacing: np.ndarray, shape: np.ndarray):
    """The boxes merged into groups whose own bounding box is cheaper to transform (grown by
    the depth's reach) than its members apart: the face's boxes overlap and go together, the
    ears stay apart instead of dragging the whole width of the head into one transform."""
    reach = np.ceil(reach_mm / spacing).astype(int) + 1

    def cost(lo, hi):
        return float(np.prod(np.minimum(hi + reach, shape - 1) - np.maximum(lo - reach, 0) + 1))

    groups = [(np.asarray(lo), np.asarray(hi)) for lo, hi in distinct]
    merged = True
    while merged and len(groups) > 1:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                lo = np.minimum(groups[i][0], groups[j][0])
                hi = np.maximum(groups[i][1], groups[j][1])
                if cost(lo, hi) <= cost(*groups[i]) + cost(*groups[j]):
                    groups[i] = (lo, hi)
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return groups


def _within_depths(head: np.ndarray, max_depths_mm, spacing: np.ndarray, box) -> list[np.ndarray]:
    """Per depth, skin_depth_mm(head) <= depth on ``box``: every voxel outside the head
    (negative depth), and head voxels no deeper than it, decided as thresholding the float64
    distance transform (skin_depth.depths_at_most: one transform of the box grown by the
    largest depth instead of one of the whole volume per depth)."""
    inside = head[tuple(slice(int(a), int(b) + 1) for a, b in zip(*box))]
    return [~inside | shallow for shallow in depths_at_most(head, spacing, max_depths_mm, box=box)]


def _world_bounds(volume: Volume, lo: np.ndarray, hi: np.ndarray):
    world = volume.index_to_world(box_corners(lo, hi))
    return (tuple(float(v) for v in world.min(axis=0)), tuple(float(v) for v in world.max(axis=0)))


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
