"""Facial landmarks: dlib's 68 points (detailed, NON-COMMERCIAL model) or YuNet's 5 (permissive).

The 68-point predictor ``shape_predictor_68_face_landmarks.dat`` (from face_recognition_models)
was trained on the iBUG 300-W images, which are licensed for non-commercial research only:
products must use ``landmarks="5"`` (YuNet's points, MIT) and the regions built from them.
"""
from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np

from DeFacerLib.errors import check_choice
from DeFacerLib.photo.detect import Face
from DeFacerLib.photo.models import dlib_available, import_dlib, model_path

LANDMARK_MODES = ("auto", "68", "5")
# dlib 68-point index ranges (iBUG 300-W markup)
JAW = list(range(0, 17))
RIGHT_BROW, LEFT_BROW = list(range(17, 22)), list(range(22, 27))  # the subject's right is the image's left
NOSE = list(range(27, 36))
RIGHT_EYE, LEFT_EYE = list(range(36, 42)), list(range(42, 48))
MOUTH = list(range(48, 60))
_LOCAL = threading.local()


def _predictor():
    predictor = getattr(_LOCAL, "predictor", None)
    if predictor is None:
        dlib = import_dlib()
        predictor = _LOCAL.predictor = dlib.shape_predictor(str(model_path("landmarks68")))
    return predictor


def landmarks68(image: np.ndarray, face: Face) -> np.ndarray:
    """dlib's 68 points (x, y) for one face of a uint8 RGB image (NON-COMMERCIAL model).

    dlib's predictor expects its own detector's square box; YuNet's box is taller and sits
    lower, so it is squared around the eye-mouth centre first when 5 points are known.
    """
    dlib = import_dlib()
    x0, y0, x1, y1 = face.xyxy
    if face.landmarks5 is not None:
        centre = face.landmarks5.mean(axis=0)
        side = 0.5 * (face.width + face.height) * 0.9
        x0, y0, x1, y1 = centre[0] - side / 2, centre[1] - side * 0.45, centre[0] + side / 2, centre[1] + side * 0.55
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
    rgb = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., :3])
    shape = _predictor()(rgb, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=float)


def five_from_68(points: np.ndarray) -> np.ndarray:
    """YuNet-order 5 points (eye centres, nose tip, mouth corners) from dlib's 68."""
    return np.array([
        points[RIGHT_EYE].mean(axis=0), points[LEFT_EYE].mean(axis=0), points[30], points[48], points[54],
    ])


def five_points(face: Face) -> np.ndarray:
    """The face's 5 points; estimated from the box (a frontal layout) when no detector gave them."""
    if face.landmarks5 is not None:
        return face.landmarks5
    if face.landmarks68 is not None:
        return five_from_68(face.landmarks68)
    layout = np.array([[0.32, 0.40], [0.68, 0.40], [0.50, 0.58], [0.36, 0.76], [0.64, 0.76]])
    return np.array([face.x, face.y]) + layout * np.array([face.width, face.height])


def add_landmarks(image: np.ndarray, faces: list[Face], mode: str = "auto") -> list[Face]:
    """Faces with landmarks filled in: ``68`` (dlib, non-commercial), ``5`` (YuNet) or ``auto``.

    ``auto`` uses the 68 points when dlib is installed, the 5 points otherwise. Every face also
    gets ``landmarks5`` (from the detector, from the 68 points, or estimated from the box).
    """
    check_choice("landmark mode", mode, LANDMARK_MODES)
    use68 = mode == "68" or (mode == "auto" and dlib_available())
    out = []
    for face in faces:
        points68 = landmarks68(image, face) if use68 else None
        with_68 = replace(face, landmarks68=points68)
        out.append(replace(with_68, landmarks5=five_points(with_68)))
    return out
