"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) through SimpleITK.

ITK already speaks LPS, so geometry passes straight through; only the array axis order
is reversed (SimpleITK's arrays are (k, j, i)). The metadata dictionary is kept and written
back key for key, except the three keys ITK's readers generate themselves
(``READER_KEYS``) and every key SimpleITK only exposes as a placeholder (``PLACEHOLDER``).
NRRD fields held that way (``NRRD_KEPT_FIELDS``: the measurement frame, thicknesses, old
min/max) or not at all (units) are copied from the file's own header text into the written
one; MetaImage's ``Modality``, which ITK's writer ignores, likewise. Neither format stores a rescale slope, so a scaled volume is written as its physical
(float32) values.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.io.detached import is_detached, written_data_file
from DeFacerLib.io.formats import METAIMAGE, NRRD
from DeFacerLib.volume import SourceInfo, Volume

READER_KEYS = ("ITK_InputFilterName", "ITK_original_direction", "ITK_original_spacing")
# What SimpleITK gives for a key whose value is no string or number (a matrix, a list): written
# back, the NRRD writer turned the measurement frame into (666666,666666,666666) x3 and the
# thicknesses into 0, and dropped "old min"/"old max"
PLACEHOLDER = "[UNKNOWN_PRINT_CHARACTERISTICS]\n"
# NRRD header fields that SimpleITK's metadata does not carry (a placeholder, or no key at all):
# copied as they stand in the input's header text. The defacing changes no axis, so they hold.
# ("min"/"max" are not: they describe the voxels, which the defacing changes)
NRRD_KEPT_FIELDS = ("measurement frame", "thicknesses", "old min", "old max", "space units", "units",
                    "sample units")
NRRD_HEADER_BYTES = 1 << 16  # a header longer than this holds no head's fields
# A measurement frame holds vectors in the file's world space: ITK writes a 3D NRRD in LPS (a
# 4D one keeps its "-time" space), so the frame is flipped per axis from the input's space to
# the written one; in a space without an LPS form it is dropped rather than mislaid
LPS_FLIPS = {"left-posterior-superior": (1, 1, 1), "right-anterior-superior": (-1, -1, 1),
             "left-anterior-superior": (1, -1, 1)}
LPS_FLIPS.update({"lps": LPS_FLIPS["left-posterior-superior"], "ras": LPS_FLIPS["right-anterior-superior"],
                  "las": LPS_FLIPS["left-anterior-superior"]})
LPS_FLIPS.update({f"{name}-time": flips for name, flips in list(LPS_FLIPS.items())})
# one value per axis or per space axis: they fit only an output of as many axes as the input
NRRD_AXIS_FIELDS = ("measurement frame", "thicknesses", "space units", "units", "sample units")
DESCRIPTION_KEY = "DeFacer"
METAIMAGE_MODALITY_KEY = "Modality"  # read into the metadata by ITK, but not written from it
FORMAT_NAMES = {NRRD: "NRRD", METAIMAGE: "MetaImage"}
# Named, not guessed from the extension: ITK's guess is case-sensitive and refused "HEAD.MHA"
IMAGE_IO = {NRRD: "NrrdImageIO", METAIMAGE: "MetaImageIO"}


def file_is_compressed(path: Path) -> bool:
    """Whether the file's own header asks for compressed data (kept on write-back)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8192).decode("latin-1", errors="replace")
    except OSError:
        return False
    for line in head.splitlines():
        key, _, value = line.partition(":" if line.lower().startswith("encoding") else "=")
        key, value = key.strip().lower(), value.strip().lower()
        if key == "encoding":
            return value in ("gzip", "gz", "bzip2", "bz2")
        if key == "compresseddata":
            return value == "true"
    return False


@contextlib.contextmanager
def _native_stderr(captured: list[str]) -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 into ``captured`` instead of the terminal.

    ITK's MetaImage reader prints its own lines ('M_ReadElementsData: data not read
    completely') around our one-line error, and its exception then names only errno's
    stale 'No such file or directory'; its printed line is the real reason."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", errors="replace"))


def _read_reason(error: RuntimeError, native_lines: str) -> str:
    """The most telling line: the reader's own complaint, else the exception's last line."""
    printed = [line.removeprefix("MetaImage:").strip() for line in native_lines.splitlines() if line.strip()]
    lines = str(error).strip().splitlines()
    reason = " ".join(printed) if printed else (lines[-1] if lines else "unreadable")
    return reason.replace("sitk::ERROR:", "").strip()[:160]


def read_itk(path: Path, fmt: str) -> Volume:
    native: list[str] = []
    try:
        # only MetaImage's reader prints; fd 2 is the whole process's (Slicer's too), so it is
        # taken for no other reader
        with _native_stderr(native) if fmt == METAIMAGE else contextlib.nullcontext():
            image = sitk.ReadImage(str(path), imageIO=IMAGE_IO[fmt])
    except RuntimeError as error:
        reason = _read_reason(error, "".join(native))
        raise InputError(f"{path} cannot be read as {FORMAT_NAMES[fmt]} ({reason}); the file is corrupt or truncated") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour/vector); DeFacer needs a scalar volume")
    dimension = image.GetDimension()
    array = sitk.GetArrayFromImage(image)
    array = np.ascontiguousarray(array.T)  # (i, j, k[, t])
    shape = array.shape
    if dimension < 3 or any(n <= 1 for n in shape[:3]):
        raise InputError(f"{path} is 2D (shape {shape}), DeFacer needs a 3D head volume")
    if dimension > 4:
        raise InputError(f"{path} has {dimension} dimensions; DeFacer reads 3D or 4D volumes")
    direction = np.array(image.GetDirection(), dtype=float).reshape(dimension, dimension)[:3, :3]
    metadata = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys() if key not in READER_KEYS}
    metadata = {key: value for key, value in metadata.items() if value != PLACEHOLDER}
    source = SourceInfo(
        format=fmt,
        path=str(path),
        header={
            "metadata": metadata,
            "nrrd_fields": _nrrd_kept_fields(path) if fmt == NRRD else {},
            "compressed": file_is_compressed(path),
            "spacing_4d": tuple(image.GetSpacing()[3:]),
            "origin_4d": tuple(image.GetOrigin()[3:]),
        },
        extra={"metadata_keys": sorted(metadata)},
    )
    return Volume(
        array=array,
        spacing_mm=np.array(image.GetSpacing()[:3]),
        origin_mm=np.array(image.GetOrigin()[:3]),
        direction=direction,
        source=source,
    )


def compressed(volume: Volume) -> bool:
    """Whether ``volume`` is written compressed: as its source was, and a new volume always."""
    info = volume.source.header if volume.source and volume.source.format in FORMAT_NAMES and volume.source.header else {}
    return bool(info.get("compressed", True))


def write_itk(volume: Volume, target: Path, fmt: str, description: str | None = None) -> None:
    """Write ``volume`` as NRRD or MetaImage with the source's metadata and compression."""
    info = volume.source.header if volume.source and volume.source.format == fmt and volume.source.header else {}
    array = volume.array if (volume.slope, volume.intercept) == (1.0, 0.0) else volume.physical()
    if array.dtype == bool:
        array = array.astype(np.uint8)
    try:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).T), isVector=False)
    except (RuntimeError, TypeError) as error:
        raise OutputError(f"cannot write {array.dtype} voxels to {target.name}: {error}") from None
    extra_axes = array.ndim - 3
    spacing_4d = tuple(info.get("spacing_4d", ())) or (1.0,) * extra_axes
    origin_4d = tuple(info.get("origin_4d", ())) or (0.0,) * extra_axes
    direction = np.eye(array.ndim)
    direction[:3, :3] = volume.direction
    image.SetSpacing(tuple(float(s) for s in volume.spacing_mm) + spacing_4d[:extra_axes])
    image.SetOrigin(tuple(float(o) for o in volume.origin_mm) + origin_4d[:extra_axes])
    image.SetDirection(tuple(float(d) for d in direction.ravel()))
    for key, value in info.get("metadata", {}).items():
        image.SetMetaData(key, value)
    if description is not None:
        image.SetMetaData(DESCRIPTION_KEY, " ".join(description.split()))
    try:
        sitk.WriteImage(image, str(target), compressed(volume))
    except RuntimeError as error:
        raise OutputError(f"cannot write {target}: {str(error).strip().splitlines()[-1][:160]}") from None
    if target.stat().st_size == 0:  # the writer put the data elsewhere (a detached header and data file)
        raise OutputError(f"cannot write {target.name}: the {FORMAT_NAMES[fmt]} writer left it empty")
    data_file = written_data_file(target, fmt, compressed(volume)) if is_detached(target) else None
    if data_file is not None and not data_file.is_file():  # io.write_volume checked that name before the work
        raise OutputError(f"cannot write {target.name}: the {FORMAT_NAMES[fmt]} writer did not write {data_file.name}")
    if fmt == NRRD and info.get("nrrd_fields", {}).get("lines"):
        _add_nrrd_fields(target, info["nrrd_fields"])
    modality = info.get("metadata", {}).get(METAIMAGE_MODALITY_KEY)
    if fmt == METAIMAGE and modality:
        _add_metaimage_field(target, METAIMAGE_MODALITY_KEY, modality)


def _add_metaimage_field(target: Path, key: str, value: str) -> None:
    """Put ``key = value`` into the MetaImage header ITK wrote, before its last field
    (``ElementDataFile``, which the voxels follow); the voxels are copied as they are."""
    raw = target.read_bytes()
    at = raw.find(b"\nElementDataFile")
    if at < 0 or f"\n{key} =".encode() in raw[:at]:
        return
    with open(target, "wb") as handle:
        handle.write(raw[:at + 1])
        handle.write(f"{key} = {' '.join(value.split())}\n".encode("latin-1", errors="replace"))
        handle.write(raw[at + 1:])


def _nrrd_header_lines(raw: bytes, whole: bool = True) -> list[str]:
    """The lines of an NRRD header: up to its first empty line (attached data follows it) or the
    end of a detached header (.nhdr). ``whole``: False when ``raw`` is a file's first bytes only,
    whose last line may be cut (it is left out: copied cut, a field made the output unreadable)."""
    end = raw.find(b"\n\n")
    lines = raw[: end if end >= 0 else len(raw)].decode("latin-1").splitlines()
    return lines if end >= 0 or whole else lines[:-1]


def _field_name(line: str) -> str | None:
    """The field a header line sets ("space units: ..."), None for a key/value pair (":=") or a comment."""
    name, sep, _value = line.partition(":")
    if not sep or line.startswith("#") or _value.startswith("="):
        return None
    return name.strip().lower()


def _nrrd_kept_fields(path: Path) -> dict:
    """The input's header lines setting one of NRRD_KEPT_FIELDS, as they stand, with its space
    and dimension (what the frame and the per-axis fields are written in)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(NRRD_HEADER_BYTES)
    except OSError:
        return {}
    lines = _nrrd_header_lines(raw, whole=len(raw) < NRRD_HEADER_BYTES)
    return {"lines": [line for line in lines if _field_name(line) in NRRD_KEPT_FIELDS],
            "space": _field_value(lines, "space"), "dimension": _field_value(lines, "dimension")}


def _field_value(lines: list[str], name: str) -> str | None:
    return next((line.partition(":")[2].strip().lower() for line in lines if _field_name(line) == name), None)


def _measurement_frame_flipped(line: str, flips: tuple[int, int, int] | None) -> str | None:
    """The ``measurement frame`` line with its vectors' world components flipped per axis;
    None without flips (a space that has no LPS form, or no space at all)."""
    if flips is None:
        return None
    if flips == (1, 1, 1):
        return line
    vectors = re.findall(r"\(([^)]*)\)", line)
    try:
        parsed = [[float(x) for x in vector.split(",")] for vector in vectors]
    except ValueError:
        return None
    flipped = [[x * (flips[i] if i < 3 else 1) + 0.0 for i, x in enumerate(vector)] for vector in parsed]
    return "measurement frame: " + " ".join("(" + ",".join(f"{x:.17g}" for x in v) + ")" for v in flipped)


def _add_nrrd_fields(target: Path, kept: dict) -> None:
    """Put the input's ``kept`` lines into the NRRD file ITK wrote, in place of any line of the
    same fields it wrote itself: the frame flipped into the written space, the per-axis fields
    only for as many axes as the input's; the data after the header is copied as it is."""
    raw = target.read_bytes()
    end = raw.find(b"\n\n")
    if end < 0 and is_detached(target):  # the whole file is the header
        raw = raw.rstrip(b"\n") + b"\n"
        end = len(raw) - 1
    if end < 0:
        raise OutputError(f"cannot write {target.name}: the NRRD writer left no header end")
    written = raw[:end].decode("latin-1").splitlines()
    into, out_of = LPS_FLIPS.get(_field_value(written, "space") or ""), LPS_FLIPS.get(kept.get("space") or "")
    flips = tuple(a * b for a, b in zip(into, out_of)) if into and out_of else None
    fields = []
    same_axes = _field_value(written, "dimension") == kept.get("dimension")
    for line in kept["lines"]:
        if _field_name(line) in NRRD_AXIS_FIELDS and not same_axes:
            line = None
        elif _field_name(line) == "measurement frame":
            line = _measurement_frame_flipped(line, flips)
        if line is not None:
            fields.append(line)
    names = {_field_name(line) for line in fields}
    lines = [line for line in written if _field_name(line) not in names]
    header = "\n".join(lines + fields).encode("latin-1")
    with open(target, "wb") as handle:
        handle.write(header)
        handle.write(raw[end:])
