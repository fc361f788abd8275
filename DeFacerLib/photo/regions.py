"""Regions of a face to obscure, as polygons in image pixels, built from landmarks.

With dlib's 68 points the regions follow the features' outlines; with YuNet's 5 points they are
ellipses and bars laid out in the face's own frame (eye line = x axis, so tilted faces work),
sized by the inter-ocular distance. Every region is padded: recall first, a region that is a
little too big costs some pixels, one that is too small leaves a feature.
"""
from __future__ import annotations

import numpy as np

from DeFacerLib.errors import check_choice
from DeFacerLib.photo.detect import Face
from DeFacerLib.photo.landmarks import JAW, LEFT_BROW, LEFT_EYE, MOUTH, NOSE, RIGHT_BROW, RIGHT_EYE, five_points

REGIONS = ("eyes", "eyebrows", "nose", "mouth", "face", "head")
BOX_PAD = 0.15  # the head region always covers the detector's box, as an ellipse this much wider
DEFAULT_REGION = "head"  # measured: recognisers read hair and outline, a face-only region leaks them


def _frame(face: Face):
    """Eye centre, unit right (along the eye line), unit up, inter-ocular and eye-mouth distances."""
    p = five_points(face)
    eye_centre = 0.5 * (p[0] + p[1])
    right = p[1] - p[0]
    d = float(np.linalg.norm(right))
    if d < 1e-3:
        d = 0.4 * face.width
        right = np.array([1.0, 0.0]) * d
    right = right / np.linalg.norm(right)
    up = np.array([right[1], -right[0]])  # image y grows downwards
    mouth = 0.5 * (p[3] + p[4])
    h = float(max(abs((mouth - eye_centre) @ up), 0.6 * d))
    return eye_centre, right, up, d, h, mouth


def _ellipse(centre, right, up, half_width, half_height, points: int = 36) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return centre + np.outer(np.cos(t) * half_width, right) + np.outer(np.sin(t) * half_height, up)


def _rectangle(centre, right, up, half_width, half_height) -> np.ndarray:
    return np.array([centre + sx * half_width * right + sy * half_height * up
                     for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def _padded_hull(points: np.ndarray, pad: float) -> np.ndarray:
    import cv2

    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(float)
    centre = hull.mean(axis=0)
    return centre + (hull - centre) * (1.0 + pad)


def _box_ellipse(face: Face, pad: float = 0.1) -> np.ndarray:
    centre = np.array([face.x + face.width / 2, face.y + face.height / 2])
    return _ellipse(centre, np.array([1.0, 0.0]), np.array([0.0, -1.0]),
                    face.width / 2 * (1 + pad), face.height / 2 * (1 + pad))


def region_polygons(face: Face, region: str) -> list[np.ndarray]:
    """Polygons (each (N, 2) x, y) covering ``region`` of ``face``; see REGIONS."""
    check_choice("region", region, REGIONS)
    eye, right, up, d, h, mouth = _frame(face)
    p68 = face.landmarks68
    if region == "head":  # hair, ears and forehead too: a bigger ellipse, raised
        centre = eye + up * 0.2 * h
        head = _ellipse(centre, right, up, 1.75 * d, 1.6 * h + 1.2 * d)
        # A turned head (towards profile) brings the eyes together in the image, not the head:
        # where the ellipse sized by them is narrower than the detector's box (frontal faces:
        # 1.2-2.7 box widths, median 1.6; the clip's profiles 0.35-0.76), the box widened by half
        # covers the cheek, jaw, ear and hair it leaves out. Only there: on frontal faces the box
        # adds nothing, and a wider grey patch left the adaptive attacker more of the same
        # background to match on (docs/photo.md).
        if 2 * 1.75 * d < face.width:
            return [head, _box_ellipse(face, pad=0.5)]
        # and the detector's own box, always: where the 5 points are off (a small face, a child's
        # tilted head) the ellipse drawn from them stood beside the face and left an eye and a
        # cheek (the clip's first shot, 38 px; a 167 px child: 76 % of its box covered). On
        # frontal faces the head ellipse holds the box: nothing more is filled.
        return [head, _box_ellipse(face, pad=BOX_PAD)]
    if region == "face":
        top = eye + up * 1.1 * h
        bottom = mouth - up * 0.95 * h
        ellipse = _ellipse(0.5 * (top + bottom), right, up, 1.25 * d, 0.5 * float(np.linalg.norm(top - bottom)))
        polygons = [ellipse, _box_ellipse(face)]
        if p68 is not None:
            brows = p68[RIGHT_BROW + LEFT_BROW]
            forehead = brows + up * 0.8 * h
            polygons.append(_padded_hull(np.vstack([p68[JAW], brows, forehead]), 0.08))
        return polygons
    if region == "eyes":  # the censor bar: both eyes and brows under one band
        if p68 is not None:
            pts = p68[RIGHT_EYE + LEFT_EYE + RIGHT_BROW + LEFT_BROW]
            along, across = (pts - eye) @ right, (pts - eye) @ up
            centre = eye + right * 0.5 * (along.max() + along.min()) + up * 0.5 * (across.max() + across.min())
            return [_rectangle(centre, right, up, 0.5 * (along.max() - along.min()) + 0.25 * d,
                               0.5 * (across.max() - across.min()) + 0.12 * d)]
        return [_rectangle(eye + up * 0.15 * d, right, up, 1.05 * d, 0.42 * d)]
    if region == "eyebrows":
        if p68 is not None:
            return [_padded_hull(p68[RIGHT_BROW], 0.35), _padded_hull(p68[LEFT_BROW], 0.35)]
        return [_rectangle(eye + up * 0.4 * d, right, up, 0.95 * d, 0.2 * d)]
    if region == "nose":
        if p68 is not None:
            return [_padded_hull(p68[NOSE], 0.25)]
        tip = five_points(face)[2]
        return [_ellipse(0.5 * (eye + tip) - up * 0.1 * h, right, up, 0.38 * d, 0.55 * h)]
    # mouth
    if p68 is not None:
        return [_padded_hull(p68[MOUTH], 0.3)]
    p = five_points(face)
    half_width = 0.5 * float(np.linalg.norm(p[4] - p[3])) + 0.2 * d
    return [_ellipse(mouth, right, up, half_width, 0.35 * d)]


def region_mask(shape, faces: list[Face], region: str = DEFAULT_REGION) -> np.ndarray:
    """Boolean (H, W) mask covering ``region`` of every face."""
    import cv2

    mask = np.zeros(shape[:2], dtype=np.uint8)
    for face in faces:
        for polygon in region_polygons(face, region):
            cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)
