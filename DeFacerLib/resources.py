"""Where the assets in the top-level ``Resources/`` folder (models, DICOM profile table) live.

In a checkout or editable install they sit beside the package; in a wheel they are packed
as ``DeFacerLib/_resources`` (see pyproject.toml); in the Slicer extension the CMake install
puts ``Resources`` next to ``DeFacerLib``. One function finds them in all three.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    """Path of a file under Resources/, e.g. ``resource_path("Models", "face_unet.onnx")``."""
    for root in (_PACKAGE_DIR / "_resources", _PACKAGE_DIR.parent / "Resources"):
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"DeFacer resource {'/'.join(parts)} is missing from this installation")
