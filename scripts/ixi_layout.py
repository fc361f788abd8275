"""Where an IXI head's reference brain lies in the shared test data, for scripts and tests alike.

heads/ixi/t1/IXI162-HH-1548_T1.nii.gz has its brain labels (DLMUSE, non-zero = brain) in
heads/ixi/brain_labels/IXI162-HH-1548_T1_DLMUSE.nii.gz.
"""
from __future__ import annotations

from pathlib import Path


def brain_labels_of(t1: str | Path, ixi_dir: str | Path) -> Path:
    """The reference brain labels of the IXI T1 named ``t1`` (a name or path), under ``ixi_dir``
    (the folder holding t1/ and brain_labels/), whether or not the file exists."""
    return Path(ixi_dir) / "brain_labels" / Path(t1).name.replace("_T1.nii.gz", "_T1_DLMUSE.nii.gz")
