"""Bad inputs and bad outputs: each is one InputError/OutputError line, never a traceback or a partial file."""
from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless, RLELossless

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.io import read_volume, write_volume
from DeFacerLib.volume import SourceInfo


def input_error(path, match: str, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as caught:
        read_volume(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, "errors must be one line"
    assert Path(path).name in message, "the message names the file"
    return message


@pytest.fixture(scope="module")
def ixi_path(data_dir) -> Path:
    return data_dir / "heads" / "ixi" / "t1" / "IXI132-HH-1415_T1.nii.gz"


@pytest.fixture(scope="module")
def trio_dir(data_dir) -> Path:
    return data_dir / "dicom" / "siemens_trio_mprage_1mm"


def copy_trio(trio_dir: Path, target: Path, names: list[str]) -> Path:
    target.mkdir()
    for name in names:
        shutil.copy(trio_dir / name, target / name)
    return target


def no_temp_files(folder: Path) -> bool:
    return not any(".partial" in p.name for p in folder.iterdir())


# ---- inputs ---------------------------------------------------------------------------------
def test_nonexistent_path(tmp_path):
    input_error(tmp_path / "missing.nii.gz", "does not exist")


def test_unknown_extension(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"\x00" * 1000)
    message = input_error(path, "unknown file type")
    assert ".nii" in message and "DICOM" in message


def test_truncated_nifti_gz(ixi_path, tmp_path):
    raw = ixi_path.read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    input_error(path, "truncated")


def test_truncated_uncompressed_nifti(ixi_path, tmp_path):
    raw = gzip.decompress(ixi_path.read_bytes())
    path = tmp_path / "short.nii"
    path.write_bytes(raw[:200])
    input_error(path, "too short")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_header_larger_than_data(ixi_path, tmp_path, suffix):
    raw = bytearray(gzip.decompress(ixi_path.read_bytes()))
    struct.pack_into("<h", raw, 40 + 2 * 3, 200)  # dim[3]: 90 slices claimed as 200
    path = tmp_path / f"lying{suffix}"
    path.write_bytes(gzip.compress(bytes(raw)) if suffix.endswith(".gz") else bytes(raw))
    input_error(path, "corrupt or truncated")


def test_nifti_with_one_slice_is_2d(ixi_path, tmp_path):
    img = nib.load(ixi_path)
    path = tmp_path / "one_slice.nii.gz"
    nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, 40:41], img.affine).to_filename(path)
    input_error(path, "is 2D.*DeFacer needs a 3D head volume")


def test_single_dicom_slice_is_2d(data_dir):
    input_error(data_dir / "dicom" / "deid_samples" / "image1.dcm", "is 2D.*DeFacer needs a 3D head volume")


def test_folder_with_one_dicom_slice_is_2d(trio_dir, tmp_path):
    folder = copy_trio(trio_dir, tmp_path / "one", ["00050.dcm"])
    input_error(folder, "is 2D")


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    input_error(folder, "empty folder")


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not an image\n")
    (folder / "sub").mkdir()
    message = input_error(folder, "holds no DICOM")
    assert "subfolders sub" in message


def test_mixed_series_folder(trio_dir, data_dir, tmp_path):
    names = [f"{i:05d}.dcm" for i in range(60, 66)]
    folder = copy_trio(trio_dir, tmp_path / "mixed", names)
    shutil.copy(data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1" / "0001.dcm", folder / "other.dcm")
    message = input_error(folder, "mixes 2 series")
    assert "--series UID" in message
    assert "1.3.12.2.1107.5.2.32.35389.2010072308581490237297697.0.0.0 (t1_MPRAGEcr_noGRAPPA, MR, 6 files)" in message
    assert "anat-T1w_acq-tfl, MR, 1 files" in message
    chosen = read_volume(folder, series_uid="1.3.12.2.1107.5.2.32.35389.2010072308581490237297697.0.0.0")
    assert chosen.array.shape == (256, 256, 6) and chosen.source.extra["skipped_files"] == ["other.dcm"]
    enhanced = read_volume(folder, series_uid="1.3.12.2.1107.5.2.43.67093.2022071112080803357602701.0.0.0")
    assert enhanced.array.shape == (128, 128, 96) and len(enhanced.source.extra["skipped_files"]) == 6
    input_error(folder, "has no series 1.2.3", series_uid="1.2.3")


def test_series_with_a_missing_slice(trio_dir, tmp_path):
    names = [f"{i:05d}.dcm" for i in range(60, 70) if i != 64]
    input_error(copy_trio(trio_dir, tmp_path / "gap", names), "unevenly spaced")


def test_series_with_a_gantry_tilt(trio_dir, tmp_path):
    """Planes turned 15 degrees about their rows while the positions stay on one line: what a
    head CT acquired with a tilted gantry writes. It was refused as "unevenly spaced or tilted
    slices ... (missing files?)", though no file is missing and the steps are even."""
    from scipy.spatial.transform import Rotation

    folder = copy_trio(trio_dir, tmp_path / "tilt", [f"{i:05d}.dcm" for i in range(60, 70)])
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
        turn = Rotation.from_rotvec(np.radians(15) * row / np.linalg.norm(row)).as_matrix()
        ds.ImageOrientationPatient = [float(v) for v in (*row, *(turn @ col))]
        ds.save_as(path)
    message = input_error(folder, "gantry tilt")
    assert "15.0 degrees" in message and "missing files" not in message


def test_series_with_duplicate_slices(trio_dir, tmp_path):
    folder = copy_trio(trio_dir, tmp_path / "dup", ["00060.dcm", "00061.dcm", "00062.dcm"])
    shutil.copy(folder / "00061.dcm", folder / "00061_copy.dcm")
    input_error(folder, "same position")


@pytest.mark.parametrize("name", ["notes.nii.gz", "notes.nii", "notes.mgz", "notes.nrrd", "notes.mha", "notes.dcm"])
def test_file_that_is_not_an_image(tmp_path, name):
    path = tmp_path / name
    path.write_text("This is a text file, not an image. " * 40)
    input_error(path, "cannot be read|not a NIfTI|not gzip|not a DICOM|corrupt|too short")


def test_colour_dicom_is_refused(data_dir, tmp_path):
    folder = tmp_path / "ct"
    shutil.copytree(data_dir / "dicom" / "fake_phi_ct", folder)
    input_error(folder, "colour image")


@pytest.mark.skipif(get_decoder(JPEGLSLossless).is_available, reason="a JPEG-LS decoder is installed")
def test_compressed_without_decoder(trio_dir, tmp_path):
    folder = tmp_path / "jpegls"
    folder.mkdir()
    for name in ("00060.dcm", "00061.dcm", "00062.dcm"):
        ds = pydicom.dcmread(trio_dir / name)
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless  # encapsulated, but no decoder for it
        ds.save_as(folder / name)
    message = input_error(folder, "is compressed .JPEG-LS Lossless")
    assert "pip install" in message
    # said plainly: pydicom's own reason is a plugin list over several lines, whose first line
    # alone ("... are all missing dependencies:)") was quoted
    assert "no decoder for it is installed" in message and "dependencies:" not in message


def test_a_warning_of_every_slice_is_shown_once(trio_dir, tmp_path):
    """read_dataset passes pydicom's warnings on, but every time: a series whose files all
    say Explicit VR and hold Implicit VR printed the same warnings once per slice."""
    import warnings

    from DeFacerLib.io._dicom_common import read_dataset

    ds = pydicom.dcmread(trio_dir / "00060.dcm")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(tmp_path / "implicit.dcm", implicit_vr=True, little_endian=True, enforce_file_format=True)
    lying = (tmp_path / "implicit.dcm").read_bytes().replace(b"1.2.840.10008.1.2\x00", b"1.2.840.10008.1.2.1")
    assert lying != (tmp_path / "implicit.dcm").read_bytes()
    for index in range(4):
        (tmp_path / f"{index}.dcm").write_bytes(lying)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for index in range(4):
            read_dataset(tmp_path / f"{index}.dcm")
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == len(set(messages)), messages


def test_compressed_slice_cut_short(trio_dir, data_dir, tmp_path):
    """An RLE (or JPEG) file that ends inside its pixel data reads, with a pydicom warning, as an
    empty dataset. The series reader took it for a note and skipped it: a series whose end slice
    was cut was read, defaced and written one slice short (175 of 176 files, exit 0), one cut
    in the middle failed as "unevenly spaced ... (missing files?)"; a cut enhanced multi-frame
    file was "a DICOM file without an image"."""
    folder = tmp_path / "rle"
    folder.mkdir()
    for name in ("00060.dcm", "00061.dcm", "00062.dcm"):
        ds = pydicom.dcmread(trio_dir / name)
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(folder / name)
    assert read_volume(folder).shape3 == (256, 256, 3)
    raw = (folder / "00062.dcm").read_bytes()  # an end slice of the stack
    (folder / "00062.dcm").write_bytes(raw[: len(raw) * 2 // 3])
    input_error(folder, "00062.dcm is truncated")
    enhanced = pydicom.dcmread(data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1" / "0001.dcm")
    enhanced.compress(RLELossless, generate_instance_uid=False)
    enhanced.save_as(tmp_path / "enhanced.dcm")
    raw = (tmp_path / "enhanced.dcm").read_bytes()
    (tmp_path / "enhanced.dcm").write_bytes(raw[: len(raw) * 2 // 3])
    input_error(tmp_path / "enhanced.dcm", "enhanced.dcm is truncated")


def edited_trio(trio_dir: Path, folder: Path, edit, names=("00060.dcm", "00061.dcm", "00062.dcm")) -> Path:
    """Three MPRAGE slices, each changed by ``edit(ds)``."""
    folder.mkdir()
    for name in names:
        ds = pydicom.dcmread(trio_dir / name)
        edit(ds)
        ds.save_as(folder / name, enforce_file_format=False)
    return folder


def set_value(keyword: str, vr: str, value):
    tag = pydicom.datadict.tag_for_keyword(keyword)
    return lambda ds: ds.__setitem__(tag, pydicom.DataElement(tag, vr, value))


@pytest.mark.parametrize("edit, match", [
    # each placed no voxel: an internal error (IndexError, ValueError, OverflowError) or a NaN geometry
    (set_value("PixelSpacing", "DS", "0\\0"), "PixelSpacing .* must be above 0 mm"),
    (set_value("PixelSpacing", "DS", "-1\\-1"), "PixelSpacing .* must be above 0 mm"),
    (set_value("PixelSpacing", "DS", "1.0"), "PixelSpacing 1.0, not 2 numbers"),
    (set_value("ImageOrientationPatient", "DS", "0\\0\\0\\0\\0\\0"), "ImageOrientationPatient .* not at right angles"),
    (set_value("ImageOrientationPatient", "DS", "1\\0\\0\\1\\0\\0"), "ImageOrientationPatient .* not at right angles"),
    (set_value("ImagePositionPatient", "DS", "1\\2"), "ImagePositionPatient 1.2, not 3 numbers"),
    (set_value("ImagePositionPatient", "DS", ""), "ImagePositionPatient .empty., not 3 numbers"),
    (lambda ds: delattr(ds, "Rows"), "lacks Rows"),
    (lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.4.5"), "unknown transfer syntax 1.2.3.4.5"),
], ids=["spacing-zero", "spacing-negative", "spacing-one-value", "orientation-zero", "orientation-parallel",
        "position-two-values", "position-empty", "no-rows", "unknown-transfer-syntax"])
def test_a_slice_that_cannot_be_placed_is_an_input_error(trio_dir, tmp_path, edit, match):
    input_error(edited_trio(trio_dir, tmp_path / "series", edit), match)


def test_an_enhanced_frame_with_zero_pixel_spacing_is_an_input_error(data_dir, tmp_path):
    """It read as a volume of infinite resolution; deface ended in an internal error (OverflowError)."""
    ds = pydicom.dcmread(data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1" / "0001.dcm")
    for groups in [*ds.PerFrameFunctionalGroupsSequence, *ds.SharedFunctionalGroupsSequence]:
        if "PixelMeasuresSequence" in groups:
            groups.PixelMeasuresSequence[0].PixelSpacing = [0, 0]
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=False)
    input_error(tmp_path / "enhanced.dcm", "frame 1 has PixelSpacing .* must be above 0 mm")


# ---- outputs ---------------------------------------------------------------------------------
@pytest.fixture()
def ixi_copy(ixi_path, tmp_path) -> Path:
    return Path(shutil.copy(ixi_path, tmp_path / "input.nii.gz"))


def test_existing_output_needs_overwrite(ixi_copy, tmp_path):
    volume = read_volume(ixi_copy)
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        write_volume(volume, out)
    assert out.read_bytes() == b"old"
    write_volume(volume, out, overwrite=True)
    assert np.array_equal(read_volume(out).array, volume.array)
    assert no_temp_files(tmp_path)


def test_output_is_input(ixi_copy):
    before = ixi_copy.read_bytes()
    with pytest.raises(OutputError, match="is the input"):
        write_volume(read_volume(ixi_copy), ixi_copy, overwrite=True)
    assert ixi_copy.read_bytes() == before


def test_output_inside_input_folder(trio_dir, tmp_path):
    folder = copy_trio(trio_dir, tmp_path / "series", [f"{i:05d}.dcm" for i in range(60, 64)])
    with pytest.raises(OutputError, match="inside the input folder"):
        write_volume(read_volume(folder), folder / "defaced")


def test_read_only_or_missing_output_folder(ixi_copy, tmp_path):
    volume = read_volume(ixi_copy)
    with pytest.raises(OutputError, match="does not exist"):
        write_volume(volume, tmp_path / "no_such_folder" / "out.nii.gz")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root bypasses permission bits: nothing to refuse here
            pytest.skip("running as root: a read-only folder is still writable; covered by the missing-folder case")
        with pytest.raises(OutputError, match="not writable"):
            write_volume(volume, locked / "out.nii.gz")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    "source,output,match",
    [
        ("nifti", "out.nrrd", r"\.nii\.gz or \.nii"),
        ("dicom-series", "out.nii.gz", "written as a folder"),
        ("dicom-enhanced", "out.nii", r"\.dcm"),
    ],
)
def test_output_must_fit_the_format(ixi_copy, trio_dir, data_dir, tmp_path, source, output, match):
    paths = {
        "nifti": ixi_copy,
        "dicom-series": copy_trio(trio_dir, tmp_path / "s", ["00060.dcm", "00061.dcm"]) if source == "dicom-series" else None,
        "dicom-enhanced": data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1" / "0001.dcm",
    }
    with pytest.raises(OutputError, match=match):
        write_volume(read_volume(paths[source]), tmp_path / output)
    assert not (tmp_path / output).exists()


def test_failed_writes_leave_nothing_behind(ixi_copy, trio_dir, tmp_path):
    volume = read_volume(ixi_copy)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(OutputError, match="cannot write"):
        write_volume(volume.with_array(volume.array.astype(object)), out_dir / "bad.nii.gz")
    assert list(out_dir.iterdir()) == []

    series = read_volume(copy_trio(trio_dir, tmp_path / "series", [f"{i:05d}.dcm" for i in range(60, 66)]))

    def failing_hook(ds, index):
        if index == 3:
            raise RuntimeError("hook failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        write_volume(series, out_dir / "defaced", dicom_hook=failing_hook)
    assert list(out_dir.iterdir()) == []

    moved = series.with_array(series.array)
    moved.origin_mm = moved.origin_mm + 5.0
    with pytest.raises(OutputError, match="geometry no longer matches"):
        write_volume(moved, out_dir / "moved")
    with pytest.raises(OutputError, match="without a DICOM source"):
        write_volume(dataclasses.replace(series, source=SourceInfo("dicom-series", "elsewhere", None)), out_dir / "x")
    assert list(out_dir.iterdir()) == []
