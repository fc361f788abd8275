"""Provenance: every output says what made it, with what parameters, and what was removed.

The sidecar is a JSON file beside the output (``out.nii.gz`` -> ``out.defacer.json``,
``out_dir/`` -> ``out_dir.defacer.json``) so that a DICOM series keeps its file count and
a NIfTI keeps its bytes apart from the short ``descrip`` note.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

from DeFacerLib import __version__
from DeFacerLib.errors import OutputError
from DeFacerLib.io.atomic import atomic_path, os_error_reason

RECORD_SUFFIX = ".defacer.json"


def sidecar_path(output_path: str | os.PathLike) -> Path:
    from DeFacerLib.io.formats import volume_stem

    output = Path(output_path)
    return output.with_name(volume_stem(output.name) + RECORD_SUFFIX)


def record_path(folder: str | os.PathLike, rel: str) -> Path:
    """Batch's provenance record of the output at ``rel`` (a path relative to the output tree),
    kept in ``folder`` (OUTPUT/.defacer/provenance/): ``REL.defacer.json``, or for an output name
    of 243-255 bytes (a BIDS name with a long acq- label) the shortened name io.atomic.fitted_path
    gives (the item failed with "File name too long" after its head was defaced). Both the run
    that writes a record and one that removes it find it from ``rel`` alone."""
    from DeFacerLib.io.atomic import fitted_path

    return fitted_path(Path(folder) / rel, RECORD_SUFFIX, "provenance record")


def sha256_of(path: str | os.PathLike) -> str:
    """Checksum of a file, or of a folder's files in name order (a DICOM series)."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        hash_file_into(digest, file)
    return digest.hexdigest()


def hash_file_into(digest, path: str | os.PathLike) -> None:
    """Feed a file's bytes to ``digest`` 1 MiB at a time (a 4D volume can be gigabytes): the
    provenance record's checksums and batch's report columns (batch.discover.sha256_files)."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def short_description(features_removed: list[str]) -> str:
    """The note written into formats that carry one (NIfTI descrip holds 80 bytes)."""
    removed = ",".join(features_removed) if features_removed else "nothing"
    return f"DeFacer {__version__} removed: {removed}"[:80]


def build_record(*, input_path, output_path, parameters: dict, report: dict, input_sha256: str | None = None) -> dict:
    """``input_sha256``: the input's checksum taken as it was read (deface_file); hashed here
    after the work, an input replaced meanwhile was recorded by its new content."""
    return {
        "tool": "DeFacer",
        "version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": {"name": Path(input_path).name, "sha256": input_sha256 or sha256_of(input_path)},
        "output": {"path": str(output_path)},
        "parameters": parameters,
        "report": report,
    }


def write_sidecar(record: dict, output_path: str | os.PathLike, overwrite: bool = False, path=None) -> Path:
    """Write the record beside the output, or at ``path`` (DICOM: inside the private audit folder,
    0600 as the audit's other files: it names the input series and the key file)."""
    in_audit = path is not None
    path = Path(path) if path else sidecar_path(output_path)
    record = dict(record)
    record["output"] = dict(record["output"], sha256=sha256_of(output_path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, private=in_audit) as temp:
            temp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    except OSError as error:  # a full disk, a quota: the output's fault, not a bug
        raise OutputError(f"cannot write the provenance file {path}: {os_error_reason(error)}") from None
    return path
