"""Pieces shared by the classic-series and the enhanced multi-frame DICOM readers/writers.

Rescale representation: when every slice (file or frame) has the same RescaleSlope and
RescaleIntercept, the Volume keeps the stored integers with that slope/intercept. When they
differ, the Volume holds the *physical* values as float64 (slope 1, intercept 0): exact,
since float64 represents stored*slope+intercept of 16-bit data without loss, and the writer
maps each slice back through its own file's slope/intercept (rint), which restores the
original stored integers of an unchanged slice exactly.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.io.atomic import os_error_reason

DECODER_HINT = "install a decoder (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle) or decompress it first (e.g. gdcmconv --raw)"
MODALITY_OF_DICOM = {"MR": "MR", "CT": "CT", "PT": "PT"}


def transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None) if meta is not None else None


def decompress_in_place(ds: Dataset, path: Path | str) -> str | None:
    """Decode compressed pixel data in ``ds`` (keeping its UIDs); returns the old syntax name."""
    syntax = transfer_syntax(ds)
    if syntax is not None and not syntax.is_transfer_syntax:  # private or mistyped: an internal error in pydicom
        raise InputError(f"{path} has an unknown transfer syntax {str(syntax).strip() or '(empty)'} in its file meta; "
                         "re-export it with a standard transfer syntax")
    if syntax is None or not syntax.is_compressed:
        return None
    require_decoder(ds, path)
    try:
        ds.decompress(generate_instance_uid=False)
    except Exception as error:  # missing plugin (RuntimeError) or broken stream
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path} is compressed ({syntax.name}) and cannot be decoded ({reason}); {DECODER_HINT}") from None
    return syntax.name


def require_decoder(ds: Dataset, path: Path | str) -> None:
    """An InputError that says what to install when ``ds``'s pixels are compressed in a syntax no
    installed plugin decodes (pydicom's own reason is a list of plugins over several lines)."""
    syntax = transfer_syntax(ds)
    if syntax is not None and syntax.is_transfer_syntax and syntax.is_compressed and not _decoder_installed(syntax):
        raise InputError(f"{path} is compressed ({syntax.name}) and no decoder for it is installed; {DECODER_HINT}")


def _decoder_installed(syntax: UID) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:  # a syntax pydicom has no decoder for at all
        return False


def check_scalar(ds: Dataset, path: Path) -> None:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise InputError(f"{path} is a colour image ({samples} samples per pixel); DeFacer needs a greyscale 3D volume")


def pixel_frames(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values as (frames, rows, columns), in native byte order."""
    try:
        pixels = ds.pixel_array
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path} has unreadable pixel data ({reason}); the file is corrupt or truncated") from None
    if pixels.ndim == 2:
        pixels = pixels[None]
    return pixels


def rescale_of(item: Dataset | None) -> tuple[float, float]:
    """(slope, intercept) of a dataset or functional-group item; identity when absent."""
    if item is None:
        return 1.0, 0.0
    slope = item.get("RescaleSlope", None)
    intercept = item.get("RescaleIntercept", None)
    slope = float(slope) if slope not in (None, "") else 1.0
    intercept = float(intercept) if intercept not in (None, "") else 0.0
    return (slope or 1.0), intercept


def combine_rescale(stored: np.ndarray, rescale: list[tuple[float, float]]) -> tuple[np.ndarray, float, float, bool]:
    """Volume array, slope, intercept and whether slices carry their own rescale.

    ``stored`` is (i, j, k) in slice order and ``rescale`` one (slope, intercept) per slice.
    """
    if len(set(rescale)) <= 1:
        slope, intercept = rescale[0] if rescale else (1.0, 0.0)
        return stored, slope, intercept, False
    slopes = np.array([s for s, _ in rescale], dtype=np.float64)
    intercepts = np.array([b for _, b in rescale], dtype=np.float64)
    physical = stored.astype(np.float64) * slopes[None, None, :] + intercepts[None, None, :]
    return physical, 1.0, 0.0, True


def to_stored(values: np.ndarray, volume_rescale: tuple[float, float], slice_rescale: tuple[float, float],
              ds: Dataset, dtype: np.dtype) -> np.ndarray:
    """Map one slice of Volume values to the stored integers of its own file/frame."""
    if volume_rescale != slice_rescale or values.dtype != dtype:
        physical = values.astype(np.float64) * volume_rescale[0] + volume_rescale[1]
        raw = np.rint((physical - slice_rescale[1]) / slice_rescale[0])
        bits = int(ds.get("BitsStored", dtype.itemsize * 8))
        if np.issubdtype(dtype, np.signedinteger) or int(ds.get("PixelRepresentation", 0)) == 1:
            low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            low, high = 0, 2**bits - 1
        values = np.clip(raw, low, high)
    return np.ascontiguousarray(values.astype(dtype, copy=False))


def pixel_bytes(values: np.ndarray, dtype: np.dtype, ds: Dataset) -> bytes:
    """Native PixelData bytes in the byte order of the dataset's transfer syntax (Explicit VR
    Big Endian stores OW words big-endian; pydicom writes the bytes as they are)."""
    syntax = transfer_syntax(ds)
    order = ">" if syntax is not None and not syntax.is_little_endian else "<"
    return values.astype(dtype.newbyteorder(order), copy=False).tobytes()


def refresh_pixel_range(ds: Dataset, stored: np.ndarray) -> None:
    """New pixels: Smallest/Largest Image Pixel Value (Type 3), if present, say their range (the
    face often held a slice's brightest voxels: 35 of the 176 MPRAGE files kept a stale maximum)."""
    for tag, value in ((0x00280106, stored.min()), (0x00280107, stored.max())):
        if tag in ds:
            ds[tag].value = int(value)


def drop_series_pixel_range(ds: Dataset) -> None:
    """Smallest/Largest Pixel Value in Series (Type 3) go: one file cannot know them anew."""
    for tag in (0x00280108, 0x00280109):
        if tag in ds:
            del ds[tag]


def check_same_geometry(volume, affine_lps: np.ndarray, path: str) -> None:
    if volume.array.ndim != 3:
        raise OutputError(f"DICOM write-back needs a 3D volume, got shape {volume.array.shape}")
    if not np.allclose(volume.affine_lps, affine_lps, rtol=0, atol=1e-4):
        raise OutputError(
            f"the volume's geometry no longer matches its DICOM source {path}; DICOM write-back keeps the source "
            "geometry, write NIfTI or NRRD instead"
        )


def save_dataset(ds: Dataset, target: Path) -> None:
    try:
        ds.save_as(target, enforce_file_format=False)
    except OSError as error:  # pydicom re-raises it with its traceback in the message: the reason alone, for
        # write_volume to name the output ("cannot write .out.x1y2.partial/00001.dcm" named a hidden temporary)
        raise OSError(error.errno, os_error_reason(error)) from None


def dicom_modality(ds: Dataset) -> str | None:
    value = str(ds.get("Modality", "") or "").upper()
    return value or None


def read_dataset(path: Path, stop_before_pixels: bool = False) -> Dataset | None:
    """A DICOM dataset, or None when the file is not DICOM (no 'DICM' marker).

    A file that ends inside an undefined-length element (compressed pixel data, a sequence) is
    an error: pydicom only warns, and hands back what it got, an empty dataset for a cut RLE or
    JPEG slice, which the series reader then skipped as a note: the series lost a slice."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError:
        return None
    except PermissionError:  # not damaged: "re-export or remove it" would lose a good slice
        raise InputError(f"{path} cannot be read (permission denied); check the file's permissions") from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path} is a damaged DICOM file ({reason}); re-export or remove it") from None
    for warning in caught:
        if "End of file reached" in str(warning.message):
            raise InputError(f"{path} is truncated (it ends inside its last element, no sequence delimiter); "
                             "re-export or re-copy it")
        # once per message in a process, as pydicom's own warnings show (a series reads every
        # slice: 5 reads printed 15 lines, not 3); warnings' own registry is reset by the
        # catch_warnings above, so the messages passed on are remembered here
        seen = (warning.category, str(warning.message))
        if seen not in _PASSED_ON:
            _PASSED_ON.add(seen)
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return ds


_PASSED_ON: set = set()  # the pydicom warnings read_dataset has passed on


NUMERIC_TEXT = re.compile(r"[0-9eE+\-. \\]*")  # what a DS value may hold (PS3.5 6.2), multi-valued
ORTHOGONAL_COSINE = 0.01  # row and column directions this far from square (0.6 degrees) are not one plane's axes


def plane_geometry(position, orientation, pixel_spacing, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImagePositionPatient (3 numbers), ImageOrientationPatient (6) and PixelSpacing (2) as
    float arrays. A wrong count, a non-number, a spacing that is not positive or direction
    vectors of zero length or not square to each other place no voxel: each made a NaN or
    empty geometry that ended, far from the file, in an internal error or a run on nonsense."""
    values = []
    for name, value, count in (("ImagePositionPatient", position, 3), ("ImageOrientationPatient", orientation, 6),
                               ("PixelSpacing", pixel_spacing, 2)):
        items = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
        try:
            numbers = np.array([float(item) for item in items], dtype=float)
        except (TypeError, ValueError):
            numbers = np.array([])
        if numbers.size != count or not np.all(np.isfinite(numbers)):
            shown = "\\".join(str(item) for item in items if item is not None)
            if not NUMERIC_TEXT.fullmatch(shown):  # a damaged header may hold anything, a name too, and
                shown = "(text that is not numbers)"  # this message reaches batch's shared reports
            shown = shown or "(empty)"
            raise InputError(f"{where} has {name} {shown}, not {count} numbers; DeFacer cannot place it in space")
        values.append(numbers)
    position, orientation, pixel_spacing = values
    if np.any(pixel_spacing <= 0):
        raise InputError(f"{where} has PixelSpacing {pixel_spacing.tolist()}; a voxel size must be above 0 mm")
    row, col = orientation[:3], orientation[3:]
    lengths = np.linalg.norm(row), np.linalg.norm(col)
    if min(lengths) < 1e-6 or abs(row @ col) / (lengths[0] * lengths[1]) > ORTHOGONAL_COSINE:
        raise InputError(f"{where} has ImageOrientationPatient {orientation.tolist()}, whose row and column directions "
                         "are zero or not at right angles; DeFacer cannot place it in space")
    return position, orientation, pixel_spacing


def stack_geometry(positions: np.ndarray, orientation: np.ndarray, pixel_spacing: np.ndarray, where: str):
    """Sort slices along their normal and derive (order, spacing, origin, direction) in LPS.

    DICOM's ImageOrientationPatient gives the row direction (increasing column index,
    array axis i) then the column direction (increasing row index, axis j); PixelSpacing
    is (between rows, between columns), i.e. (spacing_j, spacing_i).
    """
    row = orientation[:3] / np.linalg.norm(orientation[:3])
    col = orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    if len(order) < 2:
        raise InputError(f"{where} is 2D (one slice), DeFacer needs a 3D head volume")
    steps = np.diff(distance[order])
    if np.any(steps < 1e-4):
        raise InputError(
            f"{where} has several slices at the same position (echoes, phases or repeated acquisitions); "
            "split them into separate series first"
        )
    spacing_k = float(distance[order[-1]] - distance[order[0]]) / (len(order) - 1)
    tolerance_mm = max(0.01, 0.01 * spacing_k)
    origin = positions[order[0]]
    expected = origin[None, :] + np.arange(len(order))[:, None] * spacing_k * normal[None, :]
    deviation_mm = float(np.max(np.linalg.norm(positions[order] - expected, axis=1)))
    if deviation_mm > tolerance_mm and float(steps.max() - steps.min()) <= tolerance_mm:
        # even steps along a line off the normal: a CT gantry tilt (the planes lean, the table moves
        # straight); "missing files?" sent the user looking for a gap that is not there
        span = positions[order[-1]] - positions[order[0]]
        slant = float(np.degrees(np.arccos(min(1.0, abs(float(span @ normal)) / float(np.linalg.norm(span))))))
        raise InputError(
            f"{where} has its slices stacked at a slant, {slant:.1f} degrees off square to their planes (a CT "
            "gantry tilt); DeFacer needs a stack square to its slices: resample it first (dcm2niix corrects a "
            "gantry tilt)"
        )
    if deviation_mm > tolerance_mm:
        raise InputError(
            f"{where} has unevenly spaced or tilted slices (off a regular stack by {deviation_mm:.3f} mm, "
            f"steps {steps.min():.3f}-{steps.max():.3f} mm); DeFacer needs a regular 3D stack (missing files?)"
        )
    spacing = np.array([float(pixel_spacing[1]), float(pixel_spacing[0]), spacing_k])
    direction = np.column_stack([row, col, normal])
    return order, spacing, origin.astype(float), direction
