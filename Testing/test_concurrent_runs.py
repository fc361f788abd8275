"""Two runs at once: a data manager starts the same command twice, or a cron job overlaps the last.

Two runs sharing one new key file get one key; a run that made the key and then fails keeps it
when another run has used it; two runs into one new output (no --overwrite) never both say
"written": the later one is refused and the first one's output and audit are kept whole.
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from DeFacerLib.dicom import ProfileOptions, load_or_create_key, scrub_tree
from DeFacerLib.dicom.uids import forget_new_key, release_held_keys
from DeFacerLib.errors import DeFacerError, OutputError
from DeFacerLib.io import read_volume, write_volume
from DeFacerLib.io.atomic import atomic_path

RACERS = 8
RACES = 40


def _race_for_key(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        key, _, _ = load_or_create_key(path)
        results.put(key.hex())
    except DeFacerError as error:
        results.put(f"error: {error}")


def test_runs_started_at_once_with_a_new_key_file_get_one_key(tmp_path):
    """The loser of the race read the winner's file while it was still empty ("holds a key
    shorter than 16 bytes", 7 races in 100 of 8 processes) or failed on O_EXCL ("cannot create
    the key file ...: File exists", 5 in 100)."""
    context = multiprocessing.get_context("fork")
    failures = []
    for race in range(RACES):
        path = str(tmp_path / f"race{race}" / "deid.key")
        barrier, results = context.Barrier(RACERS), context.Queue()
        racers = [context.Process(target=_race_for_key, args=(path, barrier, results)) for _ in range(RACERS)]
        for racer in racers:
            racer.start()
        got = {results.get(timeout=120) for _ in racers}
        for racer in racers:
            racer.join()
        if len(got) != 1 or next(iter(got)).startswith("error"):
            failures.append(got)
    assert not failures, failures[:3]
    assert not list(tmp_path.rglob("*.partial")), "the key's temporary stayed"


def test_a_failed_run_keeps_the_new_key_another_run_published_with(tmp_path, data_dir):
    """Run A makes the key and is stopped (SIGTERM, an error); run B read the key meanwhile and
    published its scrubbed series. A deleted the key: B's UIDs and pseudonyms could no longer be
    reproduced or linked to the next batch, whose run made a new key."""
    key_file = tmp_path / "new.key"
    key, path, created = load_or_create_key(key_file)  # run A
    assert created
    other = subprocess.run([sys.executable, "-m", "DeFacerLib", "scrub", str(data_dir / "dicom" / "fake_phi_ct"),
                            str(tmp_path / "b_out"), "--key-file", str(key_file), "-q"],
                           capture_output=True, text=True, timeout=600)  # run B
    assert other.returncode == 0, other.stderr
    forget_new_key(path, created)  # A fails
    assert key_file.is_file(), "the key B published with was deleted"
    assert load_or_create_key(key_file)[0] == key


def test_without_file_locks_a_failed_run_keeps_the_new_key_another_run_published_with(tmp_path, data_dir):
    """Where flock is missing (Windows; here: `import fcntl` fails) a read could not tell whether
    the key's maker still ran, and left no mark: the failed maker deleted the key that run B had
    published its scrubbed series with."""
    no_locks = "import sys; sys.modules['fcntl'] = None\n"  # as on Windows: no fcntl module
    key_file = tmp_path / "new.key"
    run_b = no_locks + ("from DeFacerLib.cli.main import main\n"
                        f"sys.exit(main(['scrub', {str(data_dir / 'dicom' / 'fake_phi_ct')!r}, "
                        f"{str(tmp_path / 'b_out')!r}, '--key-file', {str(key_file)!r}, '-q']))\n")
    run_a = no_locks + ("import subprocess\n"
                        "from DeFacerLib.dicom.uids import forget_new_key, load_or_create_key\n"
                        f"key, path, created = load_or_create_key({str(key_file)!r})\n"
                        f"b = subprocess.run([sys.executable, '-c', {run_b!r}], capture_output=True, text=True)\n"
                        "print(created, b.returncode, b.stderr[-500:])\n"
                        "forget_new_key(path, created)\n")  # A fails after B published
    a = subprocess.run([sys.executable, "-c", run_a], capture_output=True, text=True, timeout=600)
    assert a.returncode == 0 and a.stdout.split()[:2] == ["True", "0"], a.stdout + a.stderr
    assert len(list((tmp_path / "b_out").rglob("*.dcm"))) == 2
    assert key_file.is_file(), "the key B published with was deleted"


def test_a_run_with_an_existing_key_leaves_the_key_file_untouched(tmp_path, data_dir):
    """Every run that read an existing key moved its modification time to now (the mark that a
    new key was used, meant for a key whose maker still runs): a user's key made years ago looked
    changed today, and backups and `find -newer` took it for a new key. A key no run holds is
    read without a trace."""
    import os

    key_file = tmp_path / "project.key"
    key_file.write_text("ab" * 32 + "\n")
    os.chmod(key_file, 0o600)
    os.utime(key_file, ns=(1_000_000_000 * 10**9, 1_000_000_000 * 10**9))  # September 2001
    run = subprocess.run([sys.executable, "-m", "DeFacerLib", "scrub", str(data_dir / "dicom" / "fake_phi_ct"),
                          str(tmp_path / "out"), "--key-file", str(key_file), "-q"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert key_file.stat().st_mtime_ns == 1_000_000_000 * 10**9


def test_a_failed_run_alone_still_leaves_no_new_key(tmp_path):
    key, path, created = load_or_create_key(tmp_path / "made" / "new.key")
    load_or_create_key(path)  # this run's own second read is no other run's use
    forget_new_key(path, created)
    assert not (tmp_path / "made").exists()


def test_where_hard_links_cannot_be_made_the_key_and_outputs_are_still_placed_once(tmp_path, monkeypatch):
    """FAT and some network shares refuse hard links (EPERM): a new key file and an output are put
    in place by an exclusive create and a rename instead (io.atomic.link_new serves both), and
    still never over another run's file."""
    def no_links(source, target):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(target))

    monkeypatch.setattr(os, "link", no_links)
    key, path, created = load_or_create_key(tmp_path / "deid.key")
    assert created and path.read_text() == key.hex() + "\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == (key, path, False)
    release_held_keys()
    out = tmp_path / "out.nii.gz"
    with atomic_path(out, replace=False) as temp:
        temp.write_bytes(b"first")
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask(), "the user's usual modes, not the claim's 0600"
    with pytest.raises(OutputError, match="another run"), atomic_path(out, replace=False) as temp:
        temp.write_bytes(b"second")
    assert out.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deid.key", "out.nii.gz"], "temporaries stayed"
    monkeypatch.undo()
    with pytest.raises(OutputError, match="another run"), atomic_path(out, replace=False) as temp:  # with links
        temp.write_bytes(b"second")
    assert out.read_bytes() == b"first"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_two_scrubs_into_one_new_output_never_both_publish(tmp_path, data_dir):
    """Both checked that the output and the audit folder did not exist before their work; the
    first to finish published, and the other then replaced its output and audit and also said
    written (exit 0): one study's scrubbed series and its mappings silently gone."""
    out, audit, key = tmp_path / "out", tmp_path / "audit", b"k" * 32
    second = {}

    def meanwhile(done: int, total: int) -> None:  # another run finishes while this one works
        if not second:
            second.update(scrub_tree(data_dir / "dicom" / "fake_phi_ct", out, ProfileOptions(), key,
                                     audit_dir=audit))

    with pytest.raises(OutputError, match="another run"):
        scrub_tree(data_dir / "dicom" / "deid_samples", out, ProfileOptions(), key, audit_dir=audit,
                   progress=meanwhile)
    assert sorted(p.name for p in out.iterdir()) == ["ctbrain1.dcm", "ctbrain2.dcm"]
    assert (audit / "summary.json").read_text().count("ctbrain") and "image1" not in (audit / "actions.jsonl").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporaries stayed"


def test_two_defaced_volumes_written_to_one_new_path_never_replace_each_other(tmp_path, data_dir):
    heads = sorted((data_dir / "heads" / "ixi" / "t1").glob("IXI*_T1.nii.gz"))[:2]
    out = tmp_path / "defaced.nii.gz"
    first, second = read_volume(heads[0]), read_volume(heads[1])

    def meanwhile(_temp: Path) -> None:  # another run publishes first
        write_volume(second, out)

    with pytest.raises(OutputError, match="another run"):
        write_volume(first, out, check=meanwhile)
    assert (read_volume(out).array == second.array).all()
    assert [p.name for p in tmp_path.iterdir()] == ["defaced.nii.gz"]


def test_a_batch_into_another_output_with_the_same_audit_folder_is_refused(tmp_path, data_dir):
    """Two batches into two outputs with one --audit-dir: the one that ended first removed the
    other's staged DICOM series (AUDIT/.work) and the other's series failed ("output folder
    <audit>/.work/series-... does not exist")."""
    pytest.importorskip("distributed")
    import fcntl

    from DeFacerLib.batch import run_batch

    source, audit, key = data_dir / "dicom" / "fake_phi_ct", tmp_path / "audit", tmp_path / "k.key"
    assert run_batch(source, tmp_path / "first", scrub_only=True, audit_dir=audit, key_file=key, workers=1)["complete"]
    staged = audit / ".work" / "series-staged-by-the-first-run"
    staged.mkdir(parents=True)
    with open(audit / ".run.lock", "a+") as held:  # as the first run holds it while it runs
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another defacer batch is using the audit folder"):
            run_batch(source, tmp_path / "second", scrub_only=True, audit_dir=audit, key_file=key, workers=1)
        assert staged.is_dir()
    assert run_batch(source, tmp_path / "second", scrub_only=True, audit_dir=audit, key_file=key, workers=1)["complete"]


def test_a_batch_refused_by_the_audit_folder_lock_leaves_no_new_key(tmp_path, data_dir):
    """The refusal came after the new key (and its folder) was made, and left them behind: the
    next run read that key as one that output had been pseudonymised with."""
    pytest.importorskip("distributed")
    import fcntl

    from DeFacerLib.batch import run_batch

    audit, key = tmp_path / "audit", tmp_path / "keys" / "new.key"
    audit.mkdir()
    with open(audit / ".run.lock", "a+") as held:  # another run uses this audit folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another defacer batch is using the audit folder"):
            run_batch(data_dir / "dicom" / "fake_phi_ct", tmp_path / "out", scrub_only=True, audit_dir=audit,
                      key_file=key, workers=1)
    assert not (tmp_path / "keys").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", ["deleted", "replaced"])
def test_an_input_deleted_or_replaced_while_it_is_defaced(tmp_path, data_dir, change):
    """The input's checksum was taken after the work: an input deleted meanwhile (a cleanup job)
    was an internal error (FileNotFoundError, exit 1) with the output already published and no
    sidecar; one replaced by another head was recorded by the other head's checksum."""
    import hashlib
    import json
    import shutil

    from DeFacerLib.deface.workflow import deface_file

    heads = sorted((data_dir / "heads" / "ixi" / "t1").glob("IXI*_T1.nii.gz"))[:2]
    source, out = tmp_path / "head.nii.gz", tmp_path / "defaced.nii.gz"
    shutil.copy(heads[0], source)

    def meanwhile(message: str, fraction: float) -> None:
        if message == "writing" and source.exists():
            source.unlink()
            if change == "replaced":
                shutil.copy(heads[1], source)

    outcome = deface_file(source, out, progress=meanwhile)
    record = json.loads(Path(outcome["sidecar"]).read_text())
    assert record["input"]["sha256"] == hashlib.sha256(heads[0].read_bytes()).hexdigest()
    assert record["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_a_file_deleted_while_its_tree_is_scrubbed_is_named_as_gone(tmp_path, data_dir):
    """It was "skipped: not a regular file (a pipe, a device or a broken link)" and the run, with
    nothing else wrong, said every file was accounted for (exit 0)."""
    import shutil

    source = tmp_path / "in"
    shutil.copytree(data_dir / "dicom" / "deid_samples", source)
    gone = source / "image7.dcm"

    def meanwhile(done: int, total: int) -> None:  # a cleanup job removes a file the run listed
        gone.unlink(missing_ok=True)

    summary = scrub_tree(source, tmp_path / "out", ProfileOptions(), b"k" * 32, progress=meanwhile)
    assert summary["failed"] == 1 and summary["failed_files"][0]["file"] == "image7.dcm"
    assert "disappeared" in summary["failed_files"][0]["reason"]


def test_a_batch_leaves_an_existing_key_file_untouched(tmp_path, data_dir):
    """The batch holds the key while it runs; its Dask workers read it, saw it held, and marked
    it as used by another run: every batch moved the modification time of the user's key."""
    pytest.importorskip("distributed")
    import os

    from DeFacerLib.batch import run_batch

    key_file = tmp_path / "site.key"
    key_file.write_text(bytes(range(32)).hex() + "\n")
    key_file.chmod(0o600)
    os.utime(key_file, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    summary = run_batch(data_dir / "dicom" / "fake_phi_ct", tmp_path / "out", scrub_only=True, key_file=key_file,
                        workers=1)
    assert summary["complete"] and summary["written"] == 2
    assert key_file.stat().st_mtime_ns == 1_000_000_000_000_000_000
