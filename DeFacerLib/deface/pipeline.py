"""One way through for defacing a Volume, shared by the CLI, the batch runner and Slicer.

read -> head mask -> feature masks -> guarded removal -> Volume + report. Reading and
writing stay with the caller so that Slicer can hand over its own nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from DeFacerLib.errors import FaceNotFound, GuaranteeError, InputError, UsageError
from DeFacerLib.features import BRAIN, DEFAULT_PROTECT_MARGIN_MM, FEATURES, LABEL_VALUES, parse_features
from DeFacerLib.volume import Volume

Progress = Callable[[str, float], None]


def _no_progress(message: str, fraction: float) -> None:
    return None


@dataclass
class DefaceParameters:
    """What the user chose. ``None`` means the removal engine's documented default."""

    features: tuple[str, ...] = FEATURES
    margin_mm: float | None = None
    max_depth_mm: float | None = None
    protect_margin_mm: float | None = None
    whole_face: bool | None = None  # also the tissue between the face parts (face_cut.face_span)
    seal_mm: float | None = None  # tissue-valued bottom of each face cut (removal.DEFAULT_SEAL_MM); 0: air only
    shield: bool | None = None  # the face shield: a featureless, hollow block over the front (shield.SHIELD_*)

    def __post_init__(self):
        """``features``: names or a comma list (features.parse_features). A shield asked for must be
        placeable: it closes the front after the whole-face cut and is placed from the eyes and the
        nose or mouth (else it was silently left out, exit 0)."""
        self.features = parse_features(self.features)
        if self.shield and self.whole_face is False:
            raise UsageError("the face shield closes the front after the whole-face cut: --shield cannot go with "
                             "--no-whole-face")
        if self.shield and ("eyes" not in self.features or not {"nose", "mouth"} & set(self.features)):
            raise UsageError("the face shield is placed from the eyes and the nose or mouth: --shield needs them "
                             f"in --features (given: {','.join(self.features)})")

    def engine_kwargs(self) -> dict:
        chosen = {
            "margin_mm": self.margin_mm,
            "max_depth_mm": self.max_depth_mm,
            "protect_margin_mm": self.protect_margin_mm,
            "whole_face": self.whole_face,
            "seal_mm": self.seal_mm,
            "shield": self.shield,
        }
        return {name: value for name, value in chosen.items() if value is not None}


@dataclass
class DefaceResult:
    volume: Volume
    report: dict
    features_removed: list[str] = field(default_factory=list)
    features_missing: list[str] = field(default_factory=list)
    removed: np.ndarray | None = None  # every voxel the removal replaced (RemovalReport.removed_mask)


def same_grid(a: Volume, b: Volume, tolerance_mm: float = 1e-3) -> bool:
    return a.shape3 == b.shape3 and np.allclose(a.affine_lps, b.affine_lps, atol=tolerance_mm)


def masks_from_labels(labels: Volume, volume: Volume, label_name: str = "labels") -> dict[str, np.ndarray]:
    """Split a label map (values from features.LABEL_VALUES) into one boolean mask per class."""
    if not same_grid(labels, volume):  # a label map must address the same voxels as the head
        raise InputError(
            f"{label_name} is on another grid than the head (shape {labels.shape3} vs {volume.shape3} or "
            "different voxel-to-world matrix); resample it onto the head first"
        )
    values = _first_frame(labels, label_name)
    known = np.isin(values, [0, *LABEL_VALUES.values()])
    if not known.all():  # an image or another tool's parcellation, whose 1-5 are not eyes..brain:
        # the head itself given as its label map cut 45 % of IXI132's reference brain, exit 0
        others = np.unique(values[~known])
        shown = ", ".join(f"{float(v):g}" for v in others[:4]) + (", ..." if others.size > 4 else "")
        raise InputError(
            f"{label_name} is not a DeFacer label map: {np.count_nonzero(~known):,} voxels hold other values than "
            f"0-5 ({shown}); labels are 1 eyes, 2 nose, 3 mouth, 4 ears, 5 brain: is it an image, or another "
            "tool's parcellation?"
        )
    return {name: values == code for name, code in LABEL_VALUES.items()}


def nonzero_mask(mask: Volume, volume: Volume, label_name: str = "mask") -> np.ndarray:
    """A protection mask file (non-zero = protected) as a boolean array on the head's grid."""
    if not same_grid(mask, volume):
        raise InputError(f"{label_name} is on another grid than the head; resample it onto the head first")
    return _first_frame(mask, label_name) != 0


def _first_frame(volume: Volume, label_name: str) -> np.ndarray:
    """The values as the file means them: a label map written as floats into an int16 header is
    stored through a slope and intercept (nibabel picks them), and its stored values (-32768 for
    0) matched no label and were all 'non-zero' in a --protect-from mask. A map with several
    frames is taken only when they agree: else which frame is meant cannot be known (the first
    alone was taken, and a brain marked in the second was left unprotected)."""
    array = np.asarray(volume.array)
    if array.ndim == 4:
        nan_equal = array.dtype.kind in "fc"  # a float map's NaN background is the same in every frame
        if any(not np.array_equal(array[..., t], array[..., 0], equal_nan=nan_equal) for t in range(1, array.shape[3])):
            raise InputError(f"{label_name} has {array.shape[3]} frames that differ; give one 3D map")
        array = array[..., 0]
    if (volume.slope, volume.intercept) == (1.0, 0.0):
        return array
    values = array.astype(np.float64) * volume.slope + volume.intercept
    rounded = np.rint(values)
    return np.where(np.abs(values - rounded) < 1e-3, rounded, values)  # float error of the scaling


@dataclass
class FoundFeatures:
    """What the U-Net found: masks (FEATURES + BRAIN) on the volume's grid, and how sure it is."""

    masks: dict[str, np.ndarray]
    present: dict[str, bool]
    confidence: dict[str, float]
    guard: np.ndarray  # geometric frontal-lobe guard, protected together with the predicted brain
    # {landmark: {"mm": world LPS, "by": "anatomy" | "model"}} of the present features (face.landmarks)
    landmarks: dict = field(default_factory=dict)


def segmentation_report(found: FoundFeatures) -> dict:
    """What the model found, as the report's "segmentation" entry (CLI, batch and Slicer alike)."""
    return {"model": "face_unet.onnx", "present": dict(found.present),
            "confidence": {k: round(float(v), 4) for k, v in found.confidence.items()},
            "guard_voxels": int(found.guard.sum()), "landmarks_mm": dict(found.landmarks)}


# A face is the eyes and the nose: the U-Net must find both (whichever features the user chose to
# remove), or nothing is defaced. One alone is no face: on a featureless ellipsoid and on the top
# quarter of a head the model has reported small "eyes" regions, never a nose with them.
FACE_FEATURES = ("eyes", "nose")


def require_face(found: FoundFeatures, name: str) -> None:
    """Raise InputError unless the model found both the eyes and a nose in ``name``, lying the way
    the header's axes say (require_upright_face)."""
    if all(found.present[feature] for feature in FACE_FEATURES):
        require_upright_face(found, name)
        return
    seen = ", ".join(feature for feature, present in found.present.items() if present) or "nothing"
    raise FaceNotFound(f"{name}: the face was not found (found: {seen}; a face needs both eyes and a nose); "
                     "is it already defaced, cut above the nose, or not a head? nothing written "
                     "(give the features as a label map to deface it anyway)")


# The face found must lie the way the header's axes say: every cut ("in front of", "below the
# mouth", the ears' 10 mm shell) and the brain guard are taken along them, and the model only knows
# heads within about 25 degrees of upright. With IXI255's header turned 90 degrees (face to its
# left or superior) or upside down the model found a face anyway, and 17, 116 and 979 voxels of the
# reference brain were cut behind exit 0; turned 180 degrees (face to its posterior), 17 k voxels
# of the face were left. On the 27 IXI heads and the 7 others in the test data the eyes' line is
# within 8 degrees of left-right, the nose tip 18-47 degrees below the horizontal from the eyes'
# midpoint and 116-144 mm in front of the ears'; the limits leave 60 degrees of turn, and tilts
# until the nose tip stands 10 degrees above the eyes or behind them.
MIN_EYE_LINE_ALONG_LEFT_RIGHT = 0.5  # |cosine| of the eyes' line with the header's left-right axis
MIN_NOSE_BELOW_EYES_DEGREES = -10.0  # the nose tip's elevation under the eyes' midpoint, seen from the side


def require_upright_face(found: FoundFeatures, name: str) -> None:
    """Raise InputError where the landmarks say the face does not lie the way the header's axes
    say (a wrong qform/sform, or a head lying turned in the volume): nothing would be cut where it
    should be. Landmarks in world LPS: +x left, -y anterior, +z superior."""
    points = {key: np.asarray(point["mm"], float) for key, point in found.landmarks.items()}
    if "nose_tip" not in points:
        return
    nose = points["nose_tip"]
    eyes = [points[key] for key in ("eye_left", "eye_right") if key in points]
    ears = [points[key] for key in ("ear_left", "ear_right") if key in points]
    problems = []
    if len(eyes) == 2 and np.linalg.norm(eyes[1] - eyes[0]) > 0:
        along = abs(eyes[1][0] - eyes[0][0]) / np.linalg.norm(eyes[1] - eyes[0])
        if along < MIN_EYE_LINE_ALONG_LEFT_RIGHT:
            problems.append(f"the eyes' line is {np.degrees(np.arccos(along)):.0f} degrees off the header's left-right axis")
    if len(ears) == 2 and nose[1] > np.mean(ears, axis=0)[1]:  # 116-144 mm in front of them on real heads
        problems.append(f"the nose tip lies {nose[1] - np.mean(ears, axis=0)[1]:.0f} mm behind the ears along the "
                        "header's anterior axis")
    if eyes:
        below_mm, ahead_mm = (np.mean(eyes, axis=0) - nose)[[2, 1]]
        if ahead_mm < 0:
            problems.append(f"the nose tip lies {-ahead_mm:.0f} mm behind the eyes along the header's anterior axis")
        elif np.degrees(np.arctan2(below_mm, ahead_mm)) < MIN_NOSE_BELOW_EYES_DEGREES:
            problems.append(f"the nose tip lies {-below_mm:.0f} mm above the eyes along the header's superior axis")
    if problems:
        raise InputError(f"{name}: the face does not lie the way the header's axes say ({'; '.join(problems)}): "
                         "its orientation (qform/sform, direction) is wrong or the head lies turned in the volume; "
                         "fix the orientation (e.g. fslreorient2std, or set the header's axes) and deface the "
                         "fixed file; nothing written")


def find_features(volume: Volume, *, head: np.ndarray | None = None, backend: str = "onnx",
                  model_path=None, progress: Progress = _no_progress) -> FoundFeatures:
    """Find eyes, nose, mouth, ears and the brain with the shipped 3D U-Net.

    A feature the scan does not show (cut field of view) comes back absent, never as a guess.
    The predicted brain is protected together with a conservative geometric guard (guard.py);
    on PET, with the head's high-uptake piece too (uptake_brain.py).
    The landmarks are the regions' centres snapped to the anatomy (face.landmarks): reported,
    and the eyes' ones keep the guard clear of the eye tissue around them (guard.py).
    ``model_path``: another face_unet.onnx (or .keras) than the shipped one, e.g. to evaluate it.
    """
    from DeFacerLib.deface import head_mask
    from DeFacerLib.deface.guard import frontal_guard
    from DeFacerLib.face import segment_features
    from DeFacerLib.face.labels import LANDMARK_FEATURE
    from DeFacerLib.face.landmarks import refine_landmarks

    if head is None:
        progress("finding the head", 0.05)
        head = head_mask(volume)
    progress("finding the facial features", 0.2)
    try:
        result = segment_features(volume, backend=backend, model_path=model_path, head=head)
    except FileNotFoundError as error:
        raise UsageError(f"the face model is missing from this installation ({error}); "
                         "reinstall DeFacer or pass --features-from LABELS") from None
    empty = np.zeros(volume.shape3, dtype=bool)
    masks = {name: (result.masks[name] if result.present[name] else empty) for name in FEATURES}
    masks[BRAIN] = result.masks[BRAIN]
    if volume.modality == "PT":  # the U-Net's brain fell up to 14 mm short on PET-like heads
        from DeFacerLib.deface.uptake_brain import plausible_uptake_brain

        face = masks["eyes"] | masks["nose"] | masks["mouth"]  # absent ones are empty
        masks[BRAIN] = masks[BRAIN] | plausible_uptake_brain(volume, head, masks[BRAIN], face)
    landmarks = {name: point for name, point in refine_landmarks(volume, result.labels, head).items()
                 if result.present[LANDMARK_FEATURE[name]]}
    eye_points = {name: landmarks[name]["mm"] for name in ("eye_left", "eye_right") if name in landmarks}
    guard = frontal_guard(volume, head, masks["eyes"] if result.present["eyes"] else None,
                          masks["nose"] if result.present["nose"] else None, eye_points_mm=eye_points)
    return FoundFeatures(masks, dict(result.present), dict(result.confidence), guard, landmarks)


def protect_unlabelled_brain(volume: Volume, masks: dict[str, np.ndarray],
                             progress: Progress = _no_progress) -> tuple[np.ndarray | None, np.ndarray | None, dict | None]:
    """For a label map without a brain label (5): the U-Net's predicted brain put into ``masks``
    (in place), and (head mask, frontal guard, what to report) for ``deface_volume``; (None,
    None, None) when the map has a brain.

    Else only the depth limits would stand between a face label's box and the frontal lobe: the
    model's own eyes, nose, mouth and ears given as a label map changed 1710 reference-brain
    voxels of IXI162 and 1001 of IXI206 that way (Testing/test_labels_brain.py)."""
    if masks.get(BRAIN) is not None and masks[BRAIN].any():
        return None, None, None
    from DeFacerLib.deface import head_mask

    progress("finding the head", 0.05)
    head = head_mask(volume)
    found = find_features(volume, head=head, progress=lambda message, fraction: progress(message, 0.05 + 0.9 * fraction))
    masks[BRAIN] = found.masks[BRAIN]
    report = {"model": "face_unet.onnx", "brain_voxels": int(masks[BRAIN].sum()), "guard_voxels": int(found.guard.sum())}
    return head, found.guard, report


def deface_volume(
    volume: Volume,
    feature_masks: dict[str, np.ndarray],
    *,
    parameters: DefaceParameters = DefaceParameters(),
    protected: np.ndarray | None = None,
    guard: np.ndarray | None = None,
    head: np.ndarray | None = None,
    landmarks: dict | None = None,
    progress: Progress = _no_progress,
) -> DefaceResult:
    """Remove the chosen features from ``volume``; never touch ``protected`` (and the brain mask, if given).

    ``feature_masks`` may hold any of FEATURES and BRAIN. The brain mask, ``protected`` (a
    user's mask) and ``guard`` (the model's frontal guard, FoundFeatures.guard) are never
    touched, nor anything within the engine's protect margin of them; with none of the three it
    refuses (GuaranteeError): a label map without the brain needs ``protect_unlabelled_brain``
    first, as ``deface_file`` does. The header is the input's: ``header_identity.
    without_identifying_header`` clears it before writing. The guard is grown by
    the margin too: between the orbits the olfactory fossa and gyrus rectus reach down to
    7-9 mm above the eye centres at 20-25 mm depth (held-out IXI162), below the guard itself.
    ``landmarks`` (FoundFeatures.landmarks): the eyes' cut also takes the eye tissue around each
    located globe (face.labels.eye_tissue) at any depth, inside the eyes' boxes: at the engine's
    25 mm depth the back of the globe and the fat above it stayed on deep-set eyes (eyes
    removed 85 % at worst, 94.0 % pooled on the 27 IXI heads). A deeper cut over the whole eye
    box instead reached reference brain 20-24 mm behind the globes on three of them.
    """
    from DeFacerLib.deface import head_mask, remove_features
    from DeFacerLib.deface.head_mask import frames_motion_mm
    from DeFacerLib.deface.removal import DEEP_PROTECT_MARGIN_MM, as_mask

    if head is None:
        progress("finding the head", 0.1)
        head = head_mask(volume)
    engine = parameters.engine_kwargs()
    motion_mm = 0.0
    chosen = [feature_masks[name] for name in parameters.features if feature_masks.get(name) is not None]
    if volume.array.ndim == 4 and chosen:
        motion_mm = frames_motion_mm(volume, np.asarray(head, dtype=bool), np.logical_or.reduce(chosen))
    if motion_mm > 0:  # the brain, found on the first frame, may lie this much elsewhere in another
        engine["protect_margin_mm"] = engine.get("protect_margin_mm", DEFAULT_PROTECT_MARGIN_MM) + motion_mm

    where = Path(volume.source.path).name if volume.source is not None and volume.source.path else "the volume"
    kept = np.zeros(volume.shape3, dtype=bool)
    for what, mask in (("protected mask", protected), ("guard", guard), ("brain mask", feature_masks.get(BRAIN))):
        if mask is not None:  # a mask on another grid: one line naming it, not numpy's broadcast error
            kept |= as_mask(mask, volume.shape3, what, where)
    if not kept.any():
        # a label map without the brain (5), given as README's recipe gives it: every cut then went
        # max_depth_mm deep, through the frontal lobe (1734 reference-brain voxels of IXI162)
        raise GuaranteeError(f"{where}: nothing protects the brain (no brain label 5 in the masks, no protected mask, "
                             "no guard); give the brain, or first call protect_unlabelled_brain(volume, masks) as "
                             "`defacer deface` does for such a label map; nothing removed")

    selected = {name: feature_masks[name] for name in parameters.features if name in feature_masks}
    for name in parameters.features:
        selected.setdefault(name, np.zeros(volume.shape3, dtype=bool))

    progress("removing features", 0.4)
    cores = None
    # the eyes' core is cut at any depth, next to the brain too: only around eyes the anatomy
    # confirmed (a model's estimate can be 10 mm off, and there the core reached the frontal lobe)
    eye_points = {name: point["mm"] for name, point in (landmarks or {}).items()
                  if name.startswith("eye_") and point.get("by") != "model"}
    if eye_points and "eyes" in parameters.features:
        from DeFacerLib.face.labels import eye_tissue

        cores = {"eyes": eye_tissue(volume, eye_points)}
    # a predicted brain (the model's, with its guard) is kept with the deep margin too (removal.DEEP_MM)
    deep_margin_mm = DEEP_PROTECT_MARGIN_MM + motion_mm if guard is not None else 0.0
    defaced, report = remove_features(volume, selected, kept, head=head, feature_cores=cores,
                                      deep_margin_mm=deep_margin_mm, **engine)
    name = Path(volume.source.path).name if volume.source is not None and volume.source.path else "the volume"
    if parameters.shield and report.shield_voxels is None:  # asked for, and a head without it is not what was asked
        raise GuaranteeError(f"{name}: the face shield could not be placed (it needs the eyes and a nose or "
                             "mouth, found or labelled, and room in the field of view); nothing written")
    untouched = [name for name in parameters.features
                 if report.features[name].present and not report.features[name].voxels_removed]
    if untouched:  # found, but not one voxel removed: it exited 0, its table saying "removed ... 0", the face kept
        raise GuaranteeError(
            f"{name}: no voxel of the {', '.join(untouched)} could be removed (every one lies within the protected "
            "region or its margin: check --protect-margin-mm and --protect-from); nothing written")
    progress("done", 1.0)
    report_dict = report.to_dict()
    report_dict["protected_voxels"] = int(np.count_nonzero(kept))
    report_dict["frames_motion_mm"] = round(motion_mm, 2)  # added to the protect margins (head_mask.frames_motion_mm)
    removed = [name for name in parameters.features if report_dict["features"][name]["present"]]
    missing = [name for name in parameters.features if not report_dict["features"][name]["present"]]
    return DefaceResult(defaced, report_dict, removed, missing, report.removed_mask(volume.shape3))
