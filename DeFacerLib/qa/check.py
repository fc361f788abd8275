"""Is the face still recognisable? Render an original and its defaced copy, and let face
detection and two face recognisers try.

For every view: is a face detected (YuNet, dlib HOG) on the defaced render, and does the
defaced face's identity descriptor still match the original's? A stricter, adaptive attacker
is tried too: the defaced render is cut and aligned where the ORIGINAL's face was, even when
no detector finds a face there.

"Match" uses thresholds calibrated on skin renders, per view (scripts/calibrate_pair_check.py,
shipped in Resources/QA/pair_check_thresholds.json): the published photo thresholds call
different people's renders a match. A defaced face matches when it is closer to its original
than 99 % of other people's heads are, seen the same way: j's render against another person's
render in the same view, cut where j's face is. The verdict is PASS only when no facial
view (front and the two obliques) yields a match for either attacker and either model; the
pure side views, where an unchanged skull outline always resembles itself, are reported only.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from DeFacerLib.errors import UsageError
from DeFacerLib.intensity import finite_range
from DeFacerLib.photo.identity import DLIB_DISTANCE_MATCH, SFACE_COSINE_MATCH
from DeFacerLib.qa.recognize import (
    MODELS,
    best_face,
    box_of,
    describe,
    detect_faces_dlib,
    similarity,
)
from DeFacerLib.resources import resource_path
from DeFacerLib.qa.render import DEFAULT_VIEWS, NoSurfaceError, face_direction_details, render_views, skin_surface
from DeFacerLib.volume import Volume

CHECK_VIEWS = ("front", "front_left", "front_right", "left", "right")
VERDICT_VIEWS = ("front", "front_left", "front_right")
# The defaced head's own face side is checked too when its shape puts the face elsewhere by more
# than this (render.face_direction_details' scores, mm). A face moved by a flipped array wins by
# 43 mm (IXI132 written flipped front to back); a head whose face was cut flat has no side that stands out, and the back of
# IXI132, defaced, scored 0.6 mm over its front: a tie, not a face, rendered again for nothing.
OWN_SIDE_MARGIN_MM = 5.0
# The voxels the defacing changed must not still follow the original's: a face dimmed in place
# (a soft mask), buried in noise or otherwise rescaled is removed from the render's one skin
# threshold, yet windowing or smoothing brings it back. Correlation of the changed voxels with the
# original's (after the image-wide intensity map is taken out), raw or smoothed 1.5 voxels.
RESIDUAL_FACE_R = 0.9
_RESIDUAL_MIN_VOXELS = 500
_RESIDUAL_SMOOTHING_VOXELS = 1.5


@lru_cache(maxsize=1)
def render_thresholds() -> dict[str, float]:
    """Match thresholds for renders: the shipped calibration, else the published photo ones."""
    try:
        calibration = json.loads(resource_path("QA", "render_match_thresholds.json").read_text())
        return {model: float(calibration["models"][model]["threshold"]) for model in MODELS}
    except FileNotFoundError:
        return {"sface": SFACE_COSINE_MATCH, "dlib": DLIB_DISTANCE_MATCH}


@lru_cache(maxsize=1)
def pair_thresholds() -> dict[str, dict[str, float]]:
    """Per view and model, the pair check's thresholds (the same view of two heads; {} when the
    calibration is not shipped: render_thresholds then serves every view)."""
    try:
        calibration = json.loads(resource_path("QA", "pair_check_thresholds.json").read_text())
    except FileNotFoundError:
        return {}
    return {view: {model: float(entry[model]["threshold"]) for model in MODELS}
            for view, entry in calibration["views"].items()}


def threshold_for(model: str, view: str | None = None) -> float:
    """``view``'s pair-check threshold, else (a front against an oblique, no view) the
    cross-view render threshold."""
    return pair_thresholds().get(view, render_thresholds())[model]


def impostor_threshold(model: str, impostor_scores, false_match_rate: float = 0.01) -> float:
    """The score ``false_match_rate`` of different-person pairs reach: how the shipped
    thresholds are calibrated (SFace: cosine, higher is closer; dlib: distance, lower is)."""
    rate = 1.0 - false_match_rate if model == "sface" else false_match_rate
    return float(np.quantile(np.asarray(impostor_scores, float), rate))


def is_match(model: str, value: float, view: str | None = None) -> bool:
    threshold = threshold_for(model, view)
    return value >= threshold if model == "sface" else value <= threshold


@dataclass
class ViewCheck:
    view: str
    original_face_score: float  # best YuNet score, 0 when none
    defaced_face_score: float
    original_dlib_faces: int
    defaced_dlib_faces: int
    landmarks_found: int  # YuNet landmarks on the defaced render (5 when a face is found, else 0)
    similarity: dict[str, float | None] = field(default_factory=dict)  # detected defaced face vs original
    similarity_forced: dict[str, float | None] = field(default_factory=dict)  # aligned where the original face was
    match: bool = False
    # "" for the standard pass (first frame, camera on the original's face); else what differs
    variant: str = ""

    @property
    def label(self) -> str:
        """The view's name in the report and the image keys: 'front', 'front (frame 3)'."""
        return f"{self.view} ({self.variant})" if self.variant else self.view

    @property
    def defaced_face_detected(self) -> bool:
        return self.defaced_face_score > 0 or self.defaced_dlib_faces > 0


@dataclass
class RiskCheck:
    views: list[ViewCheck]
    verdict: str  # "PASS" or "FAIL"
    reasons: list[str]
    thresholds: dict[str, str]
    # not a verdict: a face still detected on the defaced front (features left, e.g. --features
    # eyes: IXI132 PASSes, its nose, mouth and chin plain to a person, YuNet 0.92)
    warnings: list[str] = field(default_factory=list)
    # the modality both heads were rendered as, and what it rests on ("MR (from its name)"): a PET
    # or CT read as MR is rendered at the wrong surface, so a reader must be able to see it
    rendered_as: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        for view, entry in zip(self.views, data["views"]):
            entry["defaced_face_detected"] = view.defaced_face_detected
        return data


def check_pair(original: Volume, defaced: Volume, views=CHECK_VIEWS, size=(400, 400)):
    """(RiskCheck, original renders, defaced renders). Both heads are seen from the same,
    original face direction, so a removed face cannot hide by turning the camera. Two more
    passes close the ways an intact face could still hide: the defaced head seen from its OWN
    face direction when it differs (a face moved by an array written flipped or permuted under
    the original header: what a naive attacker renders), and, for 4D data, the frame changed
    least by the defacing (a frame left undefaced). Render keys are ``ViewCheck.label``s.
    The defaced copy is the same scan, rendered as the original's modality: a NIfTI's comes
    from its name, and a PET copy named without `_pet` was rendered as MR, at the brain's
    surface, where no face is (its original itself PASSed)."""
    if not set(views) & set(VERDICT_VIEWS):  # else side views only: nothing could FAIL
        raise UsageError(f"views {', '.join(views)} hold none of the verdict's ({', '.join(VERDICT_VIEWS)}): "
                         "the check would pass whatever the defaced face shows")
    if defaced.modality != original.modality:
        defaced = dataclasses.replace(defaced, modality=original.modality)
    evidence = original.source.extra.get("modality_from") if original.source is not None else None
    rendered_as = f"{original.modality} ({evidence})" if evidence else str(original.modality)
    original_side = face_direction_details(original)
    face = original_side.direction
    # 4D: the frame the features were found on (Volume.reference_array: a dynamic PET's mean,
    # whose first frame may be blank), then the frame the defacing changed least
    reference = defaced.reference_volume()
    before = render_views(original.reference_volume(), views=views, size=size, face=face)
    after_surface = skin_surface(reference)
    after = render_views(reference, views=views, size=size, surface=after_surface, face=face)
    checks = [_check_view(name, before[name], after[name]) for name in views]
    own = face_direction_details(reference, after_surface)
    if own.label != original_side.label and own.scores_mm[own.label] - own.scores_mm[original_side.label] > OWN_SIDE_MARGIN_MM:
        _add_pass(checks, before, after, "defaced head's own face side", before,
                  render_views(reference, views=views, size=size, surface=after_surface, face=own.direction))
    frame = least_changed_frame(original, defaced)
    if frame != defaced.reference_frame:
        try:
            _add_pass(checks, before, after, f"frame {frame}",
                      render_views(_frame(original, frame), views=views, size=size, face=face),
                      render_views(_frame(defaced, frame), views=views, size=size, face=face))
        except NoSurfaceError:  # a blank frame (a dynamic PET's before the tracer came) shows no face
            pass
    reasons = [f"{c.label}: the defaced face still matches the original ({_matched_models(c)})"
               for c in checks if c.match and c.view in VERDICT_VIEWS]
    residual = {}
    for index in sorted({0, frame}):
        r = residual_correlation(_frame(original, index), _frame(defaced, index))
        residual[f"frame {index}"] = r
        if r is not None and r >= RESIDUAL_FACE_R:
            reasons.append(f"frame {index}: the voxels the defacing changed still follow the original's (r = {r:.3f} "
                           f">= {RESIDUAL_FACE_R}): what was there is dimmed, blurred or noised rather than removed")
    if not any(c.original_face_score > 0 for c in checks if c.view in VERDICT_VIEWS):
        # a face seen only from the side: the verdict's views would PASS without having seen it; and a
        # PET taken for MR is rendered at its brain, where no face is: say what it was rendered as
        reasons.append("no face was detected on the ORIGINAL's front renders either: the check cannot judge this head "
                       f"(rendered as {rendered_as}; a PET or CT that its file does not name is rendered at "
                       "the wrong surface: state it with --modality)")
    verdict = "FAIL" if reasons else "PASS"
    warnings = [f"{c.label}: a face is still detected on the defaced render (YuNet {c.defaced_face_score:.2f}, "
                f"dlib {c.defaced_dlib_faces} face(s)); the recognisers do not match it to the original, but what "
                "was left of the face (the features not removed) may still be recognised by a person"
                for c in checks if c.view == "front" and not c.variant and c.defaced_face_detected
                and not c.match]  # a match is a reason to FAIL: "do not match" would contradict it
    thresholds = {model: "; ".join(f"{view}: {rule} {threshold_for(model, view)}" for view in VERDICT_VIEWS)
                  for model, rule in (("sface", "cosine similarity >="), ("dlib", "distance <="))}
    # the side views' "match" too, so that a reader can tell how a match under a PASS was called
    side_views = [view for view in views if view not in VERDICT_VIEWS]
    if side_views:
        thresholds["reported_only"] = "; ".join(
            f"{view}: SFace cosine similarity >= {threshold_for('sface', view)} or dlib distance <= "
            f"{threshold_for('dlib', view)} is a match, not part of the verdict" for view in side_views)
    thresholds.update({"yunet": "score >= 0.75 counts as a face", "verdict_views": ", ".join(VERDICT_VIEWS),
                       "residual": f"changed voxels' correlation with the original < {RESIDUAL_FACE_R}; measured "
                       + ", ".join(f"{k}: {'n/a' if v is None else round(v, 3)}" for k, v in residual.items())})
    return RiskCheck(checks, verdict, reasons, thresholds, warnings, rendered_as), before, after


def _add_pass(checks, before, after, variant, pass_before, pass_after) -> None:
    """Check one more pass view by view; its renders join ``before``/``after`` under their labels."""
    for name in pass_after:
        check = _check_view(name, pass_before[name], pass_after[name])
        check.variant = variant
        checks.append(check)
        before[check.label], after[check.label] = pass_before[name], pass_after[name]


def _frame(volume: Volume, index: int) -> Volume:
    """Frame ``index`` of a 4D volume as a 3D one (a 3D volume is its own only frame)."""
    if volume.array.ndim == 3:
        return volume
    return dataclasses.replace(volume, array=volume.array[..., min(index, volume.array.shape[3] - 1)])


def least_changed_frame(original: Volume, defaced: Volume) -> int:
    """The defaced frame most like its original frame where the defacing changed the reference
    (Volume.reference_frame: the first frame, or a dynamic PET's mean; 0 for 3D): where a face is
    most likely left, e.g. by a tool that defaced only the first frame. Judged by correlation,
    not by a count of changed voxels, so that a frame left undefaced but rescaled, noised or
    retyped (every voxel changed) is still the one found. A blank frame (a dynamic PET's before
    the tracer came) shows no face and is never the answer: left as it was, it hid a frame left
    undefaced after it."""
    if defaced.array.ndim == 3:
        return 0
    frames = [k for k in range(defaced.array.shape[3]) if _spread(_frame(original, k).array) > 0] or [0]
    reference = original.reference_volume().physical()
    tolerance = 1e-3 * (_spread(reference) or 1.0)
    region = np.abs(defaced.reference_volume().physical() - reference) > tolerance
    if np.count_nonzero(region) < _RESIDUAL_MIN_VOXELS:  # the reference left as it was: count changes, as before
        changed = [int(np.count_nonzero(np.abs(_frame(defaced, k).physical() - _frame(original, k).physical()) > tolerance))
                   for k in frames]
        return frames[int(np.argmin(changed))]
    likeness = [_correlation(_frame(original, k).physical()[region], _frame(defaced, k).physical()[region]) for k in frames]
    return frames[int(np.nanargmax(np.nan_to_num(likeness, nan=-1.0)))]


def _spread(values: np.ndarray) -> float:
    """Max - min over the finite values (0 when there are none)."""
    found = finite_range(values)
    return 0.0 if found is None else found[1] - found[0]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def residual_correlation(original: Volume, defaced: Volume) -> float | None:
    """How closely the voxels the defacing changed still follow the original's (3D volumes): the
    larger of the raw and the smoothed correlation there, after the image-wide linear intensity
    map (a rescaled or retyped copy) is taken out. None when too few voxels changed to judge."""
    from scipy import ndimage

    from DeFacerLib.deface.skin_depth import bounding_box

    o = original.physical()
    d = defaced.physical()
    o = np.where(np.isfinite(o), o, 0.0).astype(np.float32)
    d = np.where(np.isfinite(d), d, 0.0).astype(np.float32)
    # take out an image-wide linear intensity map (a rescaled or retyped copy), robustly (medians):
    # the defaced voxels are outliers that a least-squares fit would follow
    # (Theil-Sen slope on random pairs of voxels, median intercept)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, o.size, (2, 200_000))
    step = o.ravel()[i] - o.ravel()[j]
    keep = np.abs(step) > 1e-3 * float(np.ptp(o) or 1.0)
    if np.count_nonzero(keep) > 1000:
        slope = float(np.median((d.ravel()[i] - d.ravel()[j])[keep] / step[keep]))
        if abs(slope) > 1e-6:
            d = ((d - float(np.median(d - slope * o))) / slope).astype(np.float32)
    tolerance = 1e-3 * float(np.ptp(o) or 1.0)
    residual = np.abs(d - o)
    changed = residual > max(tolerance, 5.0 * float(np.median(residual)))
    if np.count_nonzero(changed) < _RESIDUAL_MIN_VOXELS:
        return None
    raw = _correlation(o[changed], d[changed])
    sigma = _RESIDUAL_SMOOTHING_VOXELS
    pad = int(np.ceil(4 * sigma))  # the filter's reach: smoothing the changed voxels' box is enough
    box = tuple(slice(max(0, edge.start - pad), edge.stop + pad) for edge in bounding_box(changed))
    smooth = _correlation(ndimage.gaussian_filter(o[box], sigma)[changed[box]],
                          ndimage.gaussian_filter(d[box], sigma)[changed[box]])
    values = [abs(v) for v in (raw, smooth) if np.isfinite(v)]  # a face inverted in place is there too
    return round(max(values), 4) if values else None


def _check_view(name: str, before: np.ndarray, after: np.ndarray) -> ViewCheck:
    original_face = best_face(before)
    defaced_face = best_face(after)
    check = ViewCheck(
        view=name,
        original_face_score=round(original_face.score, 4) if original_face else 0.0,
        defaced_face_score=round(defaced_face.score, 4) if defaced_face else 0.0,
        original_dlib_faces=len(detect_faces_dlib(before)),
        defaced_dlib_faces=len(detect_faces_dlib(after)),
        landmarks_found=5 if defaced_face else 0,
    )
    check.similarity = {model: None for model in MODELS}
    check.similarity_forced = {model: None for model in MODELS}
    if original_face is None:
        return check
    reference = describe(before, original_face)
    if defaced_face is not None:
        found = describe(after, defaced_face)
        check.similarity = {m: round(similarity(reference[m], found[m]), 4) for m in MODELS}
    forced = describe(after, original_face)  # the adaptive attacker: cut where the face was
    check.similarity_forced = {m: round(similarity(reference[m], forced[m]), 4) for m in MODELS}
    check.match = any(
        value is not None and is_match(model, value, name)
        for values in (check.similarity, check.similarity_forced)
        for model, value in values.items()
    )
    return check


def _matched_models(check: ViewCheck) -> str:
    parts = []
    for label, values in (("detected face", check.similarity), ("cut at the original face", check.similarity_forced)):
        names = [f"{model} {value}" for model, value in values.items()
                 if value is not None and is_match(model, value, check.view)]
        if names:
            parts.append(f"{label}: {', '.join(names)}")
    return "; ".join(parts)


__all__ = ["CHECK_VIEWS", "DEFAULT_VIEWS", "VERDICT_VIEWS", "RiskCheck", "ViewCheck", "box_of", "check_pair",
           "impostor_threshold", "pair_thresholds", "render_thresholds"]
