"""Run a whole archive through Dask: discover, skip what the manifest says is done, map the
rest one task per item, record each outcome as it arrives, report.

Execution is Dask's: a ``LocalCluster`` of worker processes (one thread each) by default,
or an existing cluster (``scheduler="tcp://host:8786"``, or a ``Client`` passed in). A
worker that dies mid-task is replaced and its task re-run elsewhere by the scheduler
(``distributed.scheduler.allowed-failures``); outputs are written atomically, so a re-run
task simply writes them again. Ctrl-C (exit 130) and SIGTERM (a SLURM time limit, exit 143)
stop cleanly: every finished item is already committed to the manifest, and the same command
resumes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import shutil
import time
from pathlib import Path

from DeFacerLib import __version__
from DeFacerLib.batch import discover as disc
from DeFacerLib.batch.manifest import DONE, FAILED, SKIPPED, Manifest
from DeFacerLib.batch.tasks import BatchConfig, BatchWorkerPlugin, key_check_of, label_map_rel, process_item
from DeFacerLib.deface.pipeline import DefaceParameters
from DeFacerLib.dicom.profile import ProfileOptions
from DeFacerLib.errors import DeFacerError, InputError, OutputError, UsageError, require_extra
from DeFacerLib.interrupts import CTRL_C_EXIT, exit_code_of, sigterm_as_interrupt, stopped_by
from DeFacerLib.io.atomic import check_name_fits

MANIFEST_NAME = "manifest.sqlite"
HEADER_CHUNK_FILES = 512
SCHEDULER_TIMEOUT_S = 20  # connecting to (and hearing from) a --scheduler; Dask retries a refused connection


class BatchInterrupted(DeFacerError):
    """Ctrl-C (exit 130) or SIGTERM (exit 143): the run stopped; what finished is in the manifest
    and a rerun resumes."""

    exit_code = CTRL_C_EXIT

    def __init__(self, message: str, exit_code: int = CTRL_C_EXIT):
        super().__init__(message)
        self.exit_code = exit_code


class BatchProgress:
    """What the runner tells its caller; the CLI draws a rich bar from it. All no-ops here."""

    def cluster(self, client) -> None: ...
    def discovered(self, plan, todo: int, already: int, removed: int = 0) -> None: ...
    def item_done(self, outcome: dict) -> None: ...
    def stopping(self, running: int) -> None: ...
    def close(self) -> None: ...


def run_batch(
    input_path,
    output_path,
    *,
    parameters: DefaceParameters = DefaceParameters(),
    dicom_options: ProfileOptions = ProfileOptions(),
    key_file=None,
    labels_dir=None,
    qa: bool = False,
    scrub_only: bool = False,
    layout: str = "auto",
    workers: int = 2,
    scheduler: str | None = None,
    client=None,
    audit_dir=None,
    max_items: int | None = None,
    overwrite: bool = False,
    progress: BatchProgress | None = None,
) -> dict:
    """De-identify every file under ``input_path`` into a mirrored tree at ``output_path``.

    Returns the summary (also written to OUTPUT/.defacer/summary.json with report.html and
    report.csv). ``max_items`` stops after that many items (a partial, resumable run).
    """
    from DeFacerLib.dicom import load_or_create_key
    from DeFacerLib.dicom.uids import forget_new_key, key_readable_by_others, refuse_key_inside
    from DeFacerLib.io.atomic import remove_made_folders

    progress = progress or BatchProgress()
    source, target = Path(input_path).resolve(), Path(output_path).resolve()
    _check_paths(source, target, overwrite)
    if scheduler is not None and not scheduler.strip():  # --scheduler "$UNSET": a local cluster on the head node
        raise UsageError("--scheduler is empty; give the scheduler's address (tcp://HOST:8786) or leave it out "
                         "for a local cluster")
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if max_items is not None and max_items < 1:  # a negative N sliced the work list: all but the last N items
        raise UsageError(f"--max-items must be at least 1 (got {max_items})")
    if layout not in ("auto",) + disc.LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; choose auto, {', '.join(disc.LAYOUTS)}")
    if labels_dir is not None and not Path(labels_dir).is_dir():
        raise InputError(f"label folder {labels_dir} does not exist; --features-from DIR must mirror the input")
    audit = Path(audit_dir).resolve() if audit_dir else target.with_name(target.name + ".audit")
    check_name_fits(audit, "audit folder")
    if audit == target or target in audit.parents or source == audit or source in audit.parents:
        raise OutputError(f"audit folder {audit} must be outside the input and the output (it holds original identifiers)")
    if qa and not scrub_only:
        require_extra("vtk", "qa", "--qa")
    if dicom_options.clean_recognizable_visual_features:
        require_extra("cv2", "photo", "--clean-recognizable-visual-features")
    if not scrub_only and labels_dir is None:
        _check_face_model()
    require_extra("distributed", "batch", "defacer batch")
    files = disc.list_files(source, (target, audit))  # before anything is made: an empty input leaves no output behind
    if not files:
        raise InputError(f"{source} holds no files")
    undecodable = [rel for rel in files if not _is_utf8(rel)]
    if undecodable:  # the manifest, the reports and Dask's task names are UTF-8 text
        raise InputError(f"{len(undecodable)} file or folder name(s) in {source} are not UTF-8 (first: "
                         f"{os.fsencode(undecodable[0])!r}); rename them (e.g. convmv -f latin1 -t utf8) and rerun")
    refuse_key_inside(key_file, source, target)
    key, key_path, key_created = load_or_create_key(key_file)
    key_path = Path(key_path).resolve()  # workers run in other folders (a cluster): never a relative path
    config = BatchConfig(
        input_root=str(source), output_root=str(target), audit_root=str(audit), key_file=str(key_path),
        key_check=key_check_of(key),
        version=__version__,
        parameters=parameters, dicom_options=dicom_options,
        labels_dir=str(Path(labels_dir).resolve()) if labels_dir else None, qa=qa, scrub_only=scrub_only,
    )
    token = config.token(key)
    made = [path for path in (target, audit) if not path.exists()]
    try:
        _make_folder(target)
        _make_folder(audit)
    except OutputError:  # an --audit-dir that cannot be made left the new key and an empty output folder
        remove_made_folders(made)
        forget_new_key(key_path, key_created)
        raise
    os.chmod(audit, 0o700)
    try:
        lock = _lock(config.meta_root, audit, made)  # one run at a time per output folder and per audit folder
    except OutputError:  # refused: like a folder that cannot be made, it leaves no new key or empty audit folder
        remove_made_folders(made)
        forget_new_key(key_path, key_created)
        raise
    _sweep_partials(target)
    started = time.perf_counter()
    with lock, sigterm_as_interrupt():
        try:
            plan, stop, left = _run(config, client, scheduler, workers, source, layout, key, files, target, token,
                                    max_items, progress)
            if plan is None:  # stopped while the cluster started or the input was listed: no item ran
                raise BatchInterrupted(f"{stopped_by(stop)}: before any item ran; rerun the same command to start",
                                       exit_code=exit_code_of(stop))
        except DeFacerError:  # a scheduler that cannot be reached, a run stopped before any item: as a run
            _remove_if_untouched(made, config.meta_root)  # refused there, no empty output or audit
            forget_new_key(key_path, key_created)  # nothing was keyed with it (dicom.uids.forget_new_key)
            raise
        with Manifest(config.meta_root / MANIFEST_NAME) as manifest:
            summary = _summary(manifest, plan, source, target, audit, key_path, time.perf_counter() - started, left)
            summary["key_created"] = key_created
            summary["key_readable_by_others"] = key_readable_by_others(key_path)
            outcomes = manifest.outcomes()
            states = manifest.state_of()
        unrecorded = [item for item in plan.items if item.id not in states]
        if stop is not None:  # finished by a worker as the run stopped, never recorded: not published
            _remove_unrecorded_outputs(target, config.meta_root, unrecorded)
        _remove_empty_folders(target, [rel for item in plan.items
                                       if states.get(item.id, ("",))[0] == FAILED or item.id not in states
                                       for rel in item.files])
        from DeFacerLib.batch.report import merge_audit, write_reports

        summary["audit"] = merge_audit(audit)
        summary["reports"] = write_reports(config.meta_root, outcomes, _shareable(summary, source, target, audit, key_path))
    if stop is not None:
        raise BatchInterrupted(f"{stopped_by(stop)}: {summary['items_finished']} of {summary['items']} items are "
                               f"recorded in {summary['manifest']}; rerun the same command to resume",
                               exit_code=exit_code_of(stop))
    return summary


def _run(config, client, scheduler, workers, source, layout, key, files, target, token, max_items, progress):
    """(the plan or None, the KeyboardInterrupt/Terminated that stopped the run or None, the ids of
    the items that needed work and were not done in this run: --max-items, a stop)."""
    plan, stop, left = None, None, set()
    try:
        with Manifest(config.meta_root / MANIFEST_NAME) as manifest, \
                _dask_client(client, scheduler, workers) as dask_client:
            progress.cluster(dask_client)
            _register_plugin(dask_client, BatchWorkerPlugin(config))
            plan, series_info = discover_plan(dask_client, source, layout, key, files)
            # the earlier run's reports are stale from here on (if this run is killed outright);
            # not before: a run that cannot start (an unreachable scheduler) changes nothing
            for name in ("summary.json", "report.html", "report.csv"):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):  # a folder there: write_reports says so
                    (config.meta_root / name).unlink()
            todo, fingerprints, gone = _work_left(manifest, plan, target, token, config.labels_dir)
            # the manifest is shared: the input's folder name only, never the path above it
            manifest.set_meta("run", {"input": source.name, "layout": plan.layout, "config": token,
                                      "files": plan.file_count, "items": len(plan.items)})
            already = len(plan.items) - len(todo)
            left = {item.id for item in todo}  # an item done under other settings or inputs is not finished
            if max_items is not None:
                todo = todo[:max_items]
            progress.discovered(plan, len(todo), already, removed=len(gone))
            try:
                _run_items(dask_client, manifest, todo, config, series_info, fingerprints, token, progress, left,
                           shared_cluster=client is not None or bool(scheduler))
            except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM (interrupts.Terminated)
                stop = error
            finally:
                progress.close()
            if stop is None:
                _release_worker_keys(dask_client)
    except KeyboardInterrupt as error:  # while the cluster started, the input was listed or the cluster closed
        stop = error
    finally:  # temporaries of tasks cut short (killed worker, Ctrl-C, full disk) never stay behind
        _sweep_partials(target)
        shutil.rmtree(Path(config.audit_root) / ".work", ignore_errors=True)
    return plan, stop, left


def _is_own_child(pid: int) -> bool:
    """``pid`` is still a process this one started (a worker of its own LocalCluster), not a
    number the system has since given to another process (Linux /proc; elsewhere never)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return any(line.split()[1:2] == [str(os.getpid())] for line in status.splitlines() if line.startswith("PPid:"))


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.walk gives undecodable bytes as lone surrogates
        return False
    return True


def _shareable(summary: dict, source: Path, target: Path, audit: Path, key_path) -> dict:
    """The summary as summary.json and report.html hold it: they are shared with the data, so
    folder names and paths relative to the output or the audit folder, never the absolute paths
    (the folders above may name a patient, a site or a user); the console shows the full ones."""
    shared = dict(summary, input=source.name, output=target.name, manifest=f"{disc.MANIFEST_FOLDER}/{MANIFEST_NAME}",
                  audit_folder=audit.name, key_file=Path(key_path).name)
    shared["audit"] = {name: f"{audit.name}/{Path(path).name}" for name, path in summary.get("audit", {}).items()}
    shared.pop("key_readable_by_others", None)  # the console's warning: told to recipients, it says where a key lies open
    return shared


def discover_plan(client, source: Path, layout: str, key: bytes, files: list[str] | None = None):
    """The plan (every input file in one item) and the header facts of each DICOM series
    (``files``: disc.list_files(source) when the caller has it)."""
    files = disc.list_files(source) if files is None else files
    if not files:
        raise InputError(f"{source} holds no files")
    chosen = disc.detect_layout(source, files) if layout == "auto" else layout
    items, candidates = disc.classify(source, files, chosen)
    chunks = [candidates[i:i + HEADER_CHUNK_FILES] for i in range(0, len(candidates), HEADER_CHUNK_FILES)]
    scanned = []
    if chunks:
        futures = client.map(disc.scan_dicom_headers, [str(source)] * len(chunks), chunks, pure=False)
        for result in client.gather(futures):
            scanned += result
    dicom_items, series_info = disc.group_dicom(scanned, key)
    plan = disc.Plan(chosen, source, sorted(items + dicom_items, key=lambda item: item.files[0]))
    if plan.file_count != len(files):  # every input file in exactly one item: nothing can go missing
        raise RuntimeError(f"batch plan covers {plan.file_count} of {len(files)} files")
    if all(item.kind == disc.SKIP for item in plan.items):  # a run of nothing but skips said "done", exit 0
        first = plan.items[0]
        raise InputError(f"{source} holds nothing to de-identify as {chosen}: all {len(files)} file(s) skipped "
                         f"({first.files[0]}: {first.reason}); nothing was written")
    return plan, series_info


def _fingerprint(plan, item, labels_dir) -> str:
    """The item's inputs' fingerprint and, with --features-from, its label map's: a corrected
    label map is an input too (a nose added to the map must be removed on the rerun)."""
    found = disc.fingerprint(plan.root, item.files)
    if labels_dir is None:
        return found
    return found + disc.fingerprint(Path(labels_dir), (label_map_rel(item),))[:32]


def _work_left(manifest, plan, target: Path, token: str, labels_dir=None):
    """(items not done yet, failed, changed (inputs or settings), whose outputs went missing, or
    whose kind changed since they were recorded; their fingerprints; the outputs removed because
    their input is gone)."""
    fingerprints = {item.id: _fingerprint(plan, item, labels_dir) for item in plan.items}
    gone = _outputs_of_gone_inputs(manifest, plan)
    provenance = target / disc.MANIFEST_FOLDER / "provenance"
    for root, rels in ((target, gone), (provenance, _record_rels(provenance, gone))):
        _remove_stale_outputs(root, rels)
        _remove_empty_folders(root, rels)
    manifest.forget_missing(set(fingerprints))
    known = manifest.state_of()
    recorded = {o["id"]: o for o in manifest.outcomes()} if known else {}
    todo = []
    for item in plan.items:
        before = recorded.get(item.id, {})
        if before and before.get("kind") != item.kind:
            _remove_stale_outputs(target, before.get("outputs", []))
            todo.append(item)
        elif manifest.needs_work(known, item.id, fingerprints[item.id], token) \
                or not _outputs_present(target, before.get("outputs", [])):
            todo.append(item)
    return todo, fingerprints, gone


def _outputs_of_gone_inputs(manifest, plan) -> list[str]:
    """Recorded outputs whose input is no longer there (a withdrawn subject, a file gone from a
    series): the output tree mirrors the input, so they go (outputs keep their input's path)."""
    current = {rel for item in plan.items for rel in disc.with_detached_data_outputs(item.files)}
    # a broken link to a folder (storage not mounted, content not fetched) is one MISSING item:
    # what lies under it is out of reach now, not withdrawn, and its outputs stay
    unreachable = tuple(item.files[0] + "/" for item in plan.items if item.kind == disc.MISSING)
    return [rel for outcome in manifest.outcomes() for rel in outcome.get("outputs", [])
            if rel not in current and not rel.startswith(unreachable)]


def _remove_stale_outputs(target: Path, rels) -> None:
    """Outputs of an item whose kind changed (a rule got stricter: a quantitative map or a
    derivatives head once copied with its face, a .git object once copied): removed before the
    item is redone, so that a rerun into an older output publishes nothing the new rule refuses."""
    for rel in rels:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (target / rel).unlink()


def _run_items(client, manifest, todo, config, series_info, fingerprints, token, progress, left: set,
               shared_cluster: bool = False) -> None:
    """Run ``todo``, recording each outcome as it comes; ``left`` loses each recorded item's id.
    Cut short on a cluster this run did not start (``shared_cluster``), it waits for the items its
    workers are still running: they cannot be stopped, and ended after the cleanup they published
    outputs that neither the manifest nor the reports held (the LocalCluster's workers are killed)."""
    from distributed import as_completed

    def record(outcome: dict) -> None:
        manifest.record(outcome, fingerprint=fingerprints[outcome["id"]], config=token)
        left.discard(outcome["id"])
        progress.item_done(outcome)

    pending = []
    for item in todo:
        if item.kind in (disc.SKIP, disc.MISSING):
            missing = item.kind == disc.MISSING
            record({"id": item.id, "kind": item.kind, "name": item.name, "files": len(item.files),
                    "state": FAILED if missing else SKIPPED, "reason": item.reason, "action": "none",
                    "written": 0, "skipped": 0 if missing else len(item.files),
                    "failed": len(item.files) if missing else 0, "outputs": []})
        else:
            pending.append(item)
    futures = {client.submit(process_item, item, config, series_info.get(item.id), pure=False,
                             key=f"defacer-item-{item.id}-{token[:8]}-{time.monotonic_ns()}"): item
               for item in pending}
    try:
        for future in as_completed(list(futures)):
            try:
                outcome = future.result()
            except Exception as error:  # e.g. KilledWorker: the item took down a worker allowed-failures times
                if _scheduler_lost(client, error):  # not the item's fault: it stays pending for the rerun
                    recorded = sum(1 for item in todo if item.id not in left)
                    raise DeFacerError(f"lost the connection to the Dask scheduler {client.scheduler.address} "
                                       f"({recorded} of {len(todo)} items recorded); "
                                       "rerun the same command to resume") from None
                outcome = _crashed(futures[future], error)
            record(outcome)
            if outcome.get("disk_full"):
                raise OutputError(f"the output disk is full ({outcome['name']}: {outcome['reason']}); "
                                  "free space and rerun the same command to resume (finished items are kept)")
    finally:
        cut = [future.key for future in futures if not future.done()]
        for future in futures:
            if not future.done():
                future.cancel()
        if cut and shared_cluster:
            _wait_for_cut_items(client, cut, progress)


def _wait_for_cut_items(client, keys, progress) -> None:
    """Until no worker runs any of ``keys`` (a cancelled task runs to its end); a second Ctrl-C
    ends the wait (what those items write then is the rerun's to redo)."""
    told = False
    while True:
        try:
            running = [key for found in client.run(_running_of, [str(key) for key in keys]).values() for key in found]
        except Exception:  # the scheduler or a worker gone: nothing of them runs for this run any more
            return
        if not running:
            return
        if not told:
            progress.stopping(len(running))
            told = True
        time.sleep(1)


def _running_of(keys, dask_worker=None) -> list[str]:
    """Which of ``keys`` this worker is running, cancelled or not (``client.run`` on each worker)."""
    wanted = set(keys)
    return [str(task.key) for task in dask_worker.state.tasks.values()
            if str(task.key) in wanted and task.state in ("executing", "cancelled", "long-running", "resumed")]


def _scheduler_lost(client, error: Exception) -> bool:
    """The scheduler went away (killed, its host down): no item's fault, no item's failure."""
    return "scheduler-connection-lost" in str(error) or getattr(client, "status", "running") not in ("running", "connecting")


def _crashed(item, error: Exception) -> dict:
    reason = " ".join(str(error).split())[:300] or type(error).__name__
    return {"id": item.id, "kind": item.kind, "name": item.name, "files": len(item.files), "state": FAILED,
            "reason": f"the worker process died while processing this item ({type(error).__name__}: {reason}); "
                      "check its size against the workers' memory", "action": "none", "written": 0, "skipped": 0,
            "failed": len(item.files), "outputs": []}


@contextlib.contextmanager
def _dask_client(client, scheduler: str | None, workers: int):
    """The caller's client, a client of an existing scheduler, or a LocalCluster of processes."""
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    if scheduler:
        # a lost scheduler is the run's one-line error, not a traceback logged by distributed.client
        loggers = [logging.getLogger(name) for name in ("distributed", "distributed.client")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            _check_scheduler(scheduler, SCHEDULER_TIMEOUT_S)
            try:
                own = Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
            except (OSError, ValueError, TypeError) as error:  # ValueError: "http://..." (unknown scheme)
                raise UsageError(f"cannot reach the Dask scheduler {scheduler}: {error}") from None
            try:
                yield own
            finally:
                with contextlib.suppress(Exception):
                    own.close()
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
        return
    dashboard = ":0" if _has_bokeh() else None
    # Dask's own log lines stay off the terminal, errors too: an item's failure is the manifest's
    # and the report's (with its reason), a dead worker's task is re-run, and a run stopped by
    # Ctrl-C or SIGTERM made the scheduler log "Couldn't gather keys" around the one-line message
    # (LocalCluster restores the log level as it closes, before the last connections do: the
    # "distributed" logger itself stays quiet until the cluster is gone)
    dask_logger = logging.getLogger("distributed")
    level = dask_logger.level
    dask_logger.setLevel(logging.CRITICAL)
    try:
        with _workers_ignore_ctrl_c():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=dashboard,
                                   silence_logs=logging.CRITICAL, env=_worker_threads(workers))
        own = Client(cluster)
        try:
            yield own
        finally:
            pids = [nanny.pid for nanny in list(cluster.workers.values()) if getattr(nanny, "pid", None)]
            try:
                with contextlib.suppress(Exception):
                    own.close()
                with contextlib.suppress(Exception):
                    cluster.close()
            finally:  # also when a second Ctrl-C cuts the close short: Dask's own exit handler then closed
                # the cluster again as Python exited, 10 s with Ctrl-C ignored (cli.main keeps the exit code)
                cluster.shutdown_on_close = False
                for pid in pids:  # a worker busy with a task outlives close(): it must not write after the sweep
                    if _is_own_child(pid):
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
    finally:
        dask_logger.setLevel(level)


def _check_scheduler(address: str, seconds: float) -> None:
    """A usage error unless a Dask scheduler answers at ``address`` within ``seconds`` (+5). Client()
    alone waited forever on a server that accepts the connection and never answers as Dask does
    (the dashboard's port 8787 given for 8786, any web server: exit 130 after minutes, at Ctrl-C),
    and a server that answered otherwise was an internal error (MemoryError: its reply read as a
    frame length); a worker's address gave a TypeError about identity(). TLS settings are Dask's
    configured ones, as Client() takes them."""
    import asyncio
    import threading

    async def identity():
        from distributed.comm import connect
        from distributed.security import Security

        comm = await connect(address, timeout=seconds, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded():
        return await asyncio.wait_for(identity(), seconds + 5)  # Dask's own "timed out" first, where it says one

    answer = {}

    def probe():  # its own event loop, also under a caller's (Jupyter); a daemon: Ctrl-C does not wait for it
        try:
            answer["reply"] = asyncio.run(bounded())
        except BaseException as error:
            answer["error"] = error

    thread = threading.Thread(target=probe, name="defacer-scheduler-check", daemon=True)
    thread.start()
    thread.join()
    error = answer.get("error")
    if isinstance(error, asyncio.TimeoutError):  # before OSError, of which it is one: connected, and no answer
        raise UsageError(f"no Dask scheduler answered at {address} within {seconds + 5:g} s (a web server or the "
                         "dashboard's port? the scheduler's is 8786 by default)")
    if isinstance(error, (OSError, ValueError, TypeError)):  # ValueError: "http://..." (unknown scheme)
        raise UsageError(f"cannot reach the Dask scheduler {address}: {error}")
    if error is not None:  # a reply that is no Dask message (MemoryError: read as a frame length)
        raise UsageError(f"{address} is not a Dask scheduler: what answered there speaks another protocol (a web "
                         "server, a proxy?); give the scheduler's address, tcp://HOST:8786 by default")
    reply = answer["reply"]
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind != "Scheduler":
        raise UsageError(f"{address} is {'a Dask ' + kind if kind else 'not a Dask server'}, not a scheduler; "
                         "give the scheduler's address, tcp://HOST:8786 by default")


def _worker_threads(workers: int) -> dict[str, str]:
    """Each local worker's share of the usable CPUs for the face model: every worker ran one
    thread per core of the machine, 8 workers on 64 cores 512 threads (docs/benchmarks.md).
    A value the user set (a container's CPU quota, which the affinity set does not show) is kept."""
    from DeFacerLib.face.segment import THREADS_VARIABLE, onnx_threads, usable_cpus

    if THREADS_VARIABLE in os.environ:
        return {THREADS_VARIABLE: str(onnx_threads())}
    return {THREADS_VARIABLE: str(max(1, usable_cpus() // workers))}


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start worker processes with SIGINT ignored: a Ctrl-C at the terminal reaches the whole
    process group, and each worker would print a KeyboardInterrupt traceback; this process alone
    handles it (stops the cluster, keeps the manifest) and the workers are closed with it.
    A Ctrl-C during the start is lost (docs/batch.md says so): the ignored disposition is what
    the spawned workers inherit (a blocked mask is not: they print tracebacks), and an ignored
    signal is discarded, not held."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_face_model() -> None:
    """Fail before any work, not once per head, when the U-Net is not installed."""
    from DeFacerLib.face.segment import default_model_path

    try:
        path = default_model_path("onnx")
    except DeFacerError:
        path = None
    if path is None or not Path(path).is_file():
        raise UsageError("the face model (Resources/Models/face_unet.onnx) is missing from this installation; "
                         "reinstall DeFacer, pass --features-from DIR, or --scrub-only for DICOM headers only")


def _release_worker_keys(client) -> None:
    """The workers let go of the key file once the run is done: a long-lived cluster's (a
    --scheduler, a client passed in) held it open until they ended, and the next `defacer scrub`
    with that key, seeing it held, marked it as used (its modification time moved)."""
    from DeFacerLib.dicom.uids import release_held_keys

    with contextlib.suppress(Exception):  # a worker lost meanwhile: its hold went with it
        client.run(release_held_keys)


def _register_plugin(client, plugin) -> None:
    register = getattr(client, "register_plugin", None) or client.register_worker_plugin
    register(plugin)


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _check_paths(source: Path, target: Path, overwrite: bool) -> None:
    if not source.is_dir():
        raise InputError(f"{source} is not a folder; give the root of a BIDS dataset, a DICOM tree or a folder of volumes")
    check_name_fits(target, "output")
    if target == source or source in target.parents:
        raise OutputError(f"output {target} is inside the input {source}; choose another folder (inputs are never modified)")
    if target in source.parents:
        raise OutputError(f"output {target} contains the input {source}; choose another folder")
    if target.exists() and not target.is_dir():
        raise OutputError(f"output {target} is a file; give a folder")
    manifest = target / disc.MANIFEST_FOLDER / MANIFEST_NAME
    if target.is_dir() and any(target.iterdir()) and not manifest.exists() and not overwrite:
        raise OutputError(f"output {target} is not empty and holds no batch manifest; choose an empty folder "
                          "or pass --overwrite to write into it")
    linked = _linked_folder(target) if target.is_dir() else None
    if linked is not None:
        raise OutputError(f"output {target} holds a link to a folder ({linked.relative_to(target)} -> "
                          f"{os.readlink(linked)}); batch writes into the output in place and would write and delete "
                          "through it: remove the link or choose an empty folder")


def _linked_folder(root: Path) -> Path | None:
    """The first link to a folder inside the output tree, or None. Items are written and, when
    they fail, removed at their mirrored path: through a linked sub-01/ that reached the input,
    a failed deface deleted the input's head and a sidecar replaced the input's own (exit 3)."""
    for folder, dirs, _ in os.walk(root):
        for name in dirs:
            if os.path.islink(os.path.join(folder, name)):
                return Path(folder) / name
    return None


AUDIT_LOCK_NAME = ".run.lock"


@contextlib.contextmanager
def _held(handles):
    try:
        yield
    finally:
        for handle in handles:
            handle.close()


def _lock(meta_root: Path, audit: Path, made=()):
    """Exclusive locks on OUTPUT/.defacer/run.lock and AUDIT/.run.lock for the run (released when
    the process ends, even by SIGKILL): a second run into the same output would redo the same
    items and sweep the first one's temporaries; one into another output with the same
    --audit-dir removed, as it ended, the first one's staged DICOM series (AUDIT/.work). Refused
    there, an output this run made goes (nothing but the lock is in it while the lock is held)."""
    meta_root.mkdir(parents=True, exist_ok=True)
    handles = []
    try:
        for path, busy in ((meta_root / "run.lock", f"writing into {meta_root.parent}"),
                           (audit / AUDIT_LOCK_NAME, f"using the audit folder {audit}")):
            handles.append(_lock_file(path, busy))
    except BaseException:
        if handles and meta_root.parent in made:  # the output's lock is this run's: no other run is in it
            shutil.rmtree(meta_root.parent, ignore_errors=True)
        for handle in handles:
            handle.close()
        raise
    return _held(handles)


def _lock_file(path: Path, busy: str):
    import fcntl

    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # EWOULDBLOCK: another run holds it
        handle.close()
        raise OutputError(f"another defacer batch is {busy}; wait for it to end (or stop it) and rerun") from None
    except OSError as error:  # a file system without flock (Lustre mounted without -o flock): no lock
        logging.getLogger(__name__).warning("cannot lock %s (%s); do not start a second run into this output",
                                            path, error.strerror or error)
    return handle


def _remove_if_untouched(made, meta_root: Path) -> None:
    """Folders this run made, when no item ran: nothing but an empty manifest and the lock in them."""
    for path in made:
        if path == meta_root.parent:
            with Manifest(meta_root / MANIFEST_NAME) as manifest:
                if manifest.state_of():
                    continue
            extra = [p for p in path.rglob("*") if p.is_file() and p.parent != meta_root]
            if not extra:
                shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                (path / AUDIT_LOCK_NAME).unlink()
                path.rmdir()


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {path}: {error.strerror or error}") from None


def _outputs_present(root: Path, rels) -> bool:
    return all((root / rel).exists() for rel in rels)


def _remove_unrecorded_outputs(target: Path, meta_root: Path, items) -> None:
    """The mirrored outputs (and provenance records) of items the manifest does not hold: a
    worker finished them while the run stopped; the rerun redoes them."""
    for item in items:
        for rel in disc.with_detached_data_outputs(item.files):
            records = Path(meta_root) / "provenance"
            for path in (target / rel, *(records / record for record in _record_rels(records, [rel]))):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    path.unlink()


def _record_rels(provenance: Path, rels) -> list[str]:
    """The provenance records of the outputs ``rels``, relative to ``provenance``
    (provenance.record_path: a long output name's record has a shortened name)."""
    from DeFacerLib.provenance import record_path

    found = []
    for rel in rels:
        with contextlib.suppress(OutputError):  # a record that cannot be named was never written
            found.append(record_path(provenance, rel).relative_to(provenance).as_posix())
    return found


def _remove_empty_folders(root: Path, rels) -> None:
    """Folders made for the outputs of failed items and left empty (a failed subject must not
    leave an empty sub-XX/anat/ in the shared tree); run once the workers are done."""
    for rel in rels:
        folder = (root / rel).parent
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (other items' outputs) or already gone
                break
            folder = folder.parent


def _sweep_partials(root: Path) -> int:
    """Remove temporaries of writes cut short (a killed worker, Ctrl-C): '.NAME.partial...' entries."""
    removed = 0
    for folder, dirs, names in os.walk(root):
        for name in list(dirs):
            if name.startswith(".") and name.endswith(".partial"):
                shutil.rmtree(Path(folder) / name, ignore_errors=True)
                dirs.remove(name)
                removed += 1
        for name in names:
            if name.startswith(".") and ".partial" in name:
                with contextlib.suppress(FileNotFoundError):
                    (Path(folder) / name).unlink()
                removed += 1
    return removed


def _summary(manifest, plan, source, target, audit, key_path, seconds: float, left=frozenset()) -> dict:
    ids = {item.id for item in plan.items} - set(left)  # recorded under other settings or inputs: pending
    recorded = [o for o in manifest.outcomes() if o["id"] in ids]
    files_recorded = sum(o["files"] for o in recorded)
    written = sum(o.get("written", 0) for o in recorded)
    skipped = sum(o.get("skipped", 0) for o in recorded)
    failed = sum(o.get("failed", 0) for o in recorded)
    by_state = {state: sum(1 for o in recorded if o["state"] == state) for state in (DONE, SKIPPED, FAILED)}
    return {
        "input": str(source),
        "output": str(target),
        "layout": plan.layout,
        # sub-XX/anat/sub-XX_*.nii.gz without dataset_description.json: read as a folder of volumes,
        # its sidecars and participants.tsv not written (discover.detect_layout)
        "bids_without_description": plan.layout == disc.VOLUMES and disc.looks_like_bids(
            source, [rel for item in plan.items for rel in item.files]),
        "items": len(plan.items),
        "items_finished": len(recorded),
        "items_done": by_state[DONE],
        "items_skipped": by_state[SKIPPED],
        "items_failed": by_state[FAILED],
        "items_pending": len(plan.items) - len(recorded),
        "files": plan.file_count,
        "written": written,
        "skipped": skipped,
        "failed": failed,
        "pending": plan.file_count - files_recorded,
        # every file of every finished item is written, skipped or failed: nothing lost
        "accounted": written + skipped + failed == files_recorded,
        "complete": files_recorded == plan.file_count,
        "defaced": sum(1 for o in recorded if o.get("action") == "defaced"),
        "protected_voxels_changed": sum(o.get("protected_voxels_changed", 0) for o in recorded),
        "qa_faces_found": sum(1 for o in recorded if o.get("qa_face_found")),
        "paths_holding_phi_count": sum(o.get("paths_holding_phi", 0) for o in recorded),
        # scrubbed DICOM that says its pixels carry text (a name, a birth date): as `defacer scrub` lists them
        "burned_in_annotation": [name for o in recorded for name in o.get("burned_in_annotation", [])],
        "pixels_not_cleaned": [name for o in recorded for name in o.get("pixels_not_cleaned", [])],
        # faces filled in DICOM photos (--clean-recognizable-visual-features) and BIDS photos (*_photo.jpg)
        "faces_filled": sum(o.get("faces_filled", 0) for o in recorded),
        # BIDS photos published without a face found in them: someone should look at them
        "photos_without_faces": [o["name"] for o in recorded
                                 if o.get("kind") == disc.PHOTO and o["state"] == DONE and not o.get("faces_filled")],
        # participants.tsv / phenotype/*.tsv columns named like a name, birth date, address...
        "identifying_columns": [{"name": o["name"], "columns": o["identifying_columns"]}
                                for o in recorded if o.get("identifying_columns")],
        "failed_items": [{"name": o["name"], "reason": o["reason"]} for o in recorded if o["state"] == FAILED][:100],
        "manifest": str(target / disc.MANIFEST_FOLDER / MANIFEST_NAME),
        "audit_folder": str(audit),
        "key_file": str(key_path),
        "seconds": round(seconds, 3),
    }
