"""PS3.15's Clean Recognizable Visual Features option for images that are not head volumes
(`defacer scrub/batch --clean-recognizable-visual-features`): the faces in a DICOM photograph are
filled, 113102 and Recognizable Visual Features NO said; CT/MR slices are left and listed.

Before, a photo of the patient's face in a DICOM archive was scrubbed to the Basic profile and
published with the face: the option existed only as deface's record. Real faces: the
known_people photos; a real MR slice: the Trio MPRAGE."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from DeFacerLib.photo.anonymize import PhotoOptions, find_faces
from test_cli_volume_edge_cases import defacer, one_line_error
from test_photo_media import _dicom_photo

ALL_TURNS = PhotoOptions(rotations="all")


def codes(ds) -> list[str]:
    return [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


@pytest.fixture()
def archive(data_dir, tmp_path):
    """in/face.dcm (a colour photo of a face), in/turned.dcm (the same turned 90 degrees, as a
    camera held sideways stores it) and in/mr.dcm (an MR slice of the Trio MPRAGE)."""
    folder = tmp_path / "in"
    folder.mkdir()
    ds, rgb = _dicom_photo(data_dir, folder / "face.dcm")
    turned = np.ascontiguousarray(np.rot90(rgb))
    ds.Rows, ds.Columns = turned.shape[:2]
    ds.PixelData = turned.tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "turned.dcm", enforce_file_format=True)
    shutil.copy(sorted((data_dir / "dicom" / "siemens_trio_mprage_1mm").iterdir())[88], folder / "mr.dcm")
    return folder


def test_faces_in_photos_are_filled_and_slices_left(archive, tmp_path):
    for name in ("face.dcm", "turned.dcm"):
        assert find_faces(pydicom.dcmread(archive / name).pixel_array, ALL_TURNS)
    shown = defacer("scrub", archive, tmp_path / "shown", "--key-file", tmp_path / "key",
                    "--clean-recognizable-visual-features")
    assert shown.returncode == 0 and "faces filled: 2 in 2 file(s)" in shown.stdout, shown.stdout + shown.stderr
    result = defacer("scrub", archive, tmp_path / "out", "--key-file", tmp_path / "key",
                     "--clean-recognizable-visual-features", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sorted(entry["file"] for entry in summary["faces_filled"]) == ["face.dcm", "turned.dcm"]
    assert summary["faces_not_checked"] == ["mr.dcm"]
    for name in ("face.dcm", "turned.dcm"):
        before, after = pydicom.dcmread(archive / name), pydicom.dcmread(tmp_path / "out" / name)
        assert find_faces(after.pixel_array, ALL_TURNS) == []
        changed = (after.pixel_array != before.pixel_array).any(axis=-1)
        assert 0.03 < changed.mean() < 0.5  # the head, not the whole picture
        assert after.RecognizableVisualFeatures == "NO" and codes(after) == ["113100", "113102"]
        assert str(after.PatientName).startswith("DEFACER-")

    plain = defacer("scrub", archive, tmp_path / "plain", "--key-file", tmp_path / "key")
    assert plain.returncode == 0, plain.stderr
    # the MR slice: the same pixels and markers as without the option (113102 is not claimed for it)
    mr, mr_plain = pydicom.dcmread(tmp_path / "out" / "mr.dcm"), pydicom.dcmread(tmp_path / "plain" / "mr.dcm")
    assert mr.PixelData == mr_plain.PixelData and codes(mr) == codes(mr_plain) == ["113100"]
    assert "RecognizableVisualFeatures" not in mr
    # without the option the photo keeps its face (the Basic profile does not touch pixels)
    assert find_faces(pydicom.dcmread(tmp_path / "plain" / "face.dcm").pixel_array, ALL_TURNS)


def test_a_compressed_photo_is_decoded_filled_and_written_uncompressed(data_dir, tmp_path):
    from pydicom.uid import RLELossless

    folder = tmp_path / "in"
    folder.mkdir()
    ds, rgb = _dicom_photo(data_dir, folder / "face.dcm")
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(folder / "face.dcm", enforce_file_format=True)
    result = defacer("scrub", folder / "face.dcm", tmp_path / "out.dcm", "--key-file", tmp_path / "key",
                     "--clean-recognizable-visual-features")
    assert result.returncode == 0, result.stderr
    after = pydicom.dcmread(tmp_path / "out.dcm")
    assert not after.file_meta.TransferSyntaxUID.is_compressed
    assert after.pixel_array.shape == rgb.shape and find_faces(after.pixel_array, ALL_TURNS) == []


def test_an_uncompressed_ybr_photo_is_written_back_as_rgb(data_dir, tmp_path):
    """pydicom gives a YBR_FULL photo's pixels as RGB: written back under its old label, every
    colour of the photo shifted (the skin turned blue-green)."""
    from pydicom.pixels import convert_color_space

    ds, rgb = _dicom_photo(data_dir, tmp_path / "rgb.dcm")
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(tmp_path / "ybr.dcm", enforce_file_format=True)
    result = defacer("scrub", tmp_path / "ybr.dcm", tmp_path / "out.dcm", "--key-file", tmp_path / "key",
                     "--clean-recognizable-visual-features")
    assert result.returncode == 0, result.stderr
    after = pydicom.dcmread(tmp_path / "out.dcm")
    assert after.PhotometricInterpretation == "RGB" and find_faces(after.pixel_array, ALL_TURNS) == []
    kept = (after.pixel_array == rgb).all(axis=-1) | (np.abs(after.pixel_array.astype(int) - rgb).max(axis=-1) <= 2)
    assert kept.mean() > 0.5  # outside the filled head, the photo's own colours


def test_batch_takes_the_option_for_a_dicom_tree(archive, tmp_path):
    pytest.importorskip("distributed")
    from DeFacerLib.batch import run_batch
    from DeFacerLib.dicom import ProfileOptions

    summary = run_batch(archive, tmp_path / "out", key_file=tmp_path / "key", workers=1, scrub_only=True,
                        dicom_options=ProfileOptions(clean_recognizable_visual_features=True))
    assert summary["failed"] == 0 and summary["faces_filled"] == 2
    photos = sorted(p for p in (tmp_path / "out").rglob("*.dcm") if pydicom.dcmread(p).Modality == "XC")
    assert len(photos) == 2
    for path in photos:
        assert find_faces(pydicom.dcmread(path).pixel_array, ALL_TURNS) == []


def test_deface_says_what_the_option_is_there(tmp_path):
    result = defacer("deface", "--help")
    assert "what deface does to the volume itself" in " ".join(result.stdout.split())
    one_line_error(defacer("scrub", tmp_path / "missing", tmp_path / "out", "--clean-recognizable-visual-features"), 3,
                   "missing")
