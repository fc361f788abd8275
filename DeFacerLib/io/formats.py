"""Which reader a path needs, and which output paths fit a format.

Detection goes by what the path is (a folder is a DICOM series), then by extension,
then by content (a DICOM file often has no extension, or ``.dcm``/``.ima``). Anything
else is refused with one line that lists what DeFacer reads.
"""
from __future__ import annotations

import os
from pathlib import Path

from DeFacerLib.errors import InputError, OutputError

NIFTI = "nifti"
MGZ = "mgz"
NRRD = "nrrd"
METAIMAGE = "metaimage"
DICOM_SERIES = "dicom-series"
DICOM_ENHANCED = "dicom-enhanced"
DICOM_FILE = "dicom-file"  # a single DICOM file, not yet told apart (enhanced or one 2D slice)
DICOM_FORMATS = (DICOM_SERIES, DICOM_ENHANCED, DICOM_FILE)

FORMATS = (NIFTI, MGZ, NRRD, METAIMAGE, DICOM_SERIES, DICOM_ENHANCED)

# Extensions read, per format (longest first where one is a suffix of another).
READ_EXTENSIONS = {
    NIFTI: (".nii.gz", ".nii"),
    MGZ: (".mgz", ".mgh"),
    NRRD: (".nrrd", ".nhdr"),
    METAIMAGE: (".mha", ".mhd"),
}
# Extensions written. A detached header (.nhdr/.mhd) is written with its data file beside it
# (io.detached, io.atomic.atomic_detached).
WRITE_EXTENSIONS = {
    NIFTI: (".nii.gz", ".nii"),
    MGZ: (".mgz", ".mgh"),
    NRRD: (".nrrd", ".nhdr"),
    METAIMAGE: (".mha", ".mhd"),
    DICOM_ENHANCED: (".dcm",),
}
DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")
SUPPORTED_TEXT = ".nii/.nii.gz, .mgz/.mgh, .nrrd/.nhdr, .mha/.mhd, a DICOM file or a DICOM series folder"


def volume_stem(name: str) -> str:
    """``name`` less its longest volume extension (`sub-01.run-1.nii.gz` -> `sub-01.run-1`), kept
    whole when nothing else would remain: sidecars, QA reports and pictures are named by it."""
    lowered = name.lower()
    extensions = [e for group in READ_EXTENSIONS.values() for e in group] + list(DICOM_EXTENSIONS)
    for extension in sorted(extensions, key=len, reverse=True):
        if lowered.endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)]
    return name


def has_dicom_magic(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 preamble marker 'DICM' at byte 128."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def format_from_extension(name: str) -> str | None:
    lowered = name.lower()
    for fmt, extensions in READ_EXTENSIONS.items():
        if lowered.endswith(extensions):
            return fmt
    return None


def detect_format(path: str | Path) -> str:
    """The reader a path needs: one of FORMATS or DICOM_FILE; InputError when none fits."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path")
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):  # listing it was an internal error
            raise InputError(f"{path} cannot be read (permission denied); check the folder's permissions")
        return DICOM_SERIES
    if not path.is_file():
        raise InputError(f"{path} is not a regular file or folder")
    if not os.access(path, os.R_OK):  # each reader called this a corrupt file, to re-export
        raise InputError(f"{path} cannot be read (permission denied); check the file's permissions")
    fmt = format_from_extension(path.name)
    if fmt is not None:
        return fmt
    if has_dicom_magic(path) or path.suffix.lower() in DICOM_EXTENSIONS:
        return DICOM_FILE  # the DICOM reader says precisely what is wrong with a bad one
    raise InputError(f"{path}: unknown file type {path.suffix or '(no extension)'!r}; DeFacer reads {SUPPORTED_TEXT}")


def check_output_format(fmt: str, output: str | Path) -> None:
    """Refuse an output path that does not fit the format the volume is written in."""
    output = Path(output)
    if fmt == DICOM_SERIES:
        if format_from_extension(output.name) is not None or output.suffix.lower() in DICOM_EXTENSIONS:
            raise OutputError(
                f"output {output} looks like a file, but a DICOM series is written as a folder; give a folder path"
            )
        if output.exists() and not output.is_dir():
            raise OutputError(f"output {output} is a file, but a DICOM series is written as a folder")
        return
    extensions = WRITE_EXTENSIONS.get(fmt)
    if extensions is None:
        raise OutputError(f"cannot write format {fmt!r} (known: {', '.join(FORMATS)})")
    if output.is_dir():  # `deface head.nii.gz out/`: a folder to write into, as for DICOM
        raise OutputError(f"output {output} is a folder; give a file path ending in {extensions[0]}, "
                          f"e.g. {output / ('defaced' + extensions[0])}")
    if not output.name.lower().endswith(extensions):
        raise OutputError(
            f"output {output} does not fit the input's format ({fmt}); name it with {' or '.join(extensions)}"
        )
