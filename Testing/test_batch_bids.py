"""Batch plumbing on a small BIDS dataset of phantom heads (labels from the phantom, no model):
accounting, sidecar scrubbing, GeneratedBy, resume after a partial run, after Ctrl-C and
after a worker is killed, and a full disk. Every run is compared with one uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from DeFacerLib.batch import run_batch  # noqa: E402
from DeFacerLib.batch.bids import scrub_dated_table, scrub_sidecar  # noqa: E402
from DeFacerLib.batch.discover import (  # noqa: E402
    BIDS, COPY, DATED_TABLE, DEFACE_VOLUME, DESCRIPTION, FACE_CHECK, SIDECAR, classify,
)
from DeFacerLib.dicom import ProfileOptions, load_or_create_key  # noqa: E402
from DeFacerLib.dicom.uids import DATE_OFFSET_RANGE_DAYS, date_offset_days  # noqa: E402
from DeFacerLib.errors import OutputError  # noqa: E402
from DeFacerLib.features import LABEL_VALUES  # noqa: E402
from DeFacerLib.io import read_volume, write_volume  # noqa: E402
from DeFacerLib.phantom import make_phantom  # noqa: E402

SUBJECTS = 3
ACQ_TIMES = ("2005-07-12T10:11:12", "2006-01-31T08:00:00", "2005-12-31T23:59:59.5")
SIDECAR_IN = {"RepetitionTime": 2.3, "EchoTime": 0.00298, "FlipAngle": 9, "Manufacturer": "Siemens",
              "InstitutionName": "Hammersmith Hospital", "DeviceSerialNumber": "35008",
              "AcquisitionDateTime": "2005-07-12T10:11:12", "PatientName": "DOE^JANE", "StationName": "MRC35008"}


def make_phantom_bids(root: Path, labels_root: Path, subjects: int = SUBJECTS) -> None:
    for index in range(subjects):
        sub = f"sub-{index + 1:02d}"
        volume, labels = make_phantom(seed=index, orientation=("LPS", "RAS", "PIR")[index % 3])
        anat = root / sub / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        write_volume(volume, anat / f"{sub}_T1w.nii.gz")
        (anat / f"{sub}_T1w.json").write_text(json.dumps(SIDECAR_IN))
        (root / sub / f"{sub}_scans.tsv").write_text(f"filename\tacq_time\nanat/{sub}_T1w.nii.gz\t{ACQ_TIMES[index]}\n")
        label_dir = labels_root / sub / "anat"
        label_dir.mkdir(parents=True, exist_ok=True)
        label_volume = dataclasses.replace(volume, array=labels.astype(np.uint8), slope=1.0, intercept=0.0)
        write_volume(label_volume, label_dir / f"{sub}_T1w.nii.gz")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "phantoms", "BIDSVersion": "1.9.0"}))
    (root / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{i + 1:02d}\n" for i in range(subjects)))
    (root / "README").write_text("phantom heads for the batch tests\n")


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file of the de-identified tree (the .defacer/ run records excluded)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(".defacer/"):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def manifest_rows(output: Path) -> dict[str, tuple]:
    with sqlite3.connect(output / ".defacer" / "manifest.sqlite") as db:
        return {row[0]: row[1:] for row in db.execute("SELECT id, state, output_sha256, attempts FROM items")}


@pytest.fixture(scope="module")
def phantom_bids(tmp_path_factory):
    base = tmp_path_factory.mktemp("phantom_bids")
    make_phantom_bids(base / "in", base / "labels")
    return base


@pytest.fixture(scope="module")
def reference(phantom_bids):
    """One uninterrupted run (1 worker): summary and tree checksums."""
    out = phantom_bids / "reference"
    summary = run_batch(phantom_bids / "in", out, labels_dir=phantom_bids / "labels", key_file=phantom_bids / "key",
                        workers=1)
    return summary, tree_digest(out)


def test_plan_classifies_bids_files():
    files = ["dataset_description.json", "participants.tsv", "sub-01/anat/sub-01_T1w.nii.gz",
             "sub-01/anat/sub-01_T1w.json", "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii", "sub-01/func/sub-01_task-rest_bold.nii.gz",
             "sub-01/pet/sub-01_pet.nii.gz", "sub-01/anat/sub-01_T1map.nii.gz", "derivatives/x/sub-01_T1w.nii.gz",
             "sub-01/sub-01_scans.tsv", "sub-01/ses-1/sub-01_ses-1_scans.tsv", "sub-01/sub-01_sessions.tsv",
             "phenotype/moca.tsv"]
    items, dicom = classify(Path("/nonexistent"), files, BIDS)
    kinds = {item.files[0]: item.kind for item in items}
    assert dicom == []
    assert kinds == {
        "dataset_description.json": DESCRIPTION, "participants.tsv": COPY,
        "sub-01/anat/sub-01_T1w.nii.gz": DEFACE_VOLUME, "sub-01/anat/sub-01_T1w.json": SIDECAR,
        "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii": DEFACE_VOLUME, "sub-01/func/sub-01_task-rest_bold.nii.gz": COPY,
        # a quantitative map and a derivative head may show the face: defaced, or copied only without skin
        "sub-01/pet/sub-01_pet.nii.gz": DEFACE_VOLUME, "sub-01/anat/sub-01_T1map.nii.gz": FACE_CHECK,
        "derivatives/x/sub-01_T1w.nii.gz": FACE_CHECK, "sub-01/sub-01_scans.tsv": DATED_TABLE,
        "sub-01/ses-1/sub-01_ses-1_scans.tsv": DATED_TABLE, "sub-01/sub-01_sessions.tsv": DATED_TABLE,
        "phenotype/moca.tsv": COPY,
    }


def test_sidecar_scrub_keeps_acquisition_parameters():
    cleaned, removed = scrub_sidecar({**SIDECAR_IN, "Nested": {"PatientID": "123", "SliceTiming": [0, 1]}})
    assert removed == ["AcquisitionDateTime", "DeviceSerialNumber", "InstitutionName", "PatientID", "PatientName",
                       "StationName"]
    assert cleaned == {"RepetitionTime": 2.3, "EchoTime": 0.00298, "FlipAngle": 9, "Manufacturer": "Siemens",
                       "Nested": {"SliceTiming": [0, 1]}}
    assert "ProtocolName" not in scrub_sidecar({"ProtocolName": "t1_mprage"})[0]  # Basic: descriptions go


def test_sidecar_follows_the_profile_options_as_the_dicom_does():
    """Clean Descriptors keeps a description unless it names what was removed; Modified Dates
    shifts the date and keeps the time; Retain Patient Characteristics keeps sex and age."""
    sidecar = {**SIDECAR_IN, "SeriesDescription": "t1_mprage", "ProtocolName": "JANE DOE t1", "PatientSex": "F",
               "PatientAge": "039Y", "AcquisitionTime": "10:11:12.5"}
    cleaned, removed = scrub_sidecar(sidecar, ProfileOptions(clean_descriptors=True, retain_long_modified_dates=True), -400)
    assert cleaned["SeriesDescription"] == "t1_mprage" and "ProtocolName" in removed  # it names DOE^JANE
    assert cleaned["AcquisitionDateTime"] == "2004-06-07T10:11:12" and cleaned["AcquisitionTime"] == "10:11:12.5"
    assert {"PatientSex", "PatientAge", "PatientName", "InstitutionName"} <= set(removed)
    kept, _ = scrub_sidecar(sidecar, ProfileOptions(retain_patient_characteristics=True, retain_long_full_dates=True))
    assert (kept["PatientSex"], kept["PatientAge"], kept["AcquisitionDateTime"]) == ("F", "039Y", "2005-07-12T10:11:12")
    assert "PatientName" not in kept and "SeriesDescription" not in kept


def test_acq_time_follows_the_dates_policy():
    table = "filename\tacq_time\r\na.nii.gz\t2019-03-12T10:22:01\r\nb.nii.gz\tn/a\r\nc.nii.gz\t12/03/2019\r\n"
    assert scrub_dated_table(table, "remove") == (table.replace("2019-03-12T10:22:01", "n/a").replace("12/03/2019", "n/a"), 2)
    assert scrub_dated_table(table, "full") == (table, 0)
    shifted, changed = scrub_dated_table(table, "modified", -400)  # the time of day stays; what does not parse goes
    assert changed == 2 and shifted == table.replace("2019-03-12", "2018-02-05").replace("12/03/2019", "n/a")


def test_modified_dates_shift_each_subject_by_its_keyed_offset(phantom_bids, tmp_path):
    """--dates modified: each subject's acq_time moves by its own keyed whole-day offset (the
    DICOM profile's), so intervals within a subject and the time of day survive."""
    import datetime as dt

    out = tmp_path / "out"
    summary = run_batch(phantom_bids / "in", out, scrub_only=True, key_file=phantom_bids / "key", workers=1,
                        dicom_options=ProfileOptions(retain_long_modified_dates=True))
    assert summary["failed"] == 0
    key, _, _ = load_or_create_key(phantom_bids / "key")
    offsets = []
    for index, original in enumerate(ACQ_TIMES):
        sub = f"sub-{index + 1:02d}"
        value = (out / sub / f"{sub}_scans.tsv").read_text().splitlines()[1].split("\t")[1]
        days = (dt.date.fromisoformat(value[:10]) - dt.date.fromisoformat(original[:10])).days
        assert value[10:] == original[10:] and days == date_offset_days(key, sub)
        sidecar = json.loads((out / sub / "anat" / f"{sub}_T1w.json").read_text())  # the same offset there
        shifted = dt.date.fromisoformat(sidecar["AcquisitionDateTime"][:10]) - dt.date.fromisoformat(SIDECAR_IN["AcquisitionDateTime"][:10])
        assert shifted.days == days
        assert DATE_OFFSET_RANGE_DAYS[0] <= days <= DATE_OFFSET_RANGE_DAYS[1]
        offsets.append(days)
    assert len(set(offsets)) == SUBJECTS


def test_bids_run_accounts_for_every_file(phantom_bids, reference):
    summary, digest = reference
    out = phantom_bids / "reference"
    files_in = 3 * SUBJECTS + 3  # a T1w, its sidecar and a scans table per subject, 3 top-level files
    assert summary["files"] == files_in
    assert (summary["written"], summary["skipped"], summary["failed"], summary["pending"]) == (files_in, 0, 0, 0)
    assert summary["files"] == summary["written"] + summary["skipped"] + summary["failed"]
    assert summary["defaced"] == SUBJECTS and summary["protected_voxels_changed"] == 0
    assert sorted(digest) == sorted(p.relative_to(phantom_bids / "in").as_posix()
                                    for p in (phantom_bids / "in").rglob("*") if p.is_file())
    sidecar = json.loads((out / "sub-01/anat/sub-01_T1w.json").read_text())
    assert sidecar == {"RepetitionTime": 2.3, "EchoTime": 0.00298, "FlipAngle": 9, "Manufacturer": "Siemens"}
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["Name"] == "phantoms" and [g["Name"] for g in description["GeneratedBy"]] == ["DeFacer"]
    assert (out / "participants.tsv").read_bytes() == (phantom_bids / "in/participants.tsv").read_bytes()
    assert (out / "sub-01/sub-01_scans.tsv").read_text() == "filename\tacq_time\nanat/sub-01_T1w.nii.gz\tn/a\n"
    for index in range(SUBJECTS):
        sub = f"sub-{index + 1:02d}"
        before = read_volume(phantom_bids / "in" / sub / "anat" / f"{sub}_T1w.nii.gz").array
        after = read_volume(out / sub / "anat" / f"{sub}_T1w.nii.gz").array
        brain = read_volume(phantom_bids / "labels" / sub / "anat" / f"{sub}_T1w.nii.gz").array == LABEL_VALUES["brain"]
        changed = before != after
        assert changed.sum() > 20_000, f"{sub}: only {changed.sum()} voxels removed"
        assert not (changed & brain).any()
    rows = (out / ".defacer/report.csv").read_text().splitlines()
    assert len(rows) == 1 + summary["items"]
    assert "protected (brain) voxels changed" in (out / ".defacer/report.html").read_text()
    assert not list(out.rglob("*.defacer.json")) or all(".defacer/" in str(p) for p in out.rglob("*.defacer.json"))
    # a rerun finds nothing to do; touching one input redoes exactly that item
    again = run_batch(phantom_bids / "in", out, labels_dir=phantom_bids / "labels", key_file=phantom_bids / "key", workers=1)
    assert again["items_done"] == summary["items_done"]
    attempts = {k: v[2] for k, v in manifest_rows(out).items()}
    assert set(attempts.values()) == {1}
    os.utime(phantom_bids / "in/participants.tsv")
    run_batch(phantom_bids / "in", out, labels_dir=phantom_bids / "labels", key_file=phantom_bids / "key", workers=1)
    attempts = {k: v[2] for k, v in manifest_rows(out).items()}
    assert attempts.pop("participants.tsv") == 2 and set(attempts.values()) == {1}
    assert tree_digest(out) == digest


def test_partial_run_resumes_to_identical_outputs(phantom_bids, reference):
    out = phantom_bids / "partial"
    first = run_batch(phantom_bids / "in", out, labels_dir=phantom_bids / "labels", key_file=phantom_bids / "key",
                      workers=1, max_items=4)
    assert first["items_finished"] == 4 and first["pending"] > 0
    assert first["written"] + first["skipped"] + first["failed"] + first["pending"] == first["files"]
    second = run_batch(phantom_bids / "in", out, labels_dir=phantom_bids / "labels", key_file=phantom_bids / "key",
                       workers=1)
    assert second["pending"] == 0 and second["written"] == reference[0]["written"]
    assert tree_digest(out) == reference[1]
    assert {v[2] for v in manifest_rows(out).values()} == {1}  # nothing done twice


def test_ctrl_c_stops_cleanly_and_resumes(phantom_bids, reference):
    out = phantom_bids / "sigint"
    command = [sys.executable, "-m", "DeFacerLib", "batch", str(phantom_bids / "in"), str(out), "--workers", "1",
               "--features-from", str(phantom_bids / "labels"), "--key-file", str(phantom_bids / "key"), "-q"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # interrupt once the first head is recorded, while others are in flight
        time.sleep(0.2)
        try:
            rows = manifest_rows(out)
        except sqlite3.Error:
            continue
        if any(key.endswith("_T1w.nii.gz") for key in rows):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "rerun the same command to resume" in err
    recorded = manifest_rows(out)
    assert 0 < len(recorded) < reference[0]["items"]
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert tree_digest(out) == reference[1]


def test_killed_worker_loses_nothing(phantom_bids, reference):
    from distributed import Client, LocalCluster

    out = phantom_bids / "killed"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    killed = []

    def kill_one_worker_mid_run():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            time.sleep(0.1)
            processing = client.processing()
            busy = [address for address, keys in processing.items() if any("_T1w.nii.gz" in str(key) for key in keys)]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append((busy[0], pid, list(processing[busy[0]])))

    try:
        killer = threading.Thread(target=kill_one_worker_mid_run)
        killer.start()
        summary = run_batch(phantom_bids / "in", out, labels_dir=phantom_bids / "labels",
                            key_file=phantom_bids / "key", client=client)
        killer.join()
        pids_after = set(client.run(os.getpid).values())
    finally:
        client.close()
        cluster.close()
    assert killed, "no worker was busy with a head to kill"
    address, pid, keys = killed[0]
    assert any("_T1w.nii.gz" in str(key) for key in keys) and pid not in pids_after and len(pids_after) == 2
    assert summary["failed"] == 0 and summary["pending"] == 0
    assert summary["files"] == summary["written"] == reference[0]["written"]
    assert tree_digest(out) == reference[1]
    assert {v[2] for v in manifest_rows(out).values()} == {1}  # the re-run task was recorded once
    assert not [p for p in out.rglob("*") if ".partial" in p.name]


def _full_disk_checks(error, out: Path, reference_digest: dict) -> None:
    assert "disk is full" in str(error) or "No space left" in str(error) or "full" in str(error)
    assert "rerun" in str(error)
    assert not [p for p in out.rglob("*") if ".partial" in p.name], "partial outputs left behind"
    digest = tree_digest(out)
    for rel, sha in digest.items():  # what is there is complete and identical to the reference
        assert reference_digest.get(rel) == sha, rel


def test_full_disk_is_a_clear_error_without_partial_outputs(phantom_bids, reference, tmp_path, monkeypatch):
    """ENOSPC injected at the write boundary (the NIfTI writer, after half the bytes are out)."""
    from distributed import Client, LocalCluster

    import DeFacerLib.io as io

    real_writer = io.write_nifti
    calls = []

    def writer_that_fills_the_disk(volume, path, description):
        calls.append(path)
        if len(calls) >= 2:
            Path(path).write_bytes(b"\0" * 4096)  # a half-written temporary, as on a real full disk
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_writer(volume, path, description)

    monkeypatch.setattr(io, "write_nifti", writer_that_fills_the_disk)
    out = tmp_path / "full"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with pytest.raises(OutputError) as caught:
            run_batch(phantom_bids / "in", out, labels_dir=phantom_bids / "labels", key_file=phantom_bids / "key",
                      client=client)
    _full_disk_checks(caught.value, out, reference[1])
    rows = manifest_rows(out)
    failed = [k for k, v in rows.items() if v[0] == "failed"]
    assert len(failed) == 1 and failed[0].endswith("_T1w.nii.gz")
    assert not (out / failed[0]).exists()


def test_full_disk_on_a_real_tmpfs(phantom_bids, reference, tmp_path):
    """A 2 MiB tmpfs holds one defaced head but not two (needs root to mount)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); the injected ENOSPC test covers the code path")
    try:
        out = mount_point / "out"
        with pytest.raises(OutputError) as caught:
            run_batch(phantom_bids / "in", out, labels_dir=phantom_bids / "labels", key_file=phantom_bids / "key",
                      workers=1, audit_dir=tmp_path / "audit")
        _full_disk_checks(caught.value, out, reference[1])
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_copied_nifti_loses_what_its_header_says_about_people(data_dir, tmp_path):
    """A functional series is copied, not defaced; its header still goes: IXI162's real AFNI
    extension (the operator's login and host, dates, the subject's original file name) is gone,
    the voxels and every header field are as they were, and a NIfTI with nothing to clean is
    copied byte for byte."""
    import gzip

    import nibabel as nib

    source = tmp_path / "in"
    func = source / "sub-01" / "func"
    func.mkdir(parents=True)
    (source / "dataset_description.json").write_text(json.dumps({"Name": "copies", "BIDSVersion": "1.9.0"}))
    ixi = data_dir / "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"
    (func / "sub-01_task-rest_bold.nii.gz").write_bytes(ixi.read_bytes())  # a real header with an AFNI history
    plain = func / "sub-01_task-rest_sbref.nii.gz"
    volume, _ = make_phantom(seed=3)
    write_volume(volume, plain)
    summary = run_batch(source, tmp_path / "out", scrub_only=True, key_file=tmp_path / "key", workers=1)
    assert summary["failed"] == 0
    out = tmp_path / "out" / "sub-01" / "func"
    text = gzip.decompress((out / "sub-01_task-rest_bold.nii.gz").read_bytes()).decode("latin-1")
    assert "erusg" not in text and "cubic-login5" not in text and "IXI162" not in text
    before, after = nib.load(str(ixi)), nib.load(str(out / "sub-01_task-rest_bold.nii.gz"))
    assert len(before.header.extensions) == 1 and len(after.header.extensions) == 0
    assert np.array_equal(np.asanyarray(before.dataobj), np.asanyarray(after.dataobj))
    assert all(before.header[k].tobytes() == after.header[k].tobytes() for k in before.header.keys() if k != "vox_offset")
    assert (out / "sub-01_task-rest_sbref.nii.gz").read_bytes() == plain.read_bytes()
    with sqlite3.connect(tmp_path / "out" / ".defacer" / "manifest.sqlite") as db:
        actions = dict(db.execute("SELECT id, json_extract(outcome, '$.action') FROM items"))
    assert "copied, header cleaned" in actions.values() and "copied" in actions.values()
