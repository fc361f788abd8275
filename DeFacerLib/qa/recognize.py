"""Face detection and identity descriptors on skin renders: two attackers' tools.

The descriptors themselves are the photo anonymizer's (DeFacerLib/photo/identity.py), so a
render and a photograph are judged by exactly the same recognisers.

Two independent recognisers:
- SFace (OpenCV Zoo, via cv2.FaceRecognizerSF): cosine similarity (its authors call >= 0.363
  on photos a match);
- dlib's ResNet descriptor (aligned with the permissive 5-point predictor): Euclidean distance
  (<= 0.6 on photos).
On skin renders those photo thresholds call different people a match; what counts as one on a
render is qa/check.py's (calibrated per view). Detections come from YuNet
(cv2.FaceDetectorYN) and dlib's HOG detector.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from DeFacerLib.qa.render import FaceBox, detect_faces_yunet
FACE_PRESENT_SCORE = 0.75  # YuNet score that counts as "a face"; a head outline alone scores ~0.6
MODELS = ("sface", "dlib")


@dataclass(frozen=True)
class Descriptor:
    model: str
    vector: np.ndarray


def _as_face(face: FaceBox):
    """The photo package's Face for a render's FaceBox: one descriptor code serves both."""
    from DeFacerLib.photo.detect import Face

    return Face(face.x, face.y, face.width, face.height, face.score, landmarks5=np.asarray(face.landmarks))


def detect_faces_dlib(image: np.ndarray, upsample: int = 1) -> list[tuple[int, int, int, int]]:
    """dlib HOG detections as (left, top, right, bottom) pixel boxes."""
    from DeFacerLib.photo.models import import_dlib

    dlib = import_dlib()
    detector = _hog_detector(dlib)
    return [(r.left(), r.top(), r.right(), r.bottom()) for r in detector(np.asarray(image, np.uint8), upsample)]


@lru_cache(maxsize=1)
def _hog_detector(dlib):
    return dlib.get_frontal_face_detector()


def box_of(face: FaceBox) -> tuple[float, float, float, float]:
    return (face.x, face.y, face.x + face.width, face.y + face.height)


def similarity(a: Descriptor, b: Descriptor) -> float:
    """SFace: cosine similarity (higher = same person). dlib: Euclidean distance (lower = same)."""
    from DeFacerLib.photo.identity import distance

    if a.model != b.model:
        raise ValueError("descriptors of different models cannot be compared")
    value = distance(a.vector, b.vector, a.model)
    return 1.0 - value if a.model == "sface" else value


def describe(image: np.ndarray, face: FaceBox) -> dict[str, Descriptor]:
    """Both descriptors of one face (SFace aligned on YuNet's 5 points, dlib on its own 5)."""
    from DeFacerLib.photo.identity import descriptor

    as_face = _as_face(face)
    return {model: Descriptor(model, descriptor(image, as_face, model)) for model in MODELS}


def best_face(image: np.ndarray, min_score: float = FACE_PRESENT_SCORE) -> FaceBox | None:
    faces = [face for face in detect_faces_yunet(image, score_threshold=0.5) if face.score >= min_score]
    return faces[0] if faces else None
