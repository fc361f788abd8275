"""`defacer batch` on a BIDS dataset with the images that used to be copied with the face
(quantitative maps, derivatives/, sourcedata/), built from real IXI heads and their DLMUSE
brain labels (docs/batch.md): none is published with a face; the participants table's
identifying columns are reported; the shared reports hold no absolute path; SIGTERM ends the
run as Ctrl-C does.
"""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from DeFacerLib.batch.bids import identifying_columns  # noqa: E402
from DeFacerLib.batch.discover import BIDS, COPY, DEFACE_VOLUME, FACE_CHECK, classify  # noqa: E402
from DeFacerLib.batch.facecheck import MAX_BRAIN_LITRES, MIN_FRONT_GAP_MM, skin_check  # noqa: E402
from DeFacerLib.io import read_volume, write_volume  # noqa: E402


def _stripped(t1: Path, labels: Path):
    """The head with every voxel outside its reference brain set to 0: a skull-stripped brain."""
    head = read_volume(t1)
    brain = read_volume(labels).array > 0
    return dataclasses.replace(head, array=np.where(brain, head.array, 0).astype(head.array.dtype))


def _quantitative_map(t1: Path):
    """A T1map-like image of the head: the contrast inverted inside the head (fat and white matter
    dark, fluid bright), the background 0."""
    from DeFacerLib.deface import head_mask

    head = read_volume(t1)
    inside = head_mask(head)
    values = np.clip(260 - head.array.astype(np.int32), 1, 255)
    return dataclasses.replace(head, array=np.where(inside, values, 0).astype(np.uint8))


def test_plan_checks_every_other_volume_for_a_face():
    files = ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T1map.nii.gz", "sub-01/anat/sub-01_R2starmap.nii",
             "derivatives/fmriprep/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
             "derivatives/fmriprep/sub-01/anat/sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz",
             "derivatives/freesurfer/sub-01/mri/orig.mgz", "sourcedata/sub-01/anat/sub-01_T1w.nii.gz",
             "derivatives/fmriprep/sub-01/anat/sub-01_desc-brain_mask.nii.gz",
             "derivatives/fmriprep/sub-01/anat/sub-01_dseg.nii.gz", "derivatives/fmriprep/sub-01/anat/sub-01_label-GM_probseg.nii.gz",
             "sub-01/func/sub-01_task-rest_bold.nii.gz", "sub-01/dwi/sub-01_dwi.nii.gz",
             "derivatives/fmriprep/sub-01/func/sub-01_task-rest_desc-preproc_bold.nii.gz"]
    kinds = {item.files[0]: item.kind for item in classify(Path("/nonexistent"), files, BIDS)[0]}
    assert kinds.pop("sub-01/anat/sub-01_T1w.nii.gz") == DEFACE_VOLUME
    assert {kinds.pop(f) for f in files[1:7]} == {FACE_CHECK}
    assert set(kinds.values()) == {COPY}  # segmentations and EPI series


def test_plan_checks_a_field_maps_magnitude_images_for_a_face():
    """A GRE field map's magnitude images show the face (scripts/evaluate_fieldmap_like.py); its
    phase, field and EPI images are copied as before."""
    fmap = "sub-01/ses-1/fmap/sub-01_ses-1_"
    magnitudes = [f"{fmap}magnitude1.nii.gz", f"{fmap}magnitude2.nii.gz", f"{fmap}run-2_magnitude.nii.gz"]
    others = [f"{fmap}phasediff.nii.gz", f"{fmap}phase1.nii.gz", f"{fmap}fieldmap.nii.gz", f"{fmap}dir-AP_epi.nii.gz"]
    kinds = {item.files[0]: item.kind for item in classify(Path("/nonexistent"), magnitudes + others, BIDS)[0]}
    assert {kinds[rel] for rel in magnitudes} == {FACE_CHECK}
    assert {kinds[rel] for rel in others} == {COPY}


def test_a_field_map_magnitude_image_is_published_defaced(ixi_pairs, tmp_path):
    """IXI162 made into a field map's magnitude image (3 x 3 x 3.5 mm, the 140 mm slab an fMRI
    run covers, through the nose): it was copied with its face; now defaced, its brain kept."""
    from evaluate_fieldmap_like import fieldmap_like_copy

    from DeFacerLib.batch import run_batch

    bids = tmp_path / "bids"
    fmap = bids / "sub-01" / "fmap"
    fmap.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "fmap", "BIDSVersion": "1.9.0"}))
    magnitude, brain = fieldmap_like_copy(*ixi_pairs[1], tmp_path, slab=True)
    magnitude.rename(fmap / "sub-01_magnitude1.nii.gz")
    phase = read_volume(fmap / "sub-01_magnitude1.nii.gz")
    noise = np.random.default_rng(0).integers(0, 4096, phase.array.shape).astype(np.uint16)
    write_volume(dataclasses.replace(phase, array=noise, source=None), fmap / "sub-01_phasediff.nii.gz")
    out = tmp_path / "out"
    summary = run_batch(bids, out, key_file=tmp_path / "key", workers=1)
    assert summary["failed"] == 0 and summary["defaced"] == 1
    rel = "sub-01/fmap/sub-01_magnitude1.nii.gz"
    assert _outcomes(out)[rel]["action"] == "defaced"
    changed = read_volume(bids / rel).array != read_volume(out / rel).array
    assert changed.sum() > 1000
    assert not (changed & (read_volume(brain).array > 0)).any()
    assert _changed(bids / "sub-01/fmap/sub-01_phasediff.nii.gz", out / "sub-01/fmap/sub-01_phasediff.nii.gz") == 0


def test_a_bids_photo_is_published_with_its_faces_filled_and_no_metadata(data_dir, tmp_path):
    """BIDS keeps photos of the electrodes or coils on the head (eeg/sub-01_photo.jpg), which show
    the face as often as not: they were copied as they were, EXIF and all. A picture that is no
    such photo (a task's stimulus) is copied; a scrub-only run publishes no photo."""
    from PIL import Image

    from DeFacerLib.batch import run_batch
    from DeFacerLib.photo.anonymize import PhotoOptions, find_faces
    from DeFacerLib.photo.media import read_image
    from DeFacerLib.sharing_warnings import for_batch

    bids = tmp_path / "bids"
    eeg = bids / "sub-01" / "eeg"
    eeg.mkdir(parents=True)
    (bids / "stimuli").mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "photos", "BIDSVersion": "1.9.0"}))
    photo = eeg / "sub-01_acq-face_photo.jpg"
    exif = Image.Exif()
    exif[0x0132] = "2026:01:02 03:04:05"  # DateTime
    exif[0x013B] = "Doe^Jane"  # Artist
    Image.open(data_dir / "photos" / "known_people" / "obama.jpg").save(photo, exif=exif.tobytes())
    (eeg / "sub-01_electrodes.tsv").write_text("name\tx\ty\tz\nFp1\t-0.03\t0.08\t0.0\n")
    # a photo of the cap from behind: no face to find, published as it is but named in a warning
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(
        eeg / "sub-01_acq-back_photo.png")
    stimulus = bids / "stimuli" / "face_01.png"
    stimulus.write_bytes((data_dir / "photos" / "known_people" / "alex-lacamoire.png").read_bytes())
    assert find_faces(read_image(photo), PhotoOptions())

    out = tmp_path / "out"
    summary = run_batch(bids, out, key_file=tmp_path / "key", workers=1)
    assert summary["failed"] == 0 and summary["faces_filled"] >= 1
    rel = "sub-01/eeg/sub-01_acq-face_photo.jpg"
    outcome = _outcomes(out)[rel]
    assert outcome["action"] == "faces filled" and outcome["faces_filled"] >= 1
    assert find_faces(read_image(out / rel), PhotoOptions(rotations="all")) == []
    published = Image.open(out / rel)
    assert published.size == Image.open(photo).size and not published.getexif()
    assert b"Doe^Jane" not in (out / rel).read_bytes()
    assert (out / "stimuli" / "face_01.png").read_bytes() == stimulus.read_bytes()
    assert (out / "sub-01/eeg/sub-01_electrodes.tsv").is_file()
    back = "sub-01/eeg/sub-01_acq-back_photo.png"
    assert summary["photos_without_faces"] == [back] and _outcomes(out)[back]["action"] == "copied, metadata removed"
    assert any(back in line and "look at them" in line for line in for_batch(summary))
    assert "BIDS photos published with no face found" in (out / ".defacer" / "report.html").read_text()

    scrub_only = run_batch(bids, tmp_path / "scrubbed", key_file=tmp_path / "key", workers=1, scrub_only=True)
    assert scrub_only["failed"] == 0 and not (tmp_path / "scrubbed" / rel).exists()


def test_identifying_column_names():
    header = "participant_id\tage\tsex\tFirst_Name\tDOB\tbirth_date\tPatientID\tE-mail\thandedness\tgroup\tscan_date\n"
    assert identifying_columns(header) == ["First_Name", "DOB", "birth_date", "PatientID", "E-mail", "scan_date"]
    assert identifying_columns("participant_id\tage\tsex\tgroup\tupdated\n") == []


def test_skin_check_tells_a_stripped_brain_from_its_head(ixi_pairs):
    """The measured test of facecheck on three real heads: the head, and the same head
    defaced, have skin; the head skull-stripped with its reference brain labels has none."""
    for t1, labels in ixi_pairs[:3]:
        head = skin_check(read_volume(t1))
        brain = skin_check(_stripped(t1, labels))
        assert head.skin and head.litres > MAX_BRAIN_LITRES, (t1.name, head)
        assert brain.skin is False, (t1.name, brain)
        assert brain.litres < MAX_BRAIN_LITRES and brain.front_gap_mm >= MIN_FRONT_GAP_MM
        parcellation = skin_check(read_volume(labels))  # the integer label map itself
        assert parcellation.skin is False, (labels.name, parcellation)


def _dataset(ixi_pairs, root: Path) -> Path:
    """sub-01: a T1w and a T1map; derivatives: fmriprep's unstripped desc-preproc_T1w, a
    skull-stripped desc-brain_T1w and its mask, and an already-defaced head; sourcedata: a head."""
    from DeFacerLib.deface.workflow import deface_file

    (first, first_labels), (second, _), (third, _) = ixi_pairs[:3]
    bids = root / "bids"
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-01_T1w.nii.gz").symlink_to(first)
    write_volume(_quantitative_map(second), anat / "sub-01_T1map.nii.gz")
    prep = bids / "derivatives" / "fmriprep" / "sub-01" / "anat"
    prep.mkdir(parents=True)
    (prep / "sub-01_desc-preproc_T1w.nii.gz").symlink_to(third)
    write_volume(_stripped(first, first_labels), prep / "sub-01_desc-brain_T1w.nii.gz")
    mask = read_volume(first_labels)
    write_volume(dataclasses.replace(mask, array=(mask.array > 0).astype(np.uint8)), prep / "sub-01_desc-brain_mask.nii.gz")
    other = bids / "derivatives" / "other" / "sub-01" / "anat"
    other.mkdir(parents=True)
    deface_file(third, root / "defaced.nii.gz")  # a face already removed elsewhere: the model finds none
    (other / "sub-01_desc-defaced_T1w.nii.gz").symlink_to(root / "defaced.nii.gz")
    source = bids / "sourcedata" / "sub-01"
    source.mkdir(parents=True)
    (source / "sub-01_acq-raw_T1w.nii.gz").symlink_to(second)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "face images", "BIDSVersion": "1.9.0"}))
    (bids / "participants.tsv").write_text("participant_id\tage\tdate_of_birth\nsub-01\t35\t1970-01-02\n")
    return bids


def test_no_image_with_a_face_is_published(ixi_pairs, tmp_path):
    """Every image that may show a face is defaced, or fails; only faceless ones are copied."""
    bids = _dataset(ixi_pairs, tmp_path)
    out = tmp_path / "Doe_Jane_site" / "out"
    command = [sys.executable, "-m", "DeFacerLib", "batch", str(bids), str(out), "--workers", "1",
               "--key-file", str(tmp_path / "key")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("defacer: error:")]
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert "sub-01_desc-defaced_T1w.nii.gz: may show a face" in errors[0]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("defacer: warning:")]
    assert "date_of_birth" in warnings[0] and "participants.tsv" in warnings[0]  # on stderr, as -q keeps it
    summary = json.loads((out / ".defacer" / "summary.json").read_text())
    outcomes = _outcomes(out)
    changed = {rel: _changed(bids / rel, out / rel) for rel in (
        "sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T1map.nii.gz",
        "derivatives/fmriprep/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz", "sourcedata/sub-01/sub-01_acq-raw_T1w.nii.gz")}
    assert min(changed.values()) > 1000, changed  # defaced, each by the face model
    for rel in changed:
        assert outcomes[rel]["action"] == "defaced", outcomes[rel]
    brain = "derivatives/fmriprep/sub-01/anat/sub-01_desc-brain_T1w.nii.gz"
    assert outcomes[brain]["state"] == "done" and outcomes[brain]["reason"].startswith("no face found: copied")
    assert _changed(bids / brain, out / brain) == 0
    assert outcomes["derivatives/fmriprep/sub-01/anat/sub-01_desc-brain_mask.nii.gz"]["action"].startswith("copied")
    defaced = "derivatives/other/sub-01/anat/sub-01_desc-defaced_T1w.nii.gz"
    assert outcomes[defaced]["state"] == "failed" and not (out / defaced).exists()
    assert "may show a face and no face was found" in outcomes[defaced]["reason"]
    assert "deface it by hand or pass labels" in outcomes[defaced]["reason"]
    assert summary["failed"] == 1 and summary["files"] == summary["written"] + summary["failed"]
    assert summary["identifying_columns"] == [{"name": "participants.tsv", "columns": ["date_of_birth"]}]
    # the shared reports: folder names and relative paths only
    for name in ("summary.json", "report.html", "report.csv"):
        text = (out / ".defacer" / name).read_text()
        assert str(tmp_path) not in text and "Doe_Jane" not in text, name
    with sqlite3.connect(out / ".defacer" / "manifest.sqlite") as db:
        assert str(tmp_path) not in json.dumps(db.execute("select * from meta").fetchall())
    assert summary["output"] == "out" and summary["audit_folder"] == "out.audit"
    assert (out.parent / "out.audit" / "uid_mapping.csv").is_file()  # the private audit is still where it was


def _outcomes(out: Path) -> dict[str, dict]:
    with sqlite3.connect(out / ".defacer" / "manifest.sqlite") as db:
        return {row[0]: json.loads(row[1]) for row in db.execute("select id, outcome from items")}


def _changed(before: Path, after: Path) -> int:
    return int(np.count_nonzero(read_volume(before).array != read_volume(after).array))


def test_rerun_into_an_older_output_redoes_an_item_whose_kind_changed(ixi_pairs, tmp_path):
    """An output made by a version that copied quantitative maps holds the map with its face,
    recorded as done: a rerun must not keep it because its inputs and settings are unchanged."""
    from DeFacerLib.batch import run_batch

    bids = tmp_path / "bids"
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True)
    rel = "sub-01/anat/sub-01_T1map.nii.gz"
    write_volume(_quantitative_map(ixi_pairs[1][0]), bids / rel)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "rerun", "BIDSVersion": "1.9.0"}))
    out = tmp_path / "out"
    run_batch(bids, out, key_file=tmp_path / "key", workers=1)
    with sqlite3.connect(out / ".defacer" / "manifest.sqlite") as db:  # as the older version recorded it
        db.execute("update items set kind = 'copy', outcome = json_set(outcome, '$.kind', 'copy', '$.action', 'copied') "
                   "where id = ?", (rel,))
    (out / rel).write_bytes((bids / rel).read_bytes())
    summary = run_batch(bids, out, key_file=tmp_path / "key", workers=1)
    assert summary["failed"] == 0 and summary["defaced"] == 1
    assert _outcomes(out)[rel]["kind"] == FACE_CHECK and _changed(bids / rel, out / rel) > 1000
