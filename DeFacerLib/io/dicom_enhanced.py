"""Enhanced multi-frame DICOM (e.g. Enhanced MR Image Storage): one file, many frames.

Geometry comes from the functional groups: per-frame values win over shared ones
(PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence,
PixelValueTransformationSequence). Frames are sorted along the slice normal for the
Volume; the writer puts them back in the file's original frame order.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.io import _dicom_common as common
from DeFacerLib.io.dicom_series import DicomHook
from DeFacerLib.io.formats import DICOM_ENHANCED
from DeFacerLib.volume import SourceInfo, Volume


def _group_item(ds: Dataset, frame: Dataset | None, sequence: str) -> Dataset | None:
    """The first item of a functional-group macro for one frame (per-frame, else shared)."""
    for groups in (frame, _shared(ds)):
        if groups is not None and sequence in groups and len(groups[sequence].value) > 0:
            return groups[sequence].value[0]
    return None


def _shared(ds: Dataset) -> Dataset | None:
    shared = ds.get("SharedFunctionalGroupsSequence")
    return shared[0] if shared else None


def is_enhanced(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds


def read_dicom_enhanced(path: Path) -> Volume:
    ds = common.read_dataset(path)
    if ds is None:
        raise InputError(f"{path} is not a DICOM file (no 'DICM' marker); DeFacer reads DICOM Part 10 files")
    if "PixelData" not in ds:
        raise InputError(f"{path} is a DICOM file without an image (no PixelData)")
    if not is_enhanced(ds):
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames <= 1:
            raise InputError(f"{path} is 2D (one DICOM slice), DeFacer needs a 3D head volume; for a series give its folder")
        raise InputError(f"{path} has {frames} frames but no per-frame geometry (PerFrameFunctionalGroupsSequence); DeFacer cannot place them in space")
    common.check_scalar(ds, path)
    per_frame = list(ds.PerFrameFunctionalGroupsSequence)
    count = int(ds.get("NumberOfFrames", len(per_frame)) or len(per_frame))
    if count != len(per_frame):
        raise InputError(f"{path} says {count} frames but describes {len(per_frame)}; the file is inconsistent")
    positions, orientations, spacings, rescale = [], [], [], []
    for index, frame in enumerate(per_frame):
        position = _group_item(ds, frame, "PlanePositionSequence")
        orientation = _group_item(ds, frame, "PlaneOrientationSequence")
        measures = _group_item(ds, frame, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None or "PixelSpacing" not in measures:
            raise InputError(f"{path} frame {index + 1} lacks plane position, orientation or pixel spacing; DeFacer cannot place it in space")
        where = f"{path} frame {index + 1}"
        frame_geometry = common.plane_geometry(position.get("ImagePositionPatient"),
                                               orientation.get("ImageOrientationPatient"), measures.PixelSpacing, where)
        for values, found in zip((positions, orientations, spacings), frame_geometry):
            values.append(found)
        rescale.append(common.rescale_of(_group_item(ds, frame, "PixelValueTransformationSequence") or ds))
    orientations, spacings = np.array(orientations), np.array(spacings)
    if not np.allclose(orientations, orientations[0], atol=1e-4) or not np.allclose(spacings, spacings[0], atol=1e-4):
        raise InputError(f"{path} has frames with different orientations or pixel spacings; DeFacer needs one regular 3D stack")
    order, spacing, origin, direction = common.stack_geometry(np.array(positions), orientations[0], spacings[0], str(path))
    decompressed = common.decompress_in_place(ds, path)
    frames = common.pixel_frames(ds, path)
    stored = np.ascontiguousarray(np.transpose(frames[order], (2, 1, 0)))  # (frames, rows, cols) -> (i, j, k)
    array, slope, intercept, per_slice = common.combine_rescale(stored, [rescale[f] for f in order])
    slice_of_frame = np.empty(len(order), dtype=int)
    slice_of_frame[order] = np.arange(len(order))
    volume = Volume(array=array, spacing_mm=spacing, origin_mm=origin, direction=direction, slope=slope, intercept=intercept)
    volume.source = SourceInfo(
        format=DICOM_ENHANCED,
        path=str(path),
        header={
            "dataset": ds,
            "slice_of_frame": slice_of_frame.tolist(),
            "rescale_of_frame": rescale,
            "stored_dtype": frames.dtype,
            "affine_lps": volume.affine_lps,
        },
        extra={
            "series_uid": str(ds.get("SeriesInstanceUID", "")),
            "series_description": str(ds.get("SeriesDescription", "") or ""),
            "dicom_modality": common.dicom_modality(ds),
            "frame_count": len(per_frame),
            "per_slice_rescale": per_slice,
            "decompressed_from": [decompressed] if decompressed else [],
        },
    )
    return volume


def write_dicom_enhanced(volume: Volume, target: Path, dicom_hook: DicomHook | None = None) -> None:
    header = volume.source.header
    original: Dataset = header["dataset"]
    common.check_same_geometry(volume, header["affine_lps"], volume.source.path)
    count = len(header["slice_of_frame"])
    expected = (int(original.Columns), int(original.Rows), count)
    if volume.array.shape != expected:
        raise OutputError(f"the volume's shape {volume.array.shape} no longer matches its DICOM source {expected}")
    dtype = np.dtype(header["stored_dtype"])
    frames = np.empty((count, int(original.Rows), int(original.Columns)), dtype=dtype)
    volume_rescale = (volume.slope, volume.intercept)
    for frame, k in enumerate(header["slice_of_frame"]):
        frames[frame] = common.to_stored(volume.array[:, :, k].T, volume_rescale, header["rescale_of_frame"][frame], original, dtype)
    ds = copy.deepcopy(original)
    if not np.array_equal(frames, common.pixel_frames(original, target)):
        ds.PixelData = common.pixel_bytes(frames, dtype, ds)
        common.refresh_pixel_range(ds, frames)
        common.drop_series_pixel_range(ds)
    if dicom_hook is not None:
        dicom_hook(ds, 0)
    common.save_dataset(ds, target)
