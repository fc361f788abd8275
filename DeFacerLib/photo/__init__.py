"""Faces in clinical photographs and video: detect, obscure or replace (k-Same), prove it.

detect (YuNet, dlib HOG/MMOD) -> landmarks (YuNet 5 points; dlib 68, non-commercial) ->
regions (eyes, eyebrows, nose, mouth, face, head) -> obscure (fill, blur, pixelate, bar) or
ksame (surrogate faces) -> media (JPEG/PNG/TIFF, DICOM, video with audio; pixels only).
identity holds the recognisers (SFace, dlib ResNet) that measure the result; camera runs the
per-frame loop in real time. See docs/photo.md.
"""
from DeFacerLib.photo.anonymize import (
    PhotoOptions,
    PhotoReport,
    anonymize_array,
    anonymize_camera,
    anonymize_path,
    anonymize_video,
    is_de_identifying,
)
from DeFacerLib.photo.detect import Face, detect_faces
from DeFacerLib.photo.ksame import k_same
from DeFacerLib.photo.obscure import obscure_faces

__all__ = [
    "Face",
    "PhotoOptions",
    "PhotoReport",
    "anonymize_array",
    "anonymize_camera",
    "anonymize_path",
    "anonymize_video",
    "detect_faces",
    "is_de_identifying",
    "k_same",
    "obscure_faces",
]
