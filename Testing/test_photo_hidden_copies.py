"""Copies of the face that `defacer photo` wrote beside the hidden one (helper audit "photometa"):
a DICOM photo's icon and what a JPEG without faces carried in its APP14 segment; and a JPEG
without faces re-encoded for an orientation that turns nothing; write_image given an opened
photo. Each test failed before its fix."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from DeFacerLib.photo.anonymize import PhotoOptions, anonymize_path
from DeFacerLib.photo.detect import detect_faces
from DeFacerLib.photo.media import read_image, strip_jpeg_metadata


def _face(data_dir) -> np.ndarray:
    return read_image(data_dir / "photos" / "known_people" / "obama-480p.jpg")


def test_a_dicom_photo_loses_the_icon_that_showed_its_face(data_dir, tmp_path):
    """The Icon Image Sequence (a 256x144 thumbnail of the photo) was written back unchanged, its
    face found by YuNet, in a file that says Recognizable Visual Features NO."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    def rgb_pixels(dataset, rgb):
        dataset.Rows, dataset.Columns = rgb.shape[:2]
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
        dataset.BitsAllocated = dataset.BitsStored = 8
        dataset.HighBit, dataset.PixelRepresentation = 7, 0
        dataset.PixelData = np.ascontiguousarray(rgb).tobytes()

    rgb = _face(data_dir)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    photo = Dataset()
    photo.file_meta = meta
    photo.SOPClassUID, photo.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    photo.Modality = "XC"
    rgb_pixels(photo, rgb)
    icon = Dataset()
    icon_rgb = np.asarray(Image.fromarray(rgb).resize((256, 144)), dtype=np.uint8)
    assert len(detect_faces(icon_rgb)) == 1
    rgb_pixels(icon, icon_rgb)
    photo.IconImageSequence = Sequence([icon])
    photo.save_as(tmp_path / "photo.dcm", enforce_file_format=True)

    [report] = anonymize_path(tmp_path / "photo.dcm", tmp_path / "out.dcm", PhotoOptions())
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert report.faces == 1 and out.RecognizableVisualFeatures == "NO"
    assert "IconImageSequence" not in out
    assert icon_rgb.tobytes() not in (tmp_path / "out.dcm").read_bytes()


def test_a_jpeg_without_faces_keeps_no_data_in_app14(data_dir, tmp_path):
    """Only EXIF, XMP, IPTC, ICC and comment markers were dropped: an Adobe APP14 segment was kept
    whole, a JPEG thumbnail of the face (found by YuNet) and a name after its 12 fields included."""
    buffer = io.BytesIO()
    Image.fromarray(_face(data_dir)).resize((160, 90)).save(buffer, "JPEG", quality=90)
    thumbnail = buffer.getvalue()
    assert len(detect_faces(np.asarray(Image.open(io.BytesIO(thumbnail)).convert("RGB")))) == 1
    adobe = b"Adobe\x00\x64\x00\x00\x00\x00\x01"  # version 100, no flags, YCbCr
    app14 = adobe + b"Jane Doe" + thumbnail
    Image.fromarray(_face(data_dir)[:150, :150]).save(tmp_path / "plain.jpg", quality=92)  # the corner: no face
    plain = (tmp_path / "plain.jpg").read_bytes()
    source = tmp_path / "in.jpg"
    source.write_bytes(plain[:2] + b"\xff\xee" + (len(app14) + 2).to_bytes(2, "big") + app14 + plain[2:])
    with Image.open(source) as check:
        assert check.info["adobe_transform"] == 1

    [report] = anonymize_path(source, tmp_path / "out.jpg", PhotoOptions())
    assert report.faces == 0
    written = (tmp_path / "out.jpg").read_bytes()
    assert b"Jane Doe" not in written and written.count(b"\xff\xd8") == 1
    assert b"\xff\xee\x00\x0e" + adobe in written  # the colour transform decoders need is kept
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.info["adobe_transform"] == 1
    np.testing.assert_array_equal(read_image(tmp_path / "out.jpg"), read_image(tmp_path / "plain.jpg"))


@pytest.mark.parametrize("orientation", [0, 9])
def test_a_jpeg_without_faces_and_an_orientation_that_turns_nothing_keeps_its_coded_data(data_dir, tmp_path,
                                                                                          orientation):
    """EXIF orientations outside 2-8 turn no pixel, but anything but 1 made the photo be
    re-encoded: pixels up to 14 levels off where the docs promise the coded data byte for byte."""
    sky = data_dir / "photos" / "dlib_faces" / "2008_002470.jpg"  # its sky and ground: no face
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.open(sky).crop((0, 250, 500, 332)).save(tmp_path / "in.jpg", quality=85, exif=exif.tobytes())
    [report] = anonymize_path(tmp_path / "in.jpg", tmp_path / "out.jpg", PhotoOptions())
    assert report.faces == 0
    assert (tmp_path / "out.jpg").read_bytes() == strip_jpeg_metadata((tmp_path / "in.jpg").read_bytes())
    np.testing.assert_array_equal(read_image(tmp_path / "out.jpg"), read_image(tmp_path / "in.jpg"))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_write_image_of_an_opened_photo_writes_pixels_only(data_dir, tmp_path, suffix):
    """write_image promises no metadata at all, but given a Pillow image as opened it wrote the
    photo's JPEG comment (JPEG) and its ICC profile (PNG, TIFF) from the image's info."""
    from PIL import ImageCms

    from DeFacerLib.photo.media import write_image

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_face(data_dir)).save(tmp_path / "in.jpg", comment=b"patient Jane Doe", icc_profile=profile)
    with Image.open(tmp_path / "in.jpg") as photo:
        photo.load()
        assert photo.info["comment"] == b"patient Jane Doe" and photo.info["icc_profile"] == profile
        write_image(tmp_path / f"out{suffix}", photo)
        assert "comment" in photo.info  # the caller's image is left as it was
    with Image.open(tmp_path / f"out{suffix}") as out:
        assert not set(out.info) & {"comment", "icc_profile", "exif", "xmp"}
        error = np.abs(np.asarray(out.convert("RGB"), dtype=int) - read_image(tmp_path / "in.jpg"))
        assert error.max() == 0 if suffix != ".jpg" else error.mean() < 2  # the same picture (JPEG: re-encoded)
    assert b"Jane Doe" not in (tmp_path / f"out{suffix}").read_bytes()
