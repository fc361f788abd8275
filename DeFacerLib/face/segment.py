"""Find the eyes, nose, mouth, ears and brain of a head Volume with the shipped U-Net.

    result = segment_features(volume)
    result.masks["nose"]      # boolean, on volume's OWN array grid (any orientation/spacing)
    result.present["ears"]    # False when the scan does not show them (cut field of view)

The volume goes onto the network grid (grid.py), through onnxruntime (default; starts in a
fraction of a second and needs no training stack) or Keras (``backend="keras"``, needs the
[train] extra), and the class probabilities come back to the volume's grid by linear
interpolation. Nothing is downloaded: the weights ship in Resources/Models.

A class's largest connected piece is measured inside the class's own bounding box (the
same labelling, 13.6 M voxels fewer on a 1 mm head).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.skin_depth import bounding_box
from DeFacerLib.errors import UsageError, check_choice
from DeFacerLib.face.grid import GRID_SPACING_MM, to_grid
from DeFacerLib.features import BRAIN, FEATURES, LABEL_VALUES
from DeFacerLib.resources import resource_path
from DeFacerLib.volume import Volume

MODEL_NAME = "face_unet.onnx"
KERAS_MODEL_NAME = "face_unet.keras"
# A feature counts as present when its largest connected piece is at least this big. One grid
# voxel is 3.75^3 = 53 mm^3; 1 cm^3 (~19 grid voxels) is far above the isolated voxels a
# network scatters, and below the smallest labelled feature region (an ear, ~3-8 cm^3).
MIN_FEATURE_VOLUME_MM3 = 1000.0
BACKENDS = ("onnx", "keras")


@dataclass
class SegmentationResult:
    masks: dict[str, np.ndarray]  # FEATURES + "brain" -> bool array on the input's grid
    confidence: dict[str, float]  # mean class probability over the class's grid voxels (0 if none)
    present: dict[str, bool]  # per feature: largest component >= MIN_FEATURE_VOLUME_MM3
    largest_component_mm3: dict[str, float] = field(default_factory=dict)
    labels: np.ndarray | None = None  # uint8 label map (LABEL_VALUES) on the input's grid


def segment_features(volume: Volume, *, backend: str = "onnx", model_path: str | Path | None = None,
                     head: np.ndarray | None = None) -> SegmentationResult:
    """Per-class masks, confidences and presence for ``volume`` (any orientation and spacing).

    ``head``: the head mask on the volume's grid, if already computed (saves a few seconds).
    """
    check_choice("segmentation backend", backend, BACKENDS)
    image, mapping = to_grid(volume, head=head)
    if backend == "onnx":
        probabilities = _run_onnx(image, model_path)
    else:
        probabilities = _run_keras(image, model_path)
    grid_labels = probabilities.argmax(-1)
    labels = mapping.labels_to_volume(probabilities)

    voxel_mm3 = float(np.prod(volume.spacing_mm))
    masks, confidence, present, sizes = {}, {}, {}, {}
    for name in FEATURES + (BRAIN,):
        value = LABEL_VALUES[name]
        mask = labels == value
        masks[name] = mask
        on_grid = grid_labels == value
        confidence[name] = float(probabilities[..., value][on_grid].mean()) if on_grid.any() else 0.0
        if name in FEATURES:
            sizes[name] = _largest_component_voxels(mask) * voxel_mm3
            present[name] = sizes[name] >= MIN_FEATURE_VOLUME_MM3
    return SegmentationResult(masks, confidence, present, sizes, labels)


def _largest_component_voxels(mask: np.ndarray) -> int:
    box = bounding_box(mask)  # label only the mask's own box
    if box is None:
        return 0
    pieces, count = ndi.label(mask[box])
    return int(np.bincount(pieces.ravel())[1:].max()) if count else 0


# ---- backends -------------------------------------------------------------------------------

_SESSIONS: dict[str, object] = {}


def default_model_path(backend: str = "onnx") -> Path:
    name = MODEL_NAME if backend == "onnx" else KERAS_MODEL_NAME
    try:
        return resource_path("Models", name)
    except FileNotFoundError:
        raise UsageError(f"the face model Resources/Models/{name} is missing from this installation; "
                         "reinstall DeFacer or pass model_path") from None


# set by batch.runner for its local workers: their share of this machine's CPUs
THREADS_VARIABLE = "DEFACER_ONNX_THREADS"


def usable_cpus() -> int:
    """The CPUs this process may run on: a Slurm job's or a container's CPU set, not the node's
    count (os.cpu_count: a 4-CPU job on a 64-core node ran 64 threads per process). A CPU quota
    (docker --cpus) is not seen: THREADS_VARIABLE is the user's way to say it."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return os.cpu_count() or 1


def onnx_threads() -> int:
    """The face model's threads: a batch worker's share (THREADS_VARIABLE), else every usable CPU."""
    share = os.environ.get(THREADS_VARIABLE, "")
    return int(share) if share.isdecimal() and int(share) > 0 else usable_cpus()  # isdigit: '²', int() fails


def _run_onnx(image: np.ndarray, model_path) -> np.ndarray:
    """(D, H, W) grid image -> (D, H, W, classes) probabilities through onnxruntime."""
    import onnxruntime as ort

    path = str(Path(model_path) if model_path else default_model_path("onnx"))
    session = _SESSIONS.get(path)
    if session is None:
        if not Path(path).is_file():
            raise UsageError(f"{path}: face model not found; pass the path of a face_unet.onnx file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = onnx_threads()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        _SESSIONS[path] = session
    output = session.run(None, {"image": image[None, None].astype(np.float32)})[0]
    return np.ascontiguousarray(np.moveaxis(output[0], 0, -1))


def _run_keras(image: np.ndarray, model_path) -> np.ndarray:
    try:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras

        from DeFacerLib.face.model import InstanceNorm  # noqa: F401  (registers the custom layer)
    except ImportError:
        raise UsageError("backend='keras' needs the training extra: pip install 'defacer[train]' "
                         "(or use the default backend='onnx')") from None
    path = Path(model_path) if model_path else default_model_path("keras")
    if path.suffix == ".onnx":
        path = path.with_suffix(".keras")
    key = f"keras:{path}"
    model = _SESSIONS.get(key)
    if model is None:
        if not path.is_file():
            raise UsageError(f"{path}: Keras face model not found; pass the path of a face_unet.keras file")
        model = keras.models.load_model(path, compile=False)
        _SESSIONS[key] = model
    return np.asarray(model(image[None, ..., None], training=False))[0]


__all__ = ["SegmentationResult", "segment_features", "MIN_FEATURE_VOLUME_MM3", "GRID_SPACING_MM"]
