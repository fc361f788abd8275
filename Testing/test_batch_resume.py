"""`defacer batch` across runs (helper audit "batchscale"): the key a long-lived cluster's workers
use, a corrected label map, a settings change cut short, withdrawn subjects, two runs on one
output, a scheduler address that is none, shareable provenance, progress in a job log.
Phantom heads with their own labels (no model). Each test failed before its fix."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from DeFacerLib.batch import run_batch  # noqa: E402
from DeFacerLib.batch.tasks import BatchConfig, context_for, key_check_of  # noqa: E402
from DeFacerLib.dicom import ProfileOptions  # noqa: E402
from DeFacerLib.deface.pipeline import DefaceParameters  # noqa: E402
from DeFacerLib.errors import InputError, OutputError, UsageError  # noqa: E402
from DeFacerLib.features import LABEL_VALUES  # noqa: E402
from DeFacerLib.io import read_volume, write_volume  # noqa: E402
from test_batch_bids import make_phantom_bids  # noqa: E402

SUBJECTS = 2
MODIFIED_DATES = ProfileOptions(retain_long_modified_dates=True)  # acq_time moves by the keyed offset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    make_phantom_bids(base / "in", base / "labels", subjects=SUBJECTS)
    return base


def _copy_input(dataset: Path, tmp_path: Path) -> Path:
    shutil.copytree(dataset / "in", tmp_path / "in")
    return tmp_path / "in"


def _provenance(output: Path, sub: str) -> dict:
    path = output / ".defacer" / "provenance" / sub / "anat" / f"{sub}_T1w.nii.gz.defacer.json"
    return json.loads(path.read_text())


def _open_files() -> list[str]:
    """The files this process holds open (Linux), for a worker to report."""
    files = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            files.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed since
            pass
    return files


def test_a_long_lived_cluster_reads_the_key_of_each_run(dataset, tmp_path):
    """A worker kept the key it read first, by path: after the key file changed, one output
    mixed two keys (the scans tables shifted by the old key's offset)."""
    from distributed import Client, LocalCluster

    key = tmp_path / "site.key"
    key.write_text(bytes(range(32)).hex())
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        run_batch(dataset / "in", tmp_path / "first", labels_dir=dataset / "labels", key_file=key,
                  dicom_options=MODIFIED_DATES, client=client)
        # the run is over: its workers, which run on, do not hold the key file open (a later scrub
        # saw it held and marked the user's key as used)
        if os.path.isdir("/proc/self/fd"):  # Linux
            held = client.run(_open_files)
            assert not [files for files in held.values() if str(key) in files], held
        key.write_text(bytes(range(32, 64)).hex())
        run_batch(dataset / "in", tmp_path / "second", labels_dir=dataset / "labels", key_file=key,
                  dicom_options=MODIFIED_DATES, client=client)
    run_batch(dataset / "in", tmp_path / "fresh", labels_dir=dataset / "labels", key_file=key,
              dicom_options=MODIFIED_DATES, workers=1)
    scans = "sub-01/sub-01_scans.tsv"
    assert (tmp_path / "second" / scans).read_text() == (tmp_path / "fresh" / scans).read_text()
    assert (tmp_path / "second" / scans).read_text() != (tmp_path / "first" / scans).read_text()


def test_a_worker_running_another_version_fails_its_items(tmp_path):
    """A worker of a long-lived cluster keeps the DeFacer it started with: after an upgrade on the
    driver it ran the old code, and the manifest recorded the new version for what it made. The
    driver's version travels with the config; here a config from another version reaches this
    worker, as this version's config would reach an older one."""
    from DeFacerLib import __version__
    from DeFacerLib.batch.discover import DESCRIPTION, Item
    from DeFacerLib.batch.tasks import process_item

    key = tmp_path / "site.key"
    key.write_text(bytes(range(32)).hex())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}\n')
    base = dict(input_root=str(tmp_path / "in"), output_root=str(tmp_path / "out"), audit_root=str(tmp_path / "audit"),
                key_file=str(key), key_check=key_check_of(bytes(range(32))))
    item = Item(id="description", kind=DESCRIPTION, files=("dataset_description.json",), name="dataset_description.json")
    outcome = process_item(item, BatchConfig(**base, version="0.0.0+older"))
    assert outcome["state"] == "failed" and f"this worker runs DeFacer {__version__} and the run DeFacer 0.0.0+older" \
        in outcome["reason"]
    assert not (tmp_path / "out").exists()
    assert process_item(item, BatchConfig(**base, version=__version__))["state"] == "done"


def test_a_worker_never_makes_a_key_of_its_own(tmp_path, monkeypatch):
    """A relative --key-file made each worker of a cluster (another working folder) create and
    use a new random key: pseudonyms nobody could link back."""
    monkeypatch.chdir(tmp_path)
    key = tmp_path / "site.key"
    key.write_text(bytes(range(32)).hex())
    base = dict(input_root="in", output_root="out", audit_root="out.audit")
    with pytest.raises(InputError, match="absolute path"):
        context_for(BatchConfig(**base, key_file="elsewhere.key"))
    with pytest.raises(InputError, match="absolute path"):
        context_for(BatchConfig(**base, key_file=str(tmp_path / "missing.key")))
    with pytest.raises(InputError, match="another key"):
        context_for(BatchConfig(**base, key_file=str(key), key_check=key_check_of(bytes(32))))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.key"]
    assert context_for(BatchConfig(**base, key_file=str(key), key_check=key_check_of(bytes(range(32))))).key \
        == bytes(range(32))


def test_a_corrected_label_map_is_applied_on_the_rerun(dataset, tmp_path):
    """The label maps were no input of an item: a map given the nose it had missed was
    'already done', and the nose stayed on the face."""
    labels = tmp_path / "labels"
    for path in (dataset / "labels").rglob("*.nii.gz"):
        full = read_volume(path)
        eyes_and_brain = np.where(np.isin(full.array, (LABEL_VALUES["eyes"], LABEL_VALUES["brain"])), full.array, 0)
        target = labels / path.relative_to(dataset / "labels")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_volume(dataclasses.replace(full, array=eyes_and_brain.astype(full.array.dtype)), target)
    key, out = tmp_path / "key", tmp_path / "out"
    run_batch(dataset / "in", out, labels_dir=labels, key_file=key, workers=1)
    assert _provenance(out, "sub-01")["report"]["features"]["nose"]["voxels_removed"] == 0
    shutil.rmtree(labels)
    shutil.copytree(dataset / "labels", labels)
    run_batch(dataset / "in", out, labels_dir=labels, key_file=key, workers=1)
    for sub in ("sub-01", "sub-02"):
        assert _provenance(out, sub)["report"]["features"]["nose"]["voxels_removed"] > 1000


def test_a_settings_change_cut_short_is_not_complete(dataset, tmp_path):
    """After --features changed, --max-items 3 redid three items and said complete: true,
    with every head still defaced the old way."""
    key, out = tmp_path / "key", tmp_path / "out"
    run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=key, workers=1)
    eyes_only = DefaceParameters(features=("eyes",))
    summary = run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=key, workers=1,
                        parameters=eyes_only, max_items=3)
    assert not summary["complete"] and summary["items_finished"] == 3
    assert summary["items_pending"] == summary["items"] - 3
    assert not json.loads((out / ".defacer" / "summary.json").read_text())["complete"]
    rest = run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=key, workers=1,
                     parameters=eyes_only)
    assert rest["complete"] and rest["items_pending"] == 0


def test_outputs_of_withdrawn_subjects_are_removed(dataset, tmp_path, capsys):
    """A subject deleted from the input kept its defaced head in the output tree, while the
    reports no longer named it."""
    source, key, out = _copy_input(dataset, tmp_path), tmp_path / "key", tmp_path / "out"
    run_batch(source, out, labels_dir=dataset / "labels", key_file=key, workers=1)
    assert (out / "sub-02" / "anat" / "sub-02_T1w.nii.gz").is_file()
    shutil.rmtree(source / "sub-02")
    summary = run_batch(source, out, labels_dir=dataset / "labels", key_file=key, workers=1)
    assert summary["complete"]
    assert not (out / "sub-02").exists() and not (out / ".defacer" / "provenance" / "sub-02").exists()
    assert (out / "sub-01" / "anat" / "sub-01_T1w.nii.gz").is_file()


def test_a_second_run_into_the_same_output_is_refused(dataset, tmp_path):
    """Two runs on one output redid each other's items and swept each other's temporaries."""
    key, out = tmp_path / "key", tmp_path / "out"
    run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=key, workers=1, max_items=1)
    with open(out / ".defacer" / "run.lock", "a+") as held:  # as the first run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another defacer batch"):
            run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=key, workers=1)
    assert run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=key, workers=1)["complete"]


def test_a_scheduler_address_that_is_none_leaves_nothing(dataset, tmp_path):
    """`--scheduler http://...` was an internal error, and the output and audit folders stayed; the
    key the run made stayed too (keyed nothing), as if it had keyed an output."""
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler"):
        run_batch(dataset / "in", tmp_path / "out", key_file=tmp_path / "key", scheduler="http://127.0.0.1:8799")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_provenance_records_and_job_logs(dataset, tmp_path):
    """The shareable provenance records held the output's absolute path; a job log (stderr not
    a terminal) showed no progress at all."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "batch", str(dataset / "in"), str(out),
                             "--features-from", str(dataset / "labels"), "--key-file", str(tmp_path / "key"),
                             "--workers", "1"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    items = json.loads((out / ".defacer" / "summary.json").read_text())["items"]
    assert f"{items}/{items} items, 0 failed" in result.stderr
    record = _provenance(out, "sub-01")
    assert record["output"]["path"] == "sub-01/anat/sub-01_T1w.nii.gz"
    assert str(tmp_path) not in json.dumps(record)


def test_the_reports_checksums_of_a_file_are_its_own(dataset, tmp_path):
    """report.csv's input_sha256 and output_sha256 of a one-file item were taken over the file's
    relative path and contents: neither sha256sum nor the item's provenance record gave them, so
    a recipient checking a file against the report found a mismatch on every file."""
    import csv
    import hashlib

    out = tmp_path / "out"
    run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=tmp_path / "key", workers=1)
    with open(out / ".defacer" / "report.csv", newline="") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    rel = "sub-01/anat/sub-01_T1w.nii.gz"
    record = _provenance(out, "sub-01")
    sha256 = {root: hashlib.sha256((root / rel).read_bytes()).hexdigest() for root in (dataset / "in", out)}
    assert rows[rel]["input_sha256"] == sha256[dataset / "in"] == record["input"]["sha256"]
    assert rows[rel]["output_sha256"] == sha256[out] == record["output"]["sha256"]


def test_reports_that_cannot_be_written_are_a_one_line_error_and_no_partial_account(dataset, tmp_path):
    """A folder where report.html goes ended a finished run as an internal error (exit 1), with
    this run's report.csv beside no summary.json."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "DeFacerLib", "batch", str(dataset / "in"), str(out), "--features-from",
            str(dataset / "labels"), "--key-file", str(tmp_path / "key"), "--workers", "1", "-q"]
    assert subprocess.run(args, capture_output=True, text=True).returncode == 0
    meta = out / ".defacer"
    (meta / "report.html").unlink()
    (meta / "report.html").mkdir()
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr
    assert "internal error" not in result.stderr and "report.html" in result.stderr
    assert sorted(p.name for p in meta.iterdir() if "report" in p.name or "summary" in p.name) == ["report.html"]


def test_outputs_of_a_subject_out_of_reach_stay(dataset, tmp_path):
    """A subject folder linked to storage that is not mounted now is not a withdrawn subject:
    its outputs were deleted as if it were."""
    source, storage, key, out = tmp_path / "in", tmp_path / "storage", tmp_path / "key", tmp_path / "out"
    shutil.copytree(dataset / "in", source)
    shutil.move(source / "sub-02", storage)
    (source / "sub-02").symlink_to(storage, target_is_directory=True)
    run_batch(source, out, labels_dir=dataset / "labels", key_file=key, workers=1)
    assert (out / "sub-02" / "anat" / "sub-02_T1w.nii.gz").is_file()
    storage.rename(tmp_path / "unmounted")
    run_batch(source, out, labels_dir=dataset / "labels", key_file=key, workers=1)
    assert (out / "sub-02" / "anat" / "sub-02_T1w.nii.gz").is_file()


def test_a_run_that_cannot_start_keeps_the_last_reports(dataset, tmp_path):
    """A mistyped --scheduler (exit 2) deleted the finished run's summary and reports."""
    key, out = tmp_path / "key", tmp_path / "out"
    run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=key, workers=1)
    with pytest.raises(UsageError):
        run_batch(dataset / "in", out, labels_dir=dataset / "labels", key_file=key, scheduler="http://127.0.0.1:8799")
    assert json.loads((out / ".defacer" / "summary.json").read_text())["complete"]


def test_a_file_system_without_locks_still_runs(dataset, tmp_path, monkeypatch):
    """flock failing with ENOLCK (Lustre without -o flock) was taken for another run: every run
    was refused."""
    import errno

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    summary = run_batch(dataset / "in", tmp_path / "out", labels_dir=dataset / "labels", key_file=tmp_path / "key",
                        workers=1)
    assert summary["complete"]
