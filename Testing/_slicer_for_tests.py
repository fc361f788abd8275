"""slicer-core for the Slicer module's tests: the test module is skipped where it is not installed
(the main venv; `make test` runs these in .venv-slicer with DEFACER_REQUIRE_SLICER=1, where a
missing slicer-core is an error, conftest.py), and DeFacer/ goes on the path so that
DeFacerLogicLib imports as it does inside Slicer."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def slicer_core():
    """The slicer-core ``slicer`` module, or a skip of the calling test module."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed in this Python (it needs vtk==9.6.2)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module here is not slicer-core", allow_module_level=True)
    if str(REPO / "DeFacer") not in sys.path:
        sys.path.insert(0, str(REPO / "DeFacer"))
    return slicer
