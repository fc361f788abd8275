"""The guarded removal engine: boxes around features, a shell under the skin, never the brain.

For each feature the removal region is

    box(feature) ∩ {skin depth <= max_depth_mm} ∩ NOT dilate(protected, protect_margin_mm)

and its voxels are set to the image's air value. Then the result is checked: every voxel
inside ``protected`` must be byte-identical to the input, or GuaranteeError is raised and
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
  the flat face behind is cut no deeper than the facial bones.
- ``protect_margin_mm = 5``: the brain segmentation may miss a partial-volume rim of
  1–2 voxels at 2 mm; 5 mm covers that while the skin over the forehead (scalp + skull +
  CSF, about 12–20 mm above the frontal lobes) stays removable.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.air import air_value
from DeFacerLib.deface.head_mask import head_mask as compute_head_mask
from DeFacerLib.errors import GuaranteeError, InputError
from DeFacerLib.features import FEATURES
from DeFacerLib.volume import Volume

DEFAULT_MARGIN_MM = 10.0
DEFAULT_MAX_DEPTH_MM = 25.0
DEFAULT_PROTECT_MARGIN_MM = 5.0

# Paired features keep their two largest components (both eyes, both ears); a second
# component smaller than this fraction of the first is a stray speck and is ignored.
PAIRED_FEATURES = ("eyes", "ears")
SECOND_COMPONENT_MIN_FRACTION = 0.1


@dataclass
class FeatureRemoval:
    present: bool
    voxels_removed: int = 0
    box_index_min: tuple[int, int, int] | None = None  # inclusive voxel indices, array frame
    box_index_max: tuple[int, int, int] | None = None
    box_world_mm: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # LPS min, max
    component_boxes: list[tuple[tuple[int, int, int], tuple[int, int, int]]] = field(default_factory=list)


@dataclass
class RemovalReport:
    features: dict[str, FeatureRemoval]
    fill_value_physical: float
    fill_value_stored: float
    total_removed: int  # distinct voxels (per 3D position) set to the fill value
    protected_voxels: int
    protected_voxels_changed: int = 0  # always 0 in a returned report: the engine raises otherwise
    parameters: dict = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [name for name, item in self.features.items() if not item.present]

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


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
) -> tuple[Volume, RemovalReport]:
    """Remove the near-surface tissue of each feature; return the new Volume and a report.

    ``feature_masks`` maps names from FEATURES to boolean masks in the volume's array frame
    (3D); absent or empty masks are reported as missing. ``protected`` (3D bool) is never
    changed, nor anything within ``protect_margin_mm`` of it. A 4D volume gets the same
    removal in every frame. Raises InputError for masks of the wrong shape or unknown
    feature names, GuaranteeError if a protected voxel would change.
    """
    name = volume.source.path if volume.source is not None and volume.source.path else "volume"
    shape = volume.shape3
    spacing = volume.spacing_mm
    protected = _as_mask(protected, shape, "protected mask", name)
    unknown = sorted(set(feature_masks) - set(FEATURES))
    if unknown:
        raise InputError(f"{name}: unknown feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURES)}")

    features: dict[str, FeatureRemoval] = {}
    boxes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    margin_vox = np.ceil(margin_mm / spacing).astype(int)
    for feature in (f for f in FEATURES if f in feature_masks):  # only the features asked for
        mask = feature_masks[feature]
        if mask is None:
            features[feature] = FeatureRemoval(present=False)
            continue
        mask = _as_mask(mask, shape, f"{feature} mask", name)
        component_boxes = _component_boxes(mask, keep=2 if feature in PAIRED_FEATURES else 1)
        if not component_boxes:
            features[feature] = FeatureRemoval(present=False)
            continue
        grown = [(np.maximum(lo - margin_vox, 0), np.minimum(hi + margin_vox, np.asarray(shape) - 1))
                 for lo, hi in component_boxes]
        boxes[feature] = grown
        lo = np.min([b[0] for b in grown], axis=0)
        hi = np.max([b[1] for b in grown], axis=0)
        features[feature] = FeatureRemoval(
            present=True,
            box_index_min=tuple(int(v) for v in lo),
            box_index_max=tuple(int(v) for v in hi),
            box_world_mm=_world_bounds(volume, lo, hi),
            component_boxes=[(tuple(int(v) for v in a), tuple(int(v) for v in b)) for a, b in grown],
        )

    if head is None and boxes:
        head = compute_head_mask(volume)
    if fill_value is None:
        fill_value = air_value(volume, head) if boxes else 0.0
    stored = volume.stored_value(fill_value)
    result = volume.array.copy()
    total = 0

    if boxes:
        head = _as_mask(head, shape, "head mask", name)
        reach_vox = np.ceil(max(max_depth_mm, protect_margin_mm) / spacing).astype(int) + 1
        crop_lo = np.maximum(np.min([b[0] for bl in boxes.values() for b in bl], axis=0) - reach_vox, 0)
        crop_hi = np.minimum(np.max([b[1] for bl in boxes.values() for b in bl], axis=0) + reach_vox,
                             np.asarray(shape) - 1)
        crop = tuple(slice(int(a), int(b) + 1) for a, b in zip(crop_lo, crop_hi))
        # Within the crop, every outside-head voxel that is max_depth_mm from a box voxel, and
        # every protected voxel within protect_margin_mm of one, is present: the distances
        # that decide are exact.
        shell = _within_depth(head[crop], max_depth_mm, spacing)
        guard = _near(protected[crop], protect_margin_mm, spacing)
        allowed = shell & ~guard
        removal = np.zeros(allowed.shape, dtype=bool)
        for feature, feature_boxes in boxes.items():
            region = np.zeros(allowed.shape, dtype=bool)
            for lo, hi in feature_boxes:
                region[tuple(slice(int(a - c), int(b - c) + 1) for a, b, c in zip(lo, hi, crop_lo))] = True
            region &= allowed
            features[feature].voxels_removed = int(region.sum())
            removal |= region
        result[crop][removal] = stored
        total = int(removal.sum())

    verify_protected_unchanged(volume.array, result, protected, name)
    report = RemovalReport(
        features=features,
        fill_value_physical=float(float(stored) * volume.slope + volume.intercept),
        fill_value_stored=float(stored),
        total_removed=total,
        protected_voxels=int(protected.sum()),
        protected_voxels_changed=0,
        parameters={
            "margin_mm": float(margin_mm),
            "max_depth_mm": float(max_depth_mm),
            "protect_margin_mm": float(protect_margin_mm),
            "fill_value_requested": float(fill_value),
            "paired_features": list(PAIRED_FEATURES),
        },
    )
    return volume.with_array(result), report


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


# ---- helpers -----------------------------------------------------------------------------

def _as_mask(mask, shape, what: str, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.shape != tuple(shape):
        raise InputError(f"{name}: the {what} has shape {array.shape}, the volume {tuple(shape)}; "
                         "give masks on the volume's own grid")
    return array.astype(bool, copy=False)


def _component_boxes(mask: np.ndarray, keep: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bounding boxes (inclusive index min, max) of the largest component(s), 26-connected."""
    if not mask.any():
        return []
    labels, count = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes)[:keep]
    chosen = [int(order[0])] + [int(i) for i in order[1:] if sizes[i] >= SECOND_COMPONENT_MIN_FRACTION * sizes[order[0]]]
    slices = ndi.find_objects(labels)
    return [(np.array([s.start for s in slices[i]]), np.array([s.stop - 1 for s in slices[i]])) for i in chosen]


def _within_depth(head: np.ndarray, max_depth_mm: float, spacing: np.ndarray) -> np.ndarray:
    """skin_depth_mm(head) <= max_depth_mm, with one distance transform instead of two:
    every voxel outside the head has a negative depth."""
    if not head.any():
        return np.ones(head.shape, dtype=bool)
    if head.all():
        return np.zeros(head.shape, dtype=bool)
    return ~head | (ndi.distance_transform_edt(head, sampling=spacing) <= max_depth_mm)


def _near(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """mask dilated by radius_mm (Euclidean, in mm: anisotropic voxels handled)."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    if radius_mm <= 0:
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def _world_bounds(volume: Volume, lo: np.ndarray, hi: np.ndarray):
    corners = np.array([[(lo, hi)[b][axis] for axis, b in enumerate(bits)]
                        for bits in np.ndindex(2, 2, 2)], dtype=float)
    world = volume.index_to_world(corners)
    return (tuple(float(v) for v in world.min(axis=0)), tuple(float(v) for v in world.max(axis=0)))


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
