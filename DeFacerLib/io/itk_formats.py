"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) through SimpleITK.

ITK already speaks LPS, so geometry passes straight through; only the array axis order
is reversed (SimpleITK's arrays are (k, j, i)). The metadata dictionary is kept and written
back key for key, except the three keys ITK's readers generate themselves
(``READER_KEYS``), whose values SimpleITK only exposes as placeholders. Neither format
stores a rescale slope, so a scaled volume is written as its physical (float32) values.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.io.formats import METAIMAGE, NRRD
from DeFacerLib.volume import SourceInfo, Volume

READER_KEYS = ("ITK_InputFilterName", "ITK_original_direction", "ITK_original_spacing")
DESCRIPTION_KEY = "DeFacer"
FORMAT_NAMES = {NRRD: "NRRD", METAIMAGE: "MetaImage"}
# Named, not guessed from the extension: ITK's guess is case-sensitive and refused "HEAD.MHA"
IMAGE_IO = {NRRD: "NrrdImageIO", METAIMAGE: "MetaImageIO"}


def _is_compressed(path: Path) -> bool:
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
    source = SourceInfo(
        format=fmt,
        path=str(path),
        header={
            "metadata": metadata,
            "compressed": _is_compressed(path),
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
        sitk.WriteImage(image, str(target), bool(info.get("compressed", True)))
    except RuntimeError as error:
        raise OutputError(f"cannot write {target}: {str(error).strip().splitlines()[-1][:160]}") from None
    if target.stat().st_size == 0:  # the writer put the data elsewhere (a detached header and data file)
        raise OutputError(f"cannot write {target.name}: the {FORMAT_NAMES[fmt]} writer left it empty")
