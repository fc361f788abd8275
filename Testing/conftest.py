"""Shared fixtures. Real data comes from $DEFACER_TEST_DATA (default ../shared/data).

The suite refuses to run without that folder rather than skipping: a green run that
never touched a real head would prove nothing.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DEFACER_TEST_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()
sys.path.insert(0, str(REPO_ROOT / "scripts"))  # scripts' helpers the tests share (ixi_layout)

from ixi_layout import brain_labels_of  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Where slicer-core is required (make test's Slicer venv), a skipped real-MRML test is a failure."""
    if os.environ.get("DEFACER_REQUIRE_SLICER") == "1":
        import slicer  # noqa: F401  (an ImportError here fails the run loudly)

        if not hasattr(slicer, "vtkMRMLScene"):
            raise pytest.UsageError("DEFACER_REQUIRE_SLICER=1 but the 'slicer' module is not slicer-core")


def pytest_sessionstart(session):
    # A run started in the background (`make test &`, a CI runner's job) inherits SIGINT ignored,
    # as POSIX shells start asynchronous commands, and so would every CLI the tests start: the
    # Ctrl-C tests then saw a batch finish (exit 0) instead of stopping. Ctrl-C is Python's again
    # here, so the children start with it at its default and handle it as at a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not (DATA_DIR / "heads" / "ixi" / "t1").is_dir():
        raise pytest.UsageError(
            f"test data not found at {DATA_DIR}; set DEFACER_TEST_DATA to the shared data folder"
        )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def ixi_pairs(data_dir) -> list[tuple[Path, Path]]:
    """(T1 head, reference brain labels) for every IXI subject, sorted by subject."""
    pairs = []
    for t1 in sorted((data_dir / "heads" / "ixi" / "t1").glob("IXI*_T1.nii.gz")):
        labels = brain_labels_of(t1, data_dir / "heads" / "ixi")
        pairs.append((t1, labels))
    assert len(pairs) == 27, f"expected 27 IXI subjects, found {len(pairs)}"
    return pairs


@pytest.fixture(scope="session")
def ear_consensus() -> dict:
    """{head: {ear name: LPS mm}}: the ears' reference, the concha as four blind readers agree on it
    (scripts/training/ear_consensus.json; landmarks.json's ear points are the training labels' centres)."""
    import json

    import numpy as np

    ears = json.loads((REPO_ROOT / "scripts" / "training" / "ear_consensus.json").read_text())["ears"]
    return {rel: {name: np.asarray(e["point_mm"], float) for name, e in head.items()} for rel, head in ears.items()}
