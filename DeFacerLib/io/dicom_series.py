"""Classic single-frame DICOM series: one folder, one file per slice.

Files are grouped by SeriesInstanceUID; non-DICOM files (e.g. a ``.nfo`` dump beside the
slices) are skipped and named in ``source.extra["skipped_files"]``. The writer emits a
folder with the same file names, each file's own tags untouched, only PixelData replaced
where the voxels changed (see ``_dicom_common`` for the rescale representation).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.io import _dicom_common as common
from DeFacerLib.io.formats import DICOM_SERIES
from DeFacerLib.io.walk import walk_folders
from DeFacerLib.volume import SourceInfo, Volume

DicomHook = Callable[[Dataset, int], None]


@dataclass
class SeriesSummary:
    """One series found in a folder (what ``--series`` chooses from)."""

    uid: str
    description: str
    modality: str
    file_count: int
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.uid} ({self.description or 'no description'}, {self.modality or '?'}, {self.file_count} files)"


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _scan(folder: Path, stop_before_pixels: bool) -> tuple[dict[str, list[tuple[Path, Dataset]]], list[str]]:
    """DICOM image files grouped by SeriesInstanceUID, and the names of skipped files."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    skipped: list[str] = []
    for path in _candidate_files(folder):
        ds = common.read_dataset(path, stop_before_pixels=stop_before_pixels)
        if ds is None or "SeriesInstanceUID" not in ds or ("PixelData" not in ds and not stop_before_pixels):
            skipped.append(path.name)
            continue
        if stop_before_pixels and "Rows" not in ds:
            skipped.append(path.name)
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    return groups, skipped


def _summaries(groups: dict[str, list[tuple[Path, Dataset]]]) -> list[SeriesSummary]:
    summaries = []
    for uid, members in groups.items():
        first = members[0][1]
        summaries.append(
            SeriesSummary(
                uid=uid,
                description=str(first.get("SeriesDescription", "") or ""),
                modality=str(first.get("Modality", "") or ""),
                file_count=len(members),
                files=[path.name for path, _ in members],
            )
        )
    return sorted(summaries, key=lambda s: (-s.file_count, s.uid))


def list_dicom_series(folder: str | Path) -> list[SeriesSummary]:
    """Every image series directly in ``folder``, largest first."""
    groups, _ = _scan(Path(folder), stop_before_pixels=True)
    return _summaries(groups)


def _listing(summaries: list[SeriesSummary], shown: int = 6) -> str:
    text = "; ".join(s.line() for s in summaries[:shown])
    return text + (f"; and {len(summaries) - shown} more" if len(summaries) > shown else "")


def _no_dicom_error(folder: Path, skipped: list[str]) -> InputError:
    if not any(folder.iterdir()):
        return InputError(f"{folder} is an empty folder; point to a folder holding one DICOM series")
    subfolders = [p.name for p in folder.iterdir() if p.is_dir()]
    hint = f" (it has subfolders {', '.join(sorted(subfolders)[:3])}: point to the series folder itself)" if subfolders else ""
    return InputError(f"{folder} holds no DICOM image files{hint}; {len(skipped)} other file(s) skipped")


def _refuse_series_in_subfolders(folder: Path, uid: str) -> None:
    """InputError when a sub-folder holds files of series ``uid``: the series is read from one
    folder, and the rest of it left below was defaced and written without those slices, exit 0
    (a head cut short, a study broken). Files of other series there (a localizer kept apart)
    are left alone, as beside it."""
    folder = Path(folder)
    below = []
    for place, _dirs, names in walk_folders(folder):
        if Path(place) == folder:
            continue
        for name in names:
            if name.startswith("."):
                continue
            try:
                ds = pydicom.dcmread(Path(place) / name, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            except Exception:  # not DICOM, damaged, unreadable: not part of the series that is read
                continue
            if str(ds.get("SeriesInstanceUID", "")) == uid:
                below.append((Path(place) / name).relative_to(folder).as_posix())
    if below:
        raise InputError(f"{folder}: {len(below)} more file(s) of series {uid} lie in its sub-folders "
                         f"({', '.join(below[:3])}{', ...' if len(below) > 3 else ''}); a series is read from "
                         "one folder: move them beside the others")


def read_dicom_series(folder: Path, series_uid: str | None = None) -> Volume:
    groups, skipped = _scan(folder, stop_before_pixels=False)
    if not groups:
        raise _no_dicom_error(folder, skipped)
    summaries = _summaries(groups)
    if series_uid is None and len(groups) > 1:
        listing = _listing(summaries)
        raise InputError(f"{folder} mixes {len(groups)} series: {listing}; pick one with --series UID")
    uid = series_uid if series_uid is not None else summaries[0].uid
    if uid not in groups:
        listing = _listing(summaries)
        raise InputError(f"{folder} has no series {uid}; it holds: {listing}")
    _refuse_series_in_subfolders(folder, uid)
    skipped += [path.name for other, members in groups.items() if other != uid for path, _ in members]
    members = sorted(groups[uid], key=lambda item: item[0].name)
    if len(members) == 1 and "PerFrameFunctionalGroupsSequence" in members[0][1]:
        from DeFacerLib.io.dicom_enhanced import read_dicom_enhanced

        volume = read_dicom_enhanced(members[0][0])
        volume.source.extra["skipped_files"] = sorted(skipped)
        return volume
    return _build_volume(folder, members, sorted(skipped), uid)


def _build_volume(folder: Path, members: list[tuple[Path, Dataset]], skipped: list[str], uid: str) -> Volume:
    where = f"{folder} (series {uid})"
    if len(members) == 1:
        raise InputError(f"{where} is 2D (one slice), DeFacer needs a 3D head volume")
    first = members[0][1]
    geometry = []  # (position, orientation, pixel spacing) of each file
    for path, ds in members:
        common.check_scalar(ds, path)
        for key in ("Rows", "Columns"):
            if key not in ds:
                raise InputError(f"{path} lacks {key}; the image is incomplete (re-export or remove it)")
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if key not in ds:
                raise InputError(f"{path} lacks {key}; DeFacer cannot place its slices in space")
        geometry.append(common.plane_geometry(ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing,
                                              str(path)))
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise InputError(f"{path} holds several frames inside a classic series; DeFacer reads one frame per file")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(f"{path} is {ds.Rows}x{ds.Columns} but {members[0][0].name} is {first.Rows}x{first.Columns}; slices of one series must match")
        if not np.allclose(geometry[-1][1], geometry[0][1], atol=1e-4):
            raise InputError(f"{path} is oriented differently from {members[0][0].name}; slices of one series must share one orientation")
        if not np.allclose(geometry[-1][2], geometry[0][2], atol=1e-4):
            raise InputError(f"{path} has a different pixel spacing from {members[0][0].name}")
    decompressed = [common.decompress_in_place(ds, path) for path, ds in members]
    positions = np.array([position for position, _, _ in geometry])
    order, spacing, origin, direction = common.stack_geometry(positions, geometry[0][1], geometry[0][2], where)
    frames = [common.pixel_frames(ds, path)[0] for path, ds in members]
    dtypes = {frame.dtype for frame in frames}
    if len(dtypes) != 1:
        raise InputError(f"{where} mixes pixel types {sorted(str(d) for d in dtypes)}; slices of one series must match")
    stored = np.stack([frames[f].T for f in order], axis=2)
    rescale = [common.rescale_of(members[f][1]) for f in order]
    array, slope, intercept, per_slice = common.combine_rescale(stored, rescale)
    slice_of_file = np.empty(len(order), dtype=int)
    slice_of_file[order] = np.arange(len(order))
    volume = Volume(array=array, spacing_mm=spacing, origin_mm=origin, direction=direction, slope=slope, intercept=intercept)
    volume.source = SourceInfo(
        format=DICOM_SERIES,
        path=str(folder),
        header={
            "files": [path.name for path, _ in members],
            "datasets": [ds for _, ds in members],
            "slice_of_file": slice_of_file.tolist(),
            "rescale_of_file": [common.rescale_of(ds) for _, ds in members],
            "stored_dtype": frames[0].dtype,
            "affine_lps": volume.affine_lps,
        },
        extra={
            "skipped_files": skipped,
            "series_uid": uid,
            "series_description": str(first.get("SeriesDescription", "") or ""),
            "dicom_modality": common.dicom_modality(first),
            "file_count": len(members),
            "per_slice_rescale": per_slice,
            "decompressed_from": sorted({name for name in decompressed if name}),
        },
    )
    return volume


def write_dicom_series(volume: Volume, target_dir: Path, dicom_hook: DicomHook | None = None) -> None:
    """Write one file per slice into ``target_dir`` (an existing empty folder)."""
    header = volume.source.header
    common.check_same_geometry(volume, header["affine_lps"], volume.source.path)
    files, datasets = header["files"], header["datasets"]
    expected = (int(datasets[0].Columns), int(datasets[0].Rows), len(files))
    if volume.array.shape != expected:
        raise OutputError(f"the volume's shape {volume.array.shape} no longer matches its DICOM source {expected}")
    volume_rescale = (volume.slope, volume.intercept)
    dtype = np.dtype(header["stored_dtype"])
    slices = [common.to_stored(volume.array[:, :, header["slice_of_file"][index]].T, volume_rescale,
                               header["rescale_of_file"][index], original, dtype) for index, original in enumerate(datasets)]
    changed = [not np.array_equal(stored, common.pixel_frames(original, Path(name))[0])
               for name, original, stored in zip(files, datasets, slices)]
    for index, (name, original, stored) in enumerate(zip(files, datasets, slices)):
        ds = copy.deepcopy(original)
        if changed[index]:
            ds.PixelData = common.pixel_bytes(stored, dtype, ds)
            common.refresh_pixel_range(ds, stored)
        if any(changed):  # no file of a changed series can know the series' range
            common.drop_series_pixel_range(ds)
        if dicom_hook is not None:
            dicom_hook(ds, index)
        common.save_dataset(ds, target_dir / name)
