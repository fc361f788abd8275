"""Detached-header volumes (NRRD ``.nhdr``, MetaImage ``.mhd``): which files hold their voxels.

Such a volume is two or more files: a small text header and the data file(s) it names. A
defaced one is written the same way (io.write_volume: the data beside the header, named by ITK
after it), so the writer has to know which data file it will make, and which files are the
input's voxels, never to be written over; batch has to know which files of a dataset are a
header's voxels, the face included, never to be copied as ordinary files.
"""
from __future__ import annotations

import re
from pathlib import Path

from DeFacerLib.errors import OutputError
from DeFacerLib.io.formats import METAIMAGE, NRRD

DETACHED_EXTENSIONS = (".nhdr", ".mhd")
# The data file ITK's writers name after a detached header "X.nhdr" / "X.mhd": compressed, raw
DATA_SUFFIXES = {NRRD: (".raw.gz", ".raw"), METAIMAGE: (".zraw", ".raw")}
HEADER_BYTES = 65536

DATA_FILE_LINE = re.compile(r"^[ \t]*(?:ElementDataFile[ \t]*=|data ?file:)[ \t]*(.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)
# "<format with %d> <first> <last> <step> [<axis>]": one data file per number (NRRD and MetaImage)
_NUMBERED_DATA_FILES = re.compile(r"^(\S*%\S*)\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)(?:\s+\d+)?$")
_LISTED_DATA_FILES = re.compile(r"^LIST(?:\s+\d+)?$", re.IGNORECASE)


def is_detached(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(DETACHED_EXTENSIONS)


def written_data_file(header: Path, fmt: str, compressed: bool) -> Path:
    """The data file written beside the detached header ``header`` (``X.nhdr`` -> ``X.raw.gz``)."""
    return possible_data_files(header, fmt)[0 if compressed else 1]


def possible_data_files(header: Path, fmt: str | None = None) -> tuple[Path, Path]:
    """(compressed, raw): the data files a header of that name can be written with; the format
    from the name when not given."""
    name = header.name
    extension = next(e for e in DETACHED_EXTENSIONS if name.lower().endswith(e))
    fmt = fmt or (NRRD if extension == ".nhdr" else METAIMAGE)
    stem = name[: -len(extension)]
    return tuple(header.with_name(stem + suffix) for suffix in DATA_SUFFIXES[fmt])


def header_data_names(text: str) -> list[str] | None:
    """The file names a header's data file line gives, as written: one, a LIST's following lines
    or a numbered pattern's (at most 100,000; [] for a pattern that does not format, or no such
    line); None when the voxels follow the header in its own file (LOCAL)."""
    match = DATA_FILE_LINE.search(text)
    named = match.group(1) if match else ""
    if named.upper() == "LOCAL":
        return None
    if not named:
        return []
    after = text[match.end():]
    if _LISTED_DATA_FILES.match(named):
        return [line.strip() for line in after.splitlines() if line.strip()]
    numbered = _NUMBERED_DATA_FILES.match(named)
    if numbered:
        first, last, step = (int(numbered.group(k)) for k in (2, 3, 4))
        numbers = range(first, last + (1 if step > 0 else -1), step) if step else range(0)
        try:
            return [numbered.group(1) % number for number in numbers[:100_000]]
        except (TypeError, ValueError):
            return []
    return [named]


def read_header_text(header: Path) -> str:
    """The first HEADER_BYTES of ``header`` as text ('' when it cannot be read)."""
    try:
        with open(header, "rb") as stream:
            return stream.read(HEADER_BYTES).decode("latin-1")
    except OSError:
        return ""


def data_files_of(header: Path) -> list[Path]:
    """The files holding the voxels of the detached header ``header``, as its data file line
    names them (relative to the header's folder; a Windows '\\' read as a separator)."""
    names = header_data_names(read_header_text(header)) or []
    return [header.parent / name.replace("\\", "/") for name in names]


def check_data_file(input_path: str | Path | None, header_target: str | Path, fmt: str, compressed: bool,
                    overwrite: bool) -> None:
    """Refuse a detached output whose data file would be one of the input's files (its header or
    its voxels: ``in.nhdr`` naming ``out.raw.gz``, written to ``out.nhdr``) or is there already
    without ``overwrite``: the header's own name was checked, its data file's was not."""
    data = written_data_file(Path(header_target), fmt, compressed)
    if input_path:
        source = Path(input_path)
        inputs = [source, *(data_files_of(source) if is_detached(source) else [])]
        if any(data.resolve() == path.resolve() for path in inputs):
            raise OutputError(f"output {header_target} would write its voxels to {data.name}, a file of the input "
                              f"{source.name}; choose another output name (inputs are never modified)")
    if data.is_dir():
        raise OutputError(f"output {header_target} writes its voxels to {data}, which is a folder; choose another output name")
    if data.exists() and not overwrite:
        raise OutputError(f"output {header_target} writes its voxels to {data}, which exists; pass --overwrite to replace it")
