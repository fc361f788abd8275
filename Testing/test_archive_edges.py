"""Edge cases of `defacer batch`, `defacer scrub` and `defacer photo` found by feeding them what
archives hold: sidecars naming the patient under unknown keys, links to content never fetched,
names that are not UTF-8, transfer syntaxes pydicom does not know, invalid header counts,
multi-page TIFFs, 16-bit colour, and output names that say another format. Each failed before
its fix (exit 0 with a leak or a loss, or an internal error)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from DeFacerLib.cli.main import main
from DeFacerLib.io import read_volume

KEY = bytes(range(32))


def _key(tmp_path: Path) -> Path:
    path = tmp_path / "project.key"
    path.write_text(KEY.hex() + "\n")
    path.chmod(0o600)  # private, as DeFacer makes its keys (one others can read is warned about)
    return path


def _bids(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "edges", "BIDSVersion": "1.9.0"}))
    return root


def _batch(tmp_path: Path, source: Path, output: Path, *flags: str) -> int:
    return main(["batch", str(source), str(output), "--key-file", str(_key(tmp_path)), "--workers", "1", "-q", *flags])


def test_a_sidecar_naming_the_patient_under_an_unknown_key_is_cleaned(tmp_path):
    """PatientName was removed, but 'Comment' and 'ProcedureStepDescription' (no keyword the
    profile keeps or knows) carried the same name into the shared dataset."""
    bids = _bids(tmp_path / "bids")
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "sub-01" / "anat" / "sub-01_T1w.json").write_text(json.dumps({
        "PatientName": "Smith^John", "Comment": "patient John Smith", "ProcedureStepDescription": "Smith head",
        "EchoTime": 0.0046, "ImageType": ["ORIGINAL", "PRIMARY"], "Notes": {"Scanner": "Smith room"}}))
    assert _batch(tmp_path, bids, tmp_path / "out", "--scrub-only") == 0
    text = (tmp_path / "out" / "sub-01" / "anat" / "sub-01_T1w.json").read_text()
    assert "smith" not in text.lower() and "john" not in text.lower()
    kept = json.loads(text)
    assert kept["EchoTime"] == 0.0046 and kept["ImageType"] == ["ORIGINAL", "PRIMARY"]


def test_a_sidecar_saved_with_a_byte_order_mark_is_cleaned_not_failed(tmp_path):
    """Windows Notepad saves UTF-8 with a byte-order mark: the sidecar failed its item ("not
    valid JSON (Unexpected UTF-8 BOM)"), exit 3, and the run published nothing of it."""
    bids = _bids(tmp_path / "bids")
    (bids / "sub-01" / "anat").mkdir(parents=True)
    sidecar = json.dumps({"InstitutionName": "Springfield General", "EchoTime": 0.0046})
    (bids / "sub-01" / "anat" / "sub-01_T1w.json").write_bytes(b"\xef\xbb\xbf" + sidecar.encode())
    assert _batch(tmp_path, bids, tmp_path / "out", "--scrub-only") == 0
    written = (tmp_path / "out" / "sub-01" / "anat" / "sub-01_T1w.json").read_bytes()
    assert json.loads(written) == {"EchoTime": 0.0046} and b"Springfield" not in written


def test_a_link_to_content_never_fetched_fails_instead_of_vanishing(tmp_path, data_dir):
    """A DataLad dataset whose image was never fetched: the broken link was left out of the
    plan, the report said every file was written, exit 0."""
    bids = _bids(tmp_path / "bids")
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    (bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz").symlink_to("/nonexistent/annex/objects/sub-01_T1w.nii.gz")
    assert _batch(tmp_path, bids, tmp_path / "out", "--scrub-only") == 3
    summary = json.loads((tmp_path / "out" / ".defacer" / "summary.json").read_text())
    assert summary["files"] == 3 and summary["failed"] == 1
    assert not (tmp_path / "out" / "sub-01" / "anat" / "sub-01_T1w.nii.gz").exists()


def test_a_pointer_file_of_content_never_fetched_fails_instead_of_being_published(tmp_path, ixi_pairs):
    """An unlocked DataLad clone, a clone on a file system without links and a Git LFS checkout
    hold small text files in the images' place: they were copied as the dataset's recordings
    (exit 0 for a table or a physio file) or failed as "corrupt, re-export it"."""
    bids = _bids(tmp_path / "bids")
    for sub in ("sub-01", "sub-02"):
        (bids / sub / "anat").mkdir(parents=True)
        (bids / sub / "func").mkdir()
    shutil.copy(ixi_pairs[0][0], bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")  # fetched: defaced
    key = "SHA256E-s1296352--" + "0123456789abcdef" * 4 + ".nii.gz"
    pointers = {
        "sub-02/anat/sub-02_T1w.nii.gz": f"/annex/objects/{key}\n",  # git annex unlock / adjusted branch
        "sub-02/func/sub-02_task-rest_physio.tsv.gz": f"/annex/objects/{key}\n",
        "sub-02/func/sub-02_task-rest_events.tsv": f"../../.git/annex/objects/Xy/Zw/{key}/{key}",  # a link as a file
        "sub-01/func/sub-01_task-rest_bold.nii.gz": "version https://git-lfs.github.com/spec/v1\n"
                                                    "oid sha256:" + "ab" * 32 + "\nsize 4096\n",
    }
    for rel, text in pointers.items():
        (bids / rel).write_text(text)
    out = tmp_path / "out"
    assert _batch(tmp_path, bids, out) == 3
    summary = json.loads((out / ".defacer" / "summary.json").read_text())
    assert summary["files"] == 6 and summary["failed"] == 4 and summary["defaced"] == 1
    reasons = {entry["name"]: entry["reason"] for entry in summary["failed_items"]}
    assert sorted(reasons) == sorted(pointers)
    assert all("pointer file" in reason and "fetch it" in reason for reason in reasons.values())
    assert not any((out / rel).exists() for rel in pointers)
    defaced = out / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    before, after = (read_volume(path).array for path in (ixi_pairs[0][0], defaced))
    brain = read_volume(ixi_pairs[0][1]).array > 0
    assert (before != after).any() and not (before != after)[brain].any()  # the fetched head: defaced, brain untouched


def test_derivatives_and_sourcedata_dates_move_with_their_subject(tmp_path):
    """--dates modified shifts each subject by its keyed offset; derivatives/x/sub-01/ and
    sourcedata/sub-01/ were shifted by the offset of no subject, one for every subject, so their
    dates matched no raw date of the subject, and one known date dated every subject's derivatives."""
    bids = _bids(tmp_path / "bids")
    date = "2023-03-14T09:12:33"
    places = ("", "derivatives/fmriprep/", "sourcedata/")
    for sub in ("sub-01", "sub-02"):
        for place in places:
            folder = bids / f"{place}{sub}"
            (folder / "anat").mkdir(parents=True)
            (folder / "anat" / f"{sub}_T1w.json").write_text(json.dumps({"AcquisitionDateTime": date}))
            (folder / f"{sub}_scans.tsv").write_text(f"filename\tacq_time\nanat/{sub}_T1w.nii.gz\t{date}\n")
    out = tmp_path / "out"
    assert _batch(tmp_path, bids, out, "--scrub-only", "--dates", "modified") == 0
    shifted = {}
    for sub in ("sub-01", "sub-02"):
        for place in places:
            folder = out / f"{place}{sub}"
            sidecar = json.loads((folder / "anat" / f"{sub}_T1w.json").read_text())["AcquisitionDateTime"]
            table = (folder / f"{sub}_scans.tsv").read_text().splitlines()[1].split("\t")[1]
            shifted.setdefault(sub, set()).update({sidecar, table})
    assert all(len(values) == 1 for values in shifted.values()), shifted  # one shift per subject, everywhere
    assert shifted["sub-01"] != shifted["sub-02"] and date not in shifted["sub-01"] | shifted["sub-02"]


def test_a_4d_anatomical_stack_outside_the_raw_tree_is_defaced_not_copied(tmp_path, ixi_pairs):
    """A 4D image named as anatomical under derivatives/ or sourcedata/ (an MP2RAGE or multi-echo
    stack) was copied as "2 frames (a series, not one head image)" with its face, exit 0, though
    deface_file cuts every frame of a 4D series alike."""
    import nibabel as nib

    bids = _bids(tmp_path / "bids")
    head = nib.load(ixi_pairs[0][0])
    frames = np.stack([np.asanyarray(head.dataobj)] * 2, axis=-1)
    header = head.header.copy()
    header.set_data_shape(frames.shape)
    stacks = ("derivatives/qmri/sub-01/anat/sub-01_MP2RAGE.nii.gz", "sourcedata/sub-01/anat/sub-01_echo-1_MEGRE.nii.gz",
              "derivatives/qmri/sub-01/anat/sub-01_desc-stack_other.nii.gz")  # the last is named as no head image
    for rel in stacks:
        (bids / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(frames, head.affine, header), bids / rel)
    out = tmp_path / "out"
    assert _batch(tmp_path, bids, out) == 0
    brain = read_volume(ixi_pairs[0][1]).array > 0
    for rel in stacks[:2]:
        after = np.asanyarray(nib.load(out / rel).dataobj)
        for frame in range(2):
            changed = after[..., frame] != frames[..., frame]
            assert changed.sum() > 50_000 and not changed[brain].any(), (rel, frame)
    assert np.array_equal(np.asanyarray(nib.load(out / stacks[2]).dataobj), frames)  # still copied, as documented


def test_a_name_that_is_not_utf8_is_refused_before_anything_is_made(tmp_path, capfd):
    """Dask could not encode the task's name: a 20-line traceback, exit 1, and a manifest and an
    audit folder left behind."""
    bids = _bids(tmp_path / "bids")
    (bids / "sub-01" / "anat").mkdir(parents=True)
    name = os.fsdecode(b"sub-01_acq-M\xfcller_T1w.json")
    (bids / "sub-01" / "anat" / name).write_text("{}")
    assert _batch(tmp_path, bids, tmp_path / "out", "--scrub-only") == 3
    err = capfd.readouterr().err
    assert "not UTF-8" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.audit").exists()


def _with_syntax(data_dir: Path, target: Path, syntax: str) -> Path:
    """ctbrain1 with another Transfer Syntax UID in its file meta, put in as bytes (pydicom
    refuses to write a syntax it does not know); ``syntax`` must pad to the old value's length."""
    raw = (data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm").read_bytes()
    at = raw.index(b"\x02\x00\x10\x00UI") + 6  # (0002,0010), explicit VR little endian
    length = int.from_bytes(raw[at:at + 2], "little")
    value = syntax.encode("ascii").ljust(length, b"\0")
    assert len(value) == length
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw[:at + 2] + value + raw[at + 2 + length:])
    return target


def test_an_unknown_transfer_syntax_fails_that_file_only(tmp_path, data_dir):
    """JPEG XL (1.2.840.10008.1.2.4.110) or a vendor's private syntax: pydicom cannot say how it
    is encoded, and the whole tree stopped with an internal error."""
    tree = tmp_path / "in"
    shutil.copy(data_dir / "dicom" / "fake_phi_ct" / "ctbrain2.dcm", tmp_path / "good.dcm")
    (tree).mkdir()
    shutil.copy(tmp_path / "good.dcm", tree / "good.dcm")
    _with_syntax(data_dir, tree / "private.dcm", "1.2.840.99999.1.2.4.50")  # a vendor's own
    code = main(["scrub", str(tree), str(tmp_path / "out"), "--key-file", str(_key(tmp_path)), "-q"])
    assert code == 3
    summary = json.loads((tmp_path / "out.audit" / "summary.json").read_text())
    failed = {entry["file"]: entry["reason"] for entry in summary["failed_files"]}
    assert list(failed) == ["private.dcm"] and "unknown transfer syntax" in failed["private.dcm"]
    assert (tmp_path / "out" / "good.dcm").is_file()


def test_an_invalid_frame_count_in_a_batch_tree_is_read_as_its_series(tmp_path, data_dir, capfd):
    """NumberOfFrames "1?" (an invalid IS) was an internal error in batch's header scan, with
    pydicom's warnings on the console; `defacer scrub` handled the same file."""
    tree = tmp_path / "tree"
    tree.mkdir()
    ds = pydicom.dcmread(data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm")
    ds.NumberOfFrames = "1"
    ds.save_as(tree / "a.dcm")
    raw = (tree / "a.dcm").read_bytes()
    at = raw.index(b"\x28\x00\x08\x00IS") + 6  # pydicom refuses to write "1?": put in as bytes
    (tree / "a.dcm").write_bytes(raw[:at] + b"\x02\x00" + b"1?" + raw[at + 4:])
    assert _batch(tmp_path, tree, tmp_path / "out", "--scrub-only") == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "UserWarning" not in err and "internal error" not in err
    assert pydicom.dcmread(tmp_path / "out" / "a.dcm").PatientName != ds.PatientName


def test_generated_by_keeps_the_datasets_own_entry_and_says_what_was_done():
    from DeFacerLib.batch.bids import add_generated_by

    for before in ({"Name": "heudiconv"}, "heudiconv"):
        entries = add_generated_by({"Name": "x", "GeneratedBy": before}, ())["GeneratedBy"]
        assert entries[0] == before and len(entries) == 2  # not split into keys or characters
        assert "no image defaced" in entries[1]["Description"]
    defaced = add_generated_by({"Name": "x"}, ("eyes", "nose"), "modified")["GeneratedBy"][0]["Description"]
    assert "facial features removed (eyes, nose)" in defaced and "acq_time dates shifted" in defaced


def _face_photo(data_dir: Path) -> Path:
    return data_dir / "photos" / "known_people" / "obama-480p.jpg"


def test_a_multi_page_tiff_is_refused_not_cut_to_its_first_page(tmp_path, data_dir, capfd):
    """Page 2 (a face) was dropped without a word, and the output reported as 'no face found:
    pixels written unchanged'."""
    face = Image.open(_face_photo(data_dir)).convert("RGB")
    blank = Image.new("RGB", face.size, (128, 128, 128))
    blank.save(tmp_path / "pages.tif", save_all=True, append_images=[face])
    assert main(["photo", str(tmp_path / "pages.tif"), "-o", str(tmp_path / "out.tif"), "-q"]) == 3
    assert "2 pages" in capfd.readouterr().err and not (tmp_path / "out.tif").exists()


def test_a_tiff_with_a_thumbnail_is_anonymized_from_its_full_page_alone(tmp_path, data_dir):
    """A scanner's or camera's TIFF adds a reduced-resolution copy (NewSubfileType 1): it was
    refused as "2 pages". Now the full page is anonymized and written alone, so the thumbnail,
    the face in small, never reaches the output."""
    from DeFacerLib.photo.detect import detect_faces

    face = Image.open(_face_photo(data_dir)).convert("RGB")
    thumbnail = face.resize((face.width // 4, face.height // 4))
    thumbnail.encoderinfo = {"tiffinfo": {254: 1}}  # this page's own NewSubfileType: reduced resolution
    face.save(tmp_path / "scan.tif", save_all=True, append_images=[thumbnail])
    assert Image.open(tmp_path / "scan.tif").n_frames == 2
    assert main(["photo", str(tmp_path / "scan.tif"), "-o", str(tmp_path / "out.tif"), "-q"]) == 0
    with Image.open(tmp_path / "out.tif") as written:
        assert getattr(written, "n_frames", 1) == 1 and written.size == face.size
        pixels = np.asarray(written.convert("RGB"))
    assert len(detect_faces(np.asarray(face))) == 1 and len(detect_faces(pixels)) == 0


def test_a_tiff_of_two_full_pages_is_still_refused(tmp_path, data_dir, capfd):
    face = Image.open(_face_photo(data_dir)).convert("RGB")
    other = face.resize((face.width // 4, face.height // 4))  # small, but not marked as a reduced copy
    face.save(tmp_path / "pages.tif", save_all=True, append_images=[other])
    assert main(["photo", str(tmp_path / "pages.tif"), "-o", str(tmp_path / "out.tif"), "-q"]) == 3
    assert "2 pages" in capfd.readouterr().err and not (tmp_path / "out.tif").exists()


def test_sixteen_bit_colour_is_refused_not_cut_to_eight_bits(tmp_path, capfd):
    """Pillow opens a 48-bit PNG as 8-bit RGB: 40000 became 156 while the report said the pixels
    were written unchanged."""
    import cv2

    pixels = np.zeros((64, 64, 3), np.uint16)
    pixels[:, :32] = 40000
    cv2.imwrite(str(tmp_path / "rgb16.png"), pixels)
    assert main(["photo", str(tmp_path / "rgb16.png"), "-o", str(tmp_path / "out.png"), "-q"]) == 3
    assert "16 bits per colour channel" in capfd.readouterr().err and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("name", ["out.dcm", "out.mp4", "out"])
def test_an_output_name_of_another_format_is_a_usage_error(tmp_path, data_dir, name, capfd):
    """A photo written to '.dcm' or '.mp4' was a PNG under that name, exit 0."""
    code = main(["photo", str(_face_photo(data_dir)), "-o", str(tmp_path / name), "-q"])
    assert code == 2 and not (tmp_path / name).exists()
    assert len(capfd.readouterr().err.strip().splitlines()) == 1


def test_a_camera_recording_named_as_another_format_is_refused_before_the_camera_opens(tmp_path, data_dir):
    from DeFacerLib.errors import UsageError
    from DeFacerLib.photo.anonymize import PhotoOptions, anonymize_camera

    with pytest.raises(UsageError, match="H.264 MP4"):
        anonymize_camera(str(data_dir / "photos" / "known_people" / "short_hamilton_clip.mp4"), PhotoOptions(),
                         destination=tmp_path / "session.avi", max_frames=2)
    assert not (tmp_path / "session.avi").exists()


def test_a_photo_folder_says_what_it_left_out(tmp_path, data_dir, capsys):
    """Videos, .heic photos and subfolders in a photo folder were left out of the output without
    a word; a folder of only .heic photos said just 'no photos'."""
    folder = tmp_path / "visit"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(_face_photo(data_dir), folder / "a.jpg")
    (folder / "b.heic").write_bytes(b"\0" * 16)
    (folder / ".DS_Store").write_bytes(b"\0")
    assert main(["photo", str(folder), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "left out" in err and "b.heic" in err and "day2/" in err and ".DS_Store" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg"]
    assert main(["photo", str(folder), "-o", str(tmp_path / "out"), "--json", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["left_out"] == ["b.heic", "day2/"]
    (folder / "a.jpg").unlink()
    assert main(["photo", str(folder), "-o", str(tmp_path / "out2")]) == 3
    assert "it holds b.heic, day2/" in capsys.readouterr().err


def test_a_cameras_mpo_jpeg_is_anonymized_as_its_photo(tmp_path, data_dir):
    """A JPEG with a second image (MPO: cameras store previews or depth maps so) is a photo, not
    a multi-page file to refuse: its photo is anonymized and written as one JPEG."""
    photo = Image.open(_face_photo(data_dir)).convert("RGB")
    photo.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[photo.resize((160, 90))])
    assert Image.open(tmp_path / "camera.jpg").n_frames == 2
    assert main(["photo", str(tmp_path / "camera.jpg"), "-o", str(tmp_path / "out.jpg"), "-q"]) == 0
    out = Image.open(tmp_path / "out.jpg")
    assert getattr(out, "n_frames", 1) == 1 and out.size == photo.size
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(photo, dtype=int)).max() > 50  # the face was obscured


def test_an_audit_folder_that_cannot_be_made_leaves_no_key_and_no_output(tmp_path, data_dir, capsys):
    """`batch --audit-dir` under a file (or on a read-only mount): exit 4, but the key made for
    the run and an empty output folder stayed, as no other refused run leaves them."""
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(data_dir / "dicom/fake_phi_ct" / sorted(os.listdir(data_dir / "dicom/fake_phi_ct"))[0], tree)
    (tmp_path / "taken").write_text("a file")
    new_key = tmp_path / "new.key"
    code = main(["batch", str(tree), str(tmp_path / "out"), "--key-file", str(new_key), "--audit-dir",
                 str(tmp_path / "taken" / "audit"), "--workers", "1", "-q"])
    assert code == 4 and "cannot create" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "tree"]
