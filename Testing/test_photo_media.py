"""Photo files in and out: metadata stripped, no-face photos unchanged, DICOM photos, bad inputs, CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from DeFacerLib.errors import InputError
from DeFacerLib.photo.anonymize import PhotoOptions, anonymize_path
from DeFacerLib.photo.media import read_image, strip_jpeg_metadata

GPS_IFD, EXIF_IFD = 0x8825, 0x8769


def _photo_with_metadata(source, target, crop=None):
    """A JPEG of a real photo carrying GPS, names, dates, a serial number, XMP and a comment."""
    image = Image.open(source).convert("RGB")
    if crop is not None:
        image = image.crop(crop)
    exif = Image.Exif()
    exif[0x013B] = "Dr. Jane Doe"  # Artist
    exif[0x0132] = "2024:05:01 10:11:12"  # DateTime
    exif[0x010F] = "ClinicCam"  # Make
    exif.get_ifd(EXIF_IFD)[0xA431] = "SN-12345"  # BodySerialNumber
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>Patient Name</dc:creator></x:xmpmeta>'
    image.save(target, "JPEG", quality=92, exif=exif.tobytes(), xmp=xmp, comment=b"patient 0042")
    with Image.open(target) as check:
        assert check.getexif()[0x013B] == "Dr. Jane Doe" and "xmp" in check.info
    return target


def _assert_no_metadata(path):
    with Image.open(path) as image:
        assert len(image.getexif()) == 0
        assert not set(image.info) & {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment", "photoshop"}
    data = path.read_bytes()
    for needle in (b"Dr. Jane Doe", b"SN-12345", b"Patient Name", b"patient 0042", b"Exif\x00\x00"):
        assert needle not in data


def test_metadata_is_stripped_and_the_face_hidden(data_dir, tmp_path):
    source = _photo_with_metadata(data_dir / "photos" / "known_people" / "two_people.jpg", tmp_path / "in.jpg")
    [report] = anonymize_path(source, tmp_path / "out.jpg", PhotoOptions())
    assert report.faces == 2 and report.de_identifying
    _assert_no_metadata(tmp_path / "out.jpg")
    before, after = read_image(source), read_image(tmp_path / "out.jpg")
    assert before.shape == after.shape
    x0, y0, x1, y1 = (int(v) for v in report.boxes[0])
    grey = np.abs(after[y0:y1, x0:x1].astype(int) - 128).max(axis=-1) < 6
    assert grey.mean() > 0.8  # the face box is grey fill now


def test_photo_without_faces_keeps_its_pixels_and_loses_its_metadata(data_dir, tmp_path):
    # the sky and ground of a group photo: no face in it
    source = _photo_with_metadata(data_dir / "photos" / "dlib_faces" / "2008_002470.jpg", tmp_path / "in.jpg",
                                  crop=(0, 250, 500, 332))
    [report] = anonymize_path(source, tmp_path / "out.jpg", PhotoOptions())
    assert report.faces == 0 and "unchanged" in report.note
    np.testing.assert_array_equal(read_image(tmp_path / "out.jpg"), read_image(source))
    _assert_no_metadata(tmp_path / "out.jpg")
    assert strip_jpeg_metadata(source.read_bytes()) == (tmp_path / "out.jpg").read_bytes()


def test_exif_orientation_is_applied_before_it_is_dropped(data_dir, tmp_path):
    image = Image.open(data_dir / "photos" / "known_people" / "obama-480p.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    image.save(tmp_path / "sideways.jpg", exif=exif.tobytes())
    upright = read_image(tmp_path / "sideways.jpg")
    assert upright.shape[:2] == (image.width, image.height)
    [report] = anonymize_path(tmp_path / "sideways.jpg", tmp_path / "out.png", PhotoOptions())
    assert report.faces == 1
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (image.height, image.width) and len(out.getexif()) == 0


def test_png_and_tiff_folders(data_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    photo = Image.open(data_dir / "photos" / "known_people" / "obama-480p.jpg")
    photo.save(folder / "a.png")
    photo.save(folder / "b.tif")
    reports = anonymize_path(folder, tmp_path / "out", PhotoOptions(method="pixelate"))
    assert [r.faces for r in reports] == [1, 1]
    assert not reports[0].de_identifying  # pixelation failed the adaptive attacker: cosmetic
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "b.tif").is_file()


def test_k_same_on_a_folder_and_refusal_when_too_few(data_dir, tmp_path):
    train = data_dir / "photos" / "known_people" / "knn_examples" / "train"
    folder = tmp_path / "in"
    folder.mkdir()
    for person in ("alex_lacamoire", "biden", "rose_leslie"):
        source = sorted((train / person).iterdir())[0]
        (folder / f"{person}{source.suffix}").write_bytes(source.read_bytes())
    reports = anonymize_path(folder, tmp_path / "out", PhotoOptions(method="ksame", k=3))
    assert [r.faces for r in reports] == [1, 1, 1]
    assert all(r.de_identifying for r in reports)  # measured: 5-point k-Same passes 1/k (test_photo_obscure.py)
    reports = anonymize_path(folder, tmp_path / "out68", PhotoOptions(method="ksame", k=3, landmarks="68"))
    assert all(r.de_identifying for r in reports)
    outputs = [read_image(tmp_path / "out68" / r.output.split("/")[-1]) for r in reports]
    assert all(np.abs(o.astype(int) - read_image(folder / o_name).astype(int)).mean() > 1
               for o, o_name in zip(outputs, sorted(p.name for p in folder.iterdir())))
    with pytest.raises(InputError, match="needs at least 4 faces"):
        anonymize_path(folder, tmp_path / "out2", PhotoOptions(method="ksame", k=4))
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def _dicom_photo(data_dir, path):
    """A real face photo (obama-480p.jpg) as an uncompressed RGB Secondary Capture DICOM file."""
    from benchmark_dicom_faces import dicom_photo

    rgb = read_image(data_dir / "photos" / "known_people" / "obama-480p.jpg")
    return dicom_photo(rgb, path), rgb


def test_dicom_photo_pixels_replaced(data_dir, tmp_path):
    import pydicom

    ds, rgb = _dicom_photo(data_dir, tmp_path / "photo.dcm")
    [report] = anonymize_path(tmp_path / "photo.dcm", tmp_path / "out.dcm", PhotoOptions())
    assert report.kind == "dicom" and report.faces == 1
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.pixel_array.shape == rgb.shape
    assert out.SOPInstanceUID != ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert out.RecognizableVisualFeatures == "NO" and out.PatientName == "Test^Patient"
    changed = (out.pixel_array != rgb).any(axis=-1)
    x0, y0, x1, y1 = (int(v) for v in report.boxes[0])
    assert changed[y0:y1, x0:x1].mean() > 0.9 and changed.mean() < 0.5


def test_big_endian_dicom_photo_is_written_little_endian(data_dir, tmp_path):
    """An Explicit VR Big Endian DICOM photo (a retired syntax older archives hold) was an
    internal error, exit 1: the new uncompressed RGB is written Explicit VR Little Endian, and
    pydicom's save_as refuses to convert from big-endian. Now it is re-encoded: the header's
    values and the obscured pixels are those of the same photo stored little-endian."""
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

    ds, rgb = _dicom_photo(data_dir, tmp_path / "little.dcm")
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(tmp_path / "big.dcm", ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "big.dcm").original_encoding == (False, False)
    reports = {name: anonymize_path(tmp_path / f"{name}.dcm", tmp_path / f"{name}_out.dcm", PhotoOptions())[0]
               for name in ("little", "big")}
    assert reports["big"].faces == reports["little"].faces == 1
    little, big = (pydicom.dcmread(tmp_path / f"{name}_out.dcm") for name in ("little", "big"))
    assert big.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and big.original_encoding == (False, True)
    assert np.array_equal(big.pixel_array, little.pixel_array) and not np.array_equal(big.pixel_array, rgb)
    assert (big.PatientName, big.Rows, big.Columns, big.SamplesPerPixel) == ("Test^Patient", *rgb.shape)


def test_dicom_photo_rerun_gives_the_same_file(data_dir, tmp_path):
    """The new SOPInstanceUID comes from the old one and the new pixels, not at random: a rerun
    writes the same bytes (it gave a fresh random UID each run), another method another UID."""
    import pydicom

    ds, _ = _dicom_photo(data_dir, tmp_path / "photo.dcm")
    for name in ("a.dcm", "b.dcm"):
        anonymize_path(tmp_path / "photo.dcm", tmp_path / name, PhotoOptions())
    anonymize_path(tmp_path / "photo.dcm", tmp_path / "pixelated.dcm", PhotoOptions(method="pixelate"))
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    filled, pixelated = (pydicom.dcmread(tmp_path / name) for name in ("a.dcm", "pixelated.dcm"))
    assert filled.SOPInstanceUID == filled.file_meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID
    assert pixelated.SOPInstanceUID not in (filled.SOPInstanceUID, ds.SOPInstanceUID)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_bad_images_are_one_line_input_errors(data_dir, tmp_path, damage):
    data = (data_dir / "photos" / "known_people" / "obama-480p.jpg").read_bytes()
    path = tmp_path / "bad.jpg"
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not an image" * 50, "empty": b""}[damage])
    with pytest.raises(InputError) as error:
        anonymize_path(path, tmp_path / "out.jpg", PhotoOptions())
    assert "\n" not in str(error.value) and "bad.jpg" in str(error.value)
    assert not (tmp_path / "out.jpg").exists()


def test_cli_reports_faces_and_fails_on_one_line(data_dir, tmp_path):
    source = data_dir / "photos" / "known_people" / "two_people.jpg"
    ok = subprocess.run([sys.executable, "-m", "DeFacerLib", "photo", str(source), "-o", str(tmp_path / "o.jpg"), "--json"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["faces"] == 2
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bad = subprocess.run([sys.executable, "-m", "DeFacerLib", "photo", str(tmp_path / "bad.png"), "-o", str(tmp_path / "b.png")],
                         capture_output=True, text=True)
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1 and "bad.png" in bad.stderr


def test_cli_errors_stay_on_one_line_without_opencv_noise(data_dir, tmp_path):
    """FFmpeg ("moov atom not found") and OpenCV ("[ WARN:0@...]") print their own lines; the CLI quiets them."""
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42garbage" * 10)
    photo = data_dir / "photos" / "known_people" / "obama-480p.jpg"
    cases = {
        ("photo", str(tmp_path / "bad.mp4"), "-o", str(tmp_path / "o.mp4")): (3, "bad.mp4"),
        ("photo", "--camera", "7", "--max-frames", "3"): (3, "camera 7"),
        ("photo", str(photo), "-o", str(tmp_path / "o.jpg"), "--score", "1.5"): (2, "YuNet scores lie in 0-1"),  # an option: usage
        ("photo", "--camera", "0", "--max-frames", "0"): (2, "--max-frames"),
    }
    for argv, (code, words) in cases.items():
        result = subprocess.run([sys.executable, "-m", "DeFacerLib", *argv], capture_output=True, text=True)
        assert result.returncode == code and result.stderr.count("\n") == 1, (argv, result.stderr)
        assert result.stderr.startswith("defacer: error:") and words in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_dicom_photos_without_faces_are_copied_unchanged(data_dir, tmp_path):
    """Real DICOM photos (pydicom deid samples): RGB without faces is copied byte for byte."""
    source = data_dir / "dicom" / "deid_samples" / "RGB_IMAGE.dcm"
    [report] = anonymize_path(source, tmp_path / "out.dcm", PhotoOptions())
    assert report.faces == 0 and "copied unchanged" in report.note
    assert (tmp_path / "out.dcm").read_bytes() == source.read_bytes()


def test_jpeg_compressed_ybr_dicom_is_read_as_rgb(data_dir):
    from DeFacerLib.photo.media import read_dicom_image

    dataset, rgb = read_dicom_image(data_dir / "dicom" / "deid_samples" / "image1.dcm")
    assert dataset.PhotometricInterpretation == "YBR_FULL_422"
    assert rgb.shape == (1536, 2048, 3) and rgb.dtype == np.uint8
    # a warm close-up photograph: red above blue on average once converted (not left in YCbCr)
    assert rgb[..., 0].mean() > rgb[..., 2].mean() + 20


def test_a_dicom_photo_without_its_decoder_says_what_to_install(data_dir, tmp_path):
    """The DICOM photo reader decoded on its own: a JPEG Lossless photo without pylibjpeg gave
    pydicom's plugin list over several lines, not the install hint the volume reader gives."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless, RLELossless

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    ds, _ = _dicom_photo(data_dir, tmp_path / "photo.dcm")
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless  # encapsulated, but no decoder for it
    ds.save_as(tmp_path / "jpegls.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="no decoder for it is installed") as caught:
        anonymize_path(tmp_path / "jpegls.dcm", tmp_path / "out.dcm", PhotoOptions())
    assert "pylibjpeg-libjpeg" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out.dcm").exists()
