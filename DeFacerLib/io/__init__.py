"""Volumes and DICOM series in and out: every format becomes one ``Volume`` and goes back.

``read_volume`` picks the reader from the path (folder = DICOM series, else extension,
else content); ``write_volume`` writes in the format of the volume's *source*, through
``atomic_path`` so that a failure never leaves a partial output, with every header field
that did not change kept as it was.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
from pydicom.dataset import Dataset

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.intensity import finite_range
from DeFacerLib.io import formats
from DeFacerLib.io.atomic import atomic_detached, atomic_path, check_output_path, os_error_reason
from DeFacerLib.io.detached import check_data_file, is_detached
from DeFacerLib.io.dicom_enhanced import read_dicom_enhanced, write_dicom_enhanced
from DeFacerLib.io.dicom_series import SeriesSummary, list_dicom_series, read_dicom_series, write_dicom_series
from DeFacerLib.io.itk_formats import compressed, read_itk, write_itk
from DeFacerLib.io.modality import guess_modality, guess_modality_with_evidence
from DeFacerLib.io.nifti import read_mgz, read_nifti, write_mgz, write_nifti
from DeFacerLib.volume import SourceInfo, Volume

__all__ = [
    "read_volume",
    "write_volume",
    "with_format",
    "list_dicom_series",
    "SeriesSummary",
    "guess_modality",
    "describe",
]

DicomHook = Callable[[Dataset, int], None]


def read_volume(path: str | Path, *, series_uid: str | None = None) -> Volume:
    """Read a NIfTI/MGZ/NRRD/MetaImage file, an enhanced DICOM file or a DICOM series folder."""
    path = Path(path)
    fmt = formats.detect_format(path)
    if series_uid and fmt not in formats.DICOM_FORMATS:  # it was ignored, and the run went on with the file
        raise InputError(f"{path} is a {fmt} file, not a DICOM folder: a series UID picks nothing in it; "
                         "leave out --series")
    if fmt == formats.NIFTI:
        volume = read_nifti(path)
    elif fmt == formats.MGZ:
        volume = read_mgz(path)
    elif fmt in (formats.NRRD, formats.METAIMAGE):
        volume = read_itk(path, fmt)
    elif fmt == formats.DICOM_SERIES:
        volume = read_dicom_series(path, series_uid=series_uid)
    else:  # a single DICOM file: enhanced multi-frame, or a 2D slice (refused)
        volume = read_dicom_enhanced(path)
    try:
        volume.modality, evidence = guess_modality_with_evidence(volume)
    except MemoryError:
        raise InputError(f"{path} is too large to inspect in memory") from None
    if volume.source is not None:  # what the guess rests on, for reports ("from its name", ...)
        volume.source.extra["modality_from"] = evidence
    return volume


def write_volume(
    volume: Volume,
    path: str | Path,
    *,
    overwrite: bool = False,
    description: str | None = None,
    dicom_hook: DicomHook | None = None,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``volume`` to ``path`` in its source's format; returns the written path.

    ``check(temporary_path)`` runs on what was written before it takes the place of ``path``: if it
    raises, nothing is published and what ``path`` held before stays.

    ``description`` goes where the format keeps a free note (NIfTI ``descrip``, 80 bytes;
    NRRD/MetaImage key ``DeFacer``; ignored for MGZ and DICOM). ``dicom_hook(dataset, index)``
    is called on each DICOM dataset just before it is saved (index = file position in the
    series' sorted file names; 0 for an enhanced file).
    """
    if volume.source is None:  # a new volume (phantom, label map): the output's extension decides
        fmt = formats.format_from_extension(Path(path).name)
        if fmt is None or fmt not in formats.WRITE_EXTENSIONS or fmt == formats.DICOM_ENHANCED:
            raise OutputError(f"cannot choose a format for {path}; name it .nii.gz, .nii, .mgz, .nrrd, .nhdr, .mha or .mhd")
        volume = with_format(volume, fmt)
    fmt = volume.source.format
    target = Path(path)
    formats.check_output_format(fmt, target)
    target = check_output_path(volume.source.path, target, overwrite)
    detached = is_detached(target)
    if detached:
        check_data_file(volume.source.path, target, fmt, compressed(volume), overwrite)
    is_folder = fmt == formats.DICOM_SERIES
    if fmt in (formats.DICOM_SERIES, formats.DICOM_ENHANCED) and not volume.source.header:
        raise OutputError(f"cannot write DICOM {target} without a DICOM source to take the tags from; write NIfTI instead")
    try:
        with (atomic_detached(target, replace=overwrite) if detached
              else atomic_path(target, directory=is_folder, replace=overwrite)) as temp:
            _write_as(fmt, volume, temp, description, dicom_hook)
            if check is not None:
                check(temp)
    except OSError as error:  # a full disk, a quota, a vanished folder: the output's fault, not a bug
        raise OutputError(f"cannot write {path}: {os_error_reason(error)}") from None
    return target


def _write_as(fmt: str, volume: Volume, temp: Path, description: str | None, dicom_hook: DicomHook | None) -> None:
    if fmt == formats.NIFTI:
        write_nifti(volume, temp, description)
    elif fmt == formats.MGZ:
        write_mgz(volume, temp, description)
    elif fmt in (formats.NRRD, formats.METAIMAGE):
        write_itk(volume, temp, fmt, description)
    elif fmt == formats.DICOM_SERIES:
        write_dicom_series(volume, temp, dicom_hook)
    elif fmt == formats.DICOM_ENHANCED:
        write_dicom_enhanced(volume, temp, dicom_hook)
    else:
        raise OutputError(f"cannot write format {fmt!r}")


def with_format(volume: Volume, fmt: str, path: str | Path = "") -> Volume:
    """The same voxels and geometry, to be written as a fresh file of another format.

    The new source has no header, so the writer builds a plain one (NIfTI: sform and qform
    code 1, mm units). ``path`` (default: the old source path) is only what
    ``check_output_path`` compares the output with.
    """
    if fmt not in formats.WRITE_EXTENSIONS or fmt == formats.DICOM_ENHANCED:
        raise OutputError(f"cannot convert to {fmt!r}; choose one of nifti, mgz, nrrd, metaimage")
    old_path = volume.source.path if volume.source else ""
    source = SourceInfo(format=fmt, path=str(path or old_path), header=None, extra={"converted_from": volume.source.format if volume.source else None})
    return dataclasses.replace(volume, source=source)


def has_no_orientation(volume: Volume) -> bool:
    """A NIfTI file whose qform_code and sform_code are both 0 says nothing of where its axes
    point (NIfTI's 'method 1', for old Analyze files): nibabel gives it a plain scaling matrix."""
    source = volume.source
    return (source is not None and source.format == formats.NIFTI
            and source.extra.get("qform_code") == 0 and source.extra.get("sform_code") == 0)


def describe(volume: Volume) -> dict:
    """What ``defacer info`` prints: format, grid, geometry, modality, scaling, value range."""
    physical = volume.physical()
    source = volume.source
    info = {
        "format": source.format if source else None,
        "path": source.path if source else None,
        "shape": tuple(int(n) for n in volume.array.shape),
        "dtype": str(volume.array.dtype),
        "spacing_mm": tuple(round(float(s), 6) for s in volume.spacing_mm),
        "orientation": volume.describe_orientation() + (
            " (not in the header: qform_code and sform_code are 0)" if has_no_orientation(volume) else ""),
        "origin_mm": tuple(round(float(o), 4) for o in volume.origin_mm),
        "modality": volume.modality,
        "slope": float(volume.slope),
        "intercept": float(volume.intercept),
        "value_range": finite_range(physical),  # NaN would make --json invalid JSON
        "stored_range": finite_range(volume.array),
    }
    not_finite = int(volume.array.size - np.count_nonzero(np.isfinite(volume.array)))
    if not_finite:  # NaN outside a resampled field of view is common in float volumes
        info["non_finite_voxels"] = not_finite
    if source is not None:
        for key in ("modality_from", "series_uid", "series_description", "dicom_modality", "file_count",
                    "frame_count", "skipped_files", "per_slice_rescale", "decompressed_from"):
            if key in source.extra:
                info[key] = source.extra[key]
    return info
