"""Find faces in photographs: YuNet (fast default), dlib HOG and dlib MMOD (alternatives).

Recall first: a missed face is a patient left identifiable, a false alarm only blurs a patch of
background. So the default score threshold is low, small images are upscaled so that 20 px faces
reach the size the detectors were trained on, huge images are searched on a downscaled copy
(boxes are mapped back to full resolution), and rotated faces are found by also searching
rotated copies of the image (boxes from every copy are merged by non-maximum suppression).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

import numpy as np

from DeFacerLib.errors import InputError, check_choice
from DeFacerLib.photo.models import import_dlib, model_path

DETECTORS = ("yunet", "hog", "mmod")
DEFAULT_DETECTOR = "yunet"
# recall-first operating points (measured on the 43 labelled dlib faces; docs/benchmarks.md, photo section)
DEFAULT_SCORE = {"yunet": 0.5, "hog": -0.2, "mmod": 0.0}
MIN_FACE_PX = 20  # smallest face (box side in the input image) that we promise to look for
_DETECTOR_MIN_PX = {"yunet": 24, "hog": 80, "mmod": 40}  # the size each detector finds reliably
MAX_DETECT_SIDE_PX = 2000  # huge images: detect on a copy whose long side is at most this
MAX_UPSCALE = 4.0
NMS_IOU = 0.3
# dlib's box convention (its detectors and the dlib_faces labels: a square from the brows to the
# chin), estimated from YuNet's output as the mean of two estimates with independent errors:
# from the 5 points, a square centred half-way between the eye centre and the mouth centre,
# 2.28 eye-to-mouth distances wide; from YuNet's box, a square of 0.93 times its side (geometric
# mean) moved down by 0.06 of its height. Fitted (medians) on 245 faces where YuNet and dlib HOG
# agree, in photos NOT in the labelled dlib_faces set (known_people, bald_guys.jpg, Tom_Cruise),
# each also shrunk to 28-64 px faces; leave-one-photo-out IoU with HOG's box: 0.82 on average,
# 0.57 at worst (YuNet's own box: 0.69 and 0.48).
DLIB_BOX_CENTRE_EYE_TO_MOUTH = 0.5
DLIB_BOX_SIDE_PER_EYE_MOUTH = 2.28
DLIB_BOX_SIDE_PER_YUNET_SIDE = 0.93
DLIB_BOX_DROP_PER_YUNET_HEIGHT = 0.06


@dataclass
class Face:
    """One face in image pixels (x, y = top-left corner), with the detector's score.

    ``landmarks5`` are (5, 2) points in YuNet's order: right eye, left eye (the subject's,
    so the right eye is on the image's left), nose tip, right and left mouth corner.
    ``landmarks68`` are dlib's 68 points when they were computed (see landmarks.py).
    ``angle_deg`` is the rotation of the image copy the face was found in.
    """

    x: float
    y: float
    width: float
    height: float
    score: float
    detector: str = DEFAULT_DETECTOR
    landmarks5: np.ndarray | None = None
    landmarks68: np.ndarray | None = None
    angle_deg: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def xyxy(self) -> np.ndarray:
        return np.array([self.x, self.y, self.x + self.width, self.y + self.height], dtype=float)

    @property
    def size_px(self) -> float:
        """The face's size: the box's mean side, in pixels (method strengths scale with it)."""
        return float(0.5 * (self.width + self.height))

    @property
    def dlib_xyxy(self) -> np.ndarray:
        """The box in dlib's convention (see DLIB_BOX_*), to compare with dlib-style labels; dlib's
        own detectors and faces without 5 points keep their box. Obscuring uses landmarks, not this."""
        if self.landmarks5 is None or self.detector != "yunet":
            return self.xyxy
        eyes, mouth = self.landmarks5[:2].mean(axis=0), self.landmarks5[3:].mean(axis=0)
        centre_points = eyes + DLIB_BOX_CENTRE_EYE_TO_MOUTH * (mouth - eyes)
        side_points = DLIB_BOX_SIDE_PER_EYE_MOUTH * float(np.linalg.norm(mouth - eyes))
        centre_box = np.array([self.x + self.width / 2, self.y + (0.5 + DLIB_BOX_DROP_PER_YUNET_HEIGHT) * self.height])
        side_box = DLIB_BOX_SIDE_PER_YUNET_SIDE * float(np.sqrt(self.width * self.height))
        centre, half = 0.5 * (centre_points + centre_box), 0.25 * (side_points + side_box)
        return np.r_[centre - half, centre + half]

    def iou(self, other: "Face") -> float:
        return box_iou(self.xyxy, other.xyxy)


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ---- one detector on one upright image --------------------------------------------------------
_LOCAL = threading.local()  # cv2/dlib detectors are not thread-safe: one set per thread


def _yunet(score_threshold: float):
    import cv2

    detector = getattr(_LOCAL, "yunet", None)
    if detector is None:
        detector = cv2.FaceDetectorYN.create(str(model_path("yunet")), "", (320, 320), score_threshold, 0.3, 5000)
        _LOCAL.yunet = detector
    detector.setScoreThreshold(float(score_threshold))
    return detector


def _detect_yunet(bgr: np.ndarray, score_threshold: float) -> list[Face]:
    detector = _yunet(score_threshold)
    detector.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, rows = detector.detect(bgr)
    if rows is None:
        return []
    return [
        Face(float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[14]), "yunet",
             landmarks5=np.asarray(r[4:14], dtype=float).reshape(5, 2))
        for r in rows if _plausible_box(r, bgr.shape)
    ]


def _plausible_box(row: np.ndarray, shape) -> bool:
    """A YuNet row whose box is finite, not empty and centred in the image: on degenerate inputs
    (an image a pixel high) the network returns boxes millions of pixels away, or NaN."""
    x, y, w, h = (float(v) for v in row[:4])
    return (bool(np.all(np.isfinite(row[:15]))) and w > 0 and h > 0
            and 0 <= x + w / 2 <= shape[1] and 0 <= y + h / 2 <= shape[0])


def _detect_dlib(bgr: np.ndarray, score_threshold: float, kind: str) -> list[Face]:
    dlib = import_dlib()
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    faces = []
    if kind == "hog":
        detector = getattr(_LOCAL, "hog", None)
        if detector is None:
            detector = _LOCAL.hog = dlib.get_frontal_face_detector()
        rects, scores, _ = detector.run(rgb, 0, float(score_threshold))
        for rect, score in zip(rects, scores):
            faces.append(Face(rect.left(), rect.top(), rect.width(), rect.height(), float(score), "hog"))
    else:
        detector = getattr(_LOCAL, "mmod", None)
        if detector is None:
            detector = _LOCAL.mmod = dlib.cnn_face_detection_model_v1(str(model_path("mmod")))
        for found in detector(rgb, 0):
            if found.confidence >= score_threshold:
                rect = found.rect
                faces.append(Face(rect.left(), rect.top(), rect.width(), rect.height(), float(found.confidence), "mmod"))
    return faces


def _detect_once(bgr: np.ndarray, detector: str, score_threshold: float) -> list[Face]:
    if detector == "yunet":
        return _detect_yunet(bgr, score_threshold)
    return _detect_dlib(bgr, score_threshold, detector)


# ---- scales, rotations, merging -------------------------------------------------------------
def detection_scale(shape: tuple[int, ...], detector: str = DEFAULT_DETECTOR, min_face_px: float = MIN_FACE_PX,
                    max_side_px: int = MAX_DETECT_SIDE_PX) -> float:
    """Factor applied to the image before detection: up for small faces, down for huge images."""
    up = max(1.0, _DETECTOR_MIN_PX[detector] / float(min_face_px))
    scale = min(up, MAX_UPSCALE)
    long_side = max(shape[0], shape[1])
    return float(min(scale, max_side_px / long_side))


def _rotation(shape, angle_deg: float):
    """2x3 affine rotating an image about its centre into a canvas that holds all of it."""
    import cv2

    h, w = shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle_deg, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    matrix[0, 2] += new_w / 2.0 - w / 2.0
    matrix[1, 2] += new_h / 2.0 - h / 2.0
    return matrix, (new_w, new_h)


def _map_back(face: Face, inverse: np.ndarray, scale: float, angle_deg: float) -> Face:
    """A face found in a rotated, scaled copy, in the original image's pixels."""
    x0, y0, x1, y1 = face.xyxy
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    if angle_deg % 90 != 0:  # the upright box of a tilted square is too big: shrink to its area
        centre = mapped.mean(axis=0)
        side = np.sqrt(face.width * face.height)
        lo, hi = centre - side / 2, centre + side / 2
    else:
        lo, hi = mapped.min(axis=0), mapped.max(axis=0)
    landmarks = None
    if face.landmarks5 is not None:
        landmarks = face.landmarks5 @ inverse[:, :2].T + inverse[:, 2]
    return replace(face, x=lo[0] / scale, y=lo[1] / scale, width=(hi[0] - lo[0]) / scale,
                   height=(hi[1] - lo[1]) / scale, angle_deg=float(angle_deg),
                   landmarks5=None if landmarks is None else landmarks / scale)


def non_max_suppression(faces: list[Face], iou_threshold: float = NMS_IOU) -> list[Face]:
    """Keep the best-scoring face of every overlapping group (scores compared within a detector)."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(face.iou(other) < iou_threshold and not _contains(other, face) for other in kept):
            kept.append(face)
    return kept


def _contains(big: Face, small: Face) -> bool:
    """True when most of ``small`` lies inside ``big`` (a part of a face found again)."""
    a, b = big.xyxy, small.xyxy
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy > 0.7 * small.width * small.height


def detect_faces(
    image: np.ndarray,
    detector: str = DEFAULT_DETECTOR,
    score_threshold: float | None = None,
    min_face_px: float = MIN_FACE_PX,
    rotations_deg: tuple[float, ...] = (0.0,),
    max_side_px: int = MAX_DETECT_SIDE_PX,
) -> list[Face]:
    """Faces in a uint8 RGB (or grey) image, best first, boxes in the input's pixels.

    ``rotations_deg`` lists extra orientations to search (e.g. ``(0, 90, -90, 180)`` for photos
    taken sideways, ``(0, -30, 30)`` for tilted heads); each costs one more detector pass.
    """
    import cv2

    check_choice("detector", detector, DETECTORS)
    threshold = DEFAULT_SCORE[detector] if score_threshold is None else float(score_threshold)
    rgb = np.asarray(image, dtype=np.uint8)
    if rgb.ndim not in (2, 3):  # an IndexError from the channel flip below, not a message
        raise InputError(f"a photo is an (H, W) grey or (H, W, 3) RGB image; got an array of shape {rgb.shape}")
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    bgr = full_bgr = np.ascontiguousarray(rgb[..., 2::-1])
    scale = detection_scale(bgr.shape, detector, min_face_px, max_side_px)
    if scale != 1.0:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale))),
                         interpolation=interpolation)
    found: list[Face] = []
    for angle in rotations_deg:
        if angle % 360 == 0:
            found += [_map_back(f, np.array([[1.0, 0, 0], [0, 1.0, 0]]), scale, 0.0)
                      for f in _detect_once(bgr, detector, threshold)]
            continue
        matrix, size = _rotation(bgr.shape, angle)
        rotated = cv2.warpAffine(bgr, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inverse = cv2.invertAffineTransform(matrix)
        found += [_map_back(f, inverse, scale, angle) for f in _detect_once(rotated, detector, threshold)]
    small_face_scale = detection_scale(rgb.shape, detector, min_face_px, max_side_px=10**9)
    # a huge photo, searched downscaled: its small faces are searched in tiles (not a video frame or a
    # camera's, which ask for a smaller copy to keep their pace: docs/photo.md)
    if scale < small_face_scale and max_side_px >= MAX_DETECT_SIDE_PX:
        found += _detect_tiles(full_bgr, detector, threshold, small_face_scale, max_side_px)
    faces = non_max_suppression(found)
    return _clip_to_image(faces, rgb.shape)


TILE_OVERLAP_PX = 256  # faces up to this size lie whole in some tile; bigger ones are found downscaled


def _detect_tiles(bgr: np.ndarray, detector: str, threshold: float, scale: float, max_side_px: int) -> list[Face]:
    """Faces of a huge image searched tile by tile at the small-face scale (each tile at most
    ``max_side_px`` once scaled), in the image's pixels: a 20 px face in a 24 Mpx photo would be
    7 px in the downscaled copy, below what any detector finds."""
    import cv2

    h, w = bgr.shape[:2]
    tile = max(int(max_side_px / scale), 2 * TILE_OVERLAP_PX)
    step = tile - TILE_OVERLAP_PX
    found: list[Face] = []
    for y0 in range(0, max(h - TILE_OVERLAP_PX, 1), step):
        for x0 in range(0, max(w - TILE_OVERLAP_PX, 1), step):
            crop = bgr[y0:y0 + tile, x0:x0 + tile]
            size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
            scaled = cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)
            tile_to_image = np.array([[1.0, 0, x0 * scale], [0, 1.0, y0 * scale]])  # in scaled pixels
            found += [_map_back(f, tile_to_image, scale, 0.0) for f in _detect_once(scaled, detector, threshold)]
    return found


def _clip_to_image(faces: list[Face], shape) -> list[Face]:
    h, w = shape[:2]
    clipped = []
    for face in faces:
        x0, y0, x1, y1 = np.clip(face.xyxy, [0, 0, 0, 0], [w, h, w, h])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            clipped.append(replace(face, x=x0, y=y0, width=x1 - x0, height=y1 - y0))
    return clipped


# ---- scoring against labelled boxes (dlib's imglab XML) ----------------------------------------
def read_labelled_boxes(xml_path) -> dict[str, list[tuple[float, float, float, float]]]:
    """{image file name: [(x0, y0, x1, y1), ...]} from a dlib imglab XML (boxes marked ignore are skipped)."""
    import xml.etree.ElementTree as ElementTree

    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for image in ElementTree.parse(str(xml_path)).getroot().iter("image"):
        rows = boxes.setdefault(image.get("file"), [])
        for box in image.iter("box"):
            if box.get("ignore") == "1":
                continue
            left, top = float(box.get("left")), float(box.get("top"))
            rows.append((left, top, left + float(box.get("width")), top + float(box.get("height"))))
    return boxes


def match_boxes(truth, found, iou_threshold: float = 0.5) -> tuple[int, int]:
    """(true positives, false positives): greedy one-to-one matching at IoU >= threshold."""
    pairs = sorted(((box_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f = set(), set()
    for iou, i, j in pairs:
        if iou < iou_threshold:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t), len(found) - len(used_f)
