"""`defacer batch --scheduler` against addresses where no Dask scheduler answers (helper audit
"cluster"): a web server (the dashboard's port given for the scheduler's), a server that answers
other bytes, a stop while connecting, an empty address. Real DICOM input. Each test failed before
its fix."""
from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from DeFacerLib.batch import run_batch  # noqa: E402
from DeFacerLib.errors import UsageError  # noqa: E402

HANG_GUARD_S = 300  # a run that never ends fails the test instead of hanging the suite (not a speed limit)


@pytest.fixture()
def dicom_input(data_dir, tmp_path) -> Path:
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm", source / "ctbrain1.dcm")
    return source


class _Server:
    """A TCP server on 127.0.0.1 that accepts connections and sends ``greeting`` (b"": nothing)."""

    def __init__(self, greeting: bytes):
        self.greeting = greeting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = threading.Event()
        self.connections = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)
            if self.greeting:
                connection.sendall(self.greeting)
            self.accepted.set()

    def close(self):
        self.listener.close()
        for connection in self.connections:
            connection.close()


def _batch(source: Path, tmp_path: Path, scheduler: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "DeFacerLib", "batch", str(source), str(tmp_path / "out"),
                             "--scrub-only", "--scheduler", scheduler, "--key-file", str(tmp_path / "keys" / "k")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(run: subprocess.Popen) -> str:
    """The run's standard error once it ends; killed if it outlives the guard."""
    try:
        return run.communicate(timeout=HANG_GUARD_S)[1]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def _left(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "in")


def test_a_web_server_given_as_the_scheduler_is_a_one_line_error(dicom_input, tmp_path, monkeypatch, capsys):
    """`--scheduler tcp://head:8787` (the dashboard's port; any server that waits for a request)
    hung: Dask's client waits for the handshake without a limit (10 minutes seen, then Ctrl-C).
    In process, with the connection limit at 1 s (20 s by default: the answer waits 25 s)."""
    from DeFacerLib.batch import runner
    from DeFacerLib.cli.main import main

    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT_S", 1)
    server = _Server(b"")
    try:
        code = main(["batch", str(dicom_input), str(tmp_path / "out"), "--scrub-only", "--scheduler", server.address,
                     "--key-file", str(tmp_path / "keys" / "k")])
    finally:
        server.close()
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert "no Dask scheduler answered" in stderr and len(stderr.strip().splitlines()) == 1
    assert _left(tmp_path) == []


def test_a_server_answering_other_bytes_is_a_usage_error(dicom_input, tmp_path):
    """A server that answers first (an HTTP error page, an SSH banner) made Dask read its bytes
    as a frame length: an internal error (MemoryError: 3.07 EiB), exit 1, and the output and
    audit folders and the new key stayed."""
    server = _Server(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    try:
        run = _batch(dicom_input, tmp_path, server.address)
        stderr = _finish(run)
    finally:
        server.close()
    assert run.returncode == 2, stderr
    assert "is not a Dask scheduler: what answered there speaks another protocol" in stderr, stderr
    assert "MemoryError" not in stderr and len(stderr.strip().splitlines()) == 1
    assert _left(tmp_path) == []


def test_sigterm_while_connecting_leaves_no_output_audit_or_key(dicom_input, tmp_path):
    """Stopped before any item ran (SIGTERM while the scheduler did not answer), the run left the
    output folder, the audit folder and the key it had made, as a run refused there does not."""
    server = _Server(b"")
    try:
        run = _batch(dicom_input, tmp_path, server.address)
        assert server.accepted.wait(HANG_GUARD_S)  # the run is connecting: its folders and key are made
        run.send_signal(signal.SIGTERM)
        stderr = _finish(run)
    finally:
        server.close()
    assert run.returncode == 143, stderr
    assert "before any item ran" in stderr
    assert _left(tmp_path) == []


def test_an_empty_scheduler_address_is_refused(dicom_input, tmp_path):
    """`--scheduler "$DASK_SCHEDULER"` with the variable unset ran the archive on a local cluster
    of the machine it was started on (a login node), without a word."""
    with pytest.raises(UsageError, match="--scheduler is empty"):
        run_batch(dicom_input, tmp_path / "out", key_file=tmp_path / "key", scrub_only=True, scheduler="")
    assert _left(tmp_path) == []


def _executing(dask_worker=None) -> list[str]:
    return [str(task.key) for task in dask_worker.state.tasks.values()
            if str(task.key).startswith("defacer-item-") and task.state in ("executing", "cancelled")]


def _recorded(out: Path) -> int:
    """Items in the run's manifest so far (0 before it exists)."""
    import sqlite3

    path = out / ".defacer" / "manifest.sqlite"
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    except sqlite3.Error:  # being created
        return 0


def test_a_run_stopped_on_a_shared_cluster_leaves_no_unrecorded_output(data_dir, tmp_path):
    """SIGTERM of a run on an existing cluster (--scheduler): the workers cannot be stopped (they
    are not the run's), and the head a worker was defacing appeared in the published tree after
    the run had ended, in neither the manifest nor the reports (exit 143, "0 of 2 items")."""
    from distributed import Client, LocalCluster

    source = tmp_path / "in"
    (source / "sub-01" / "anat").mkdir(parents=True)
    (source / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}\n')
    shutil.copy(next(iter(sorted((data_dir / "heads" / "ixi" / "t1").glob("*_T1.nii.gz")))),
                source / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    (source / "sub-01" / "anat" / "sub-01_T1w.json").write_text('{"RepetitionTime": 2.0}\n')  # its folder stays
    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        run = subprocess.Popen([sys.executable, "-m", "DeFacerLib", "batch", str(source), str(out), "--scheduler",
                                cluster.scheduler_address, "--key-file", str(tmp_path / "key")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            while not (_recorded(out) == 2 and any("T1w.nii.gz" in key for keys in client.run(_executing).values()
                                                   for key in keys)):  # the sidecar recorded: its folder stays
                assert run.poll() is None, run.communicate()[1]  # still running: the head is being defaced
                threading.Event().wait(0.2)
            run.send_signal(signal.SIGTERM)
            stderr = _finish(run)
        finally:
            if run.poll() is None:
                run.kill()
        while any(client.run(_executing).values()):  # the worker's task ran to its end (before the fix: after the run)
            threading.Event().wait(0.5)
        assert run.returncode == 143, stderr
    summary = json.loads((out / ".defacer" / "summary.json").read_text())
    assert summary["items_done"] < summary["items"]  # stopped while the head was being defaced
    published = out / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    assert not published.exists(), "an output the manifest does not hold"
    assert not list((out / ".defacer").rglob("*.defacer.json"))
