"""Facial-feature segmentation: the U-Net that finds eyes, nose, mouth, ears and the brain.

    from DeFacerLib.face import segment_features
    result = segment_features(volume)            # onnxruntime, shipped weights
    result.masks["eyes"], result.present["ears"], result.confidence["nose"]

Inference needs only numpy, scipy and onnxruntime. Training (model.py, augment.py,
onnx_export.py, scripts/train_face_model.py) needs the [train] extra and is not imported here.
"""
from DeFacerLib.face.grid import GRID_SHAPE, GRID_SPACING_MM, GridMapping, to_grid
from DeFacerLib.face.labels import load_landmarks, training_labels
from DeFacerLib.face.segment import MIN_FEATURE_VOLUME_MM3, SegmentationResult, segment_features

__all__ = [
    "GRID_SHAPE",
    "GRID_SPACING_MM",
    "GridMapping",
    "MIN_FEATURE_VOLUME_MM3",
    "SegmentationResult",
    "load_landmarks",
    "segment_features",
    "to_grid",
    "training_labels",
]
