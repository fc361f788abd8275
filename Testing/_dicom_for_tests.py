"""What the DICOM header tests share: a fixed key in a key file, `defacer scrub` run in-process
with it, and the fake-PHI CT file they start from."""
from __future__ import annotations

from pathlib import Path

import pydicom

from DeFacerLib.cli.main import main

KEY = bytes(range(32))


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "project.key"
    path.write_text(KEY.hex() + "\n")
    path.chmod(0o600)
    return path


def scrub(tmp_path: Path, source: Path, output: Path, *flags: str) -> int:
    """`defacer scrub SOURCE OUTPUT --key-file ... -q FLAGS`'s exit code."""
    return main(["scrub", str(source), str(output), "--key-file", str(key_file(tmp_path)), "-q", *flags])


def fake_phi_ct(data_dir: Path) -> pydicom.Dataset:
    return pydicom.dcmread(data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm")
