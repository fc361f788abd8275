#!/usr/bin/env python3
"""Benchmark what a DICOMDIR adds to scrubbing an archive: the same files, with and without it.

A DICOMDIR's records copy the headers of the files it indexes (names, dates, a report's text),
so it is cleaned and leak-checked with their PHI (DeFacerLib.dicom.tree.indexed_phi). In a tree
scrub that PHI comes from the files' own scrub; a DICOMDIR scrubbed on its own (a batch item, a
single file) reads and scrubs every indexed header again. This script builds an archive of
copies of a real series (each copy its own patient, study and series, new UIDs) with a DICOMDIR
written by pydicom's FileSet, then times, alternating, in fresh processes:

- the archive with its DICOMDIR, ``scrub_tree`` (``--workers``, default 2);
- the same files without it;
- the DICOMDIR alone, reading its indexed files (``scrub_file``, as a batch item does);
- with ``--before CHECKOUT``: the archive with its DICOMDIR scrubbed by that checkout's code (an
  earlier commit, e.g. from ``git worktree add``), for a before/after in the same run.

pydicom's FileSet takes ~9 minutes to write a 10,000-file archive on 2 cores, so the archive is
kept (``--archive``, default build/benchmarks/dicomdir_archive_FILES) and reused by later runs.

    python scripts/benchmark_dicomdir.py [--files 10000] [--repeat 3] [--archive DIR] [--before CHECKOUT]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_scrub import DEFAULT_DATA, dicom_files, machine_state, timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TREE = r"""
import sys, time
from DeFacerLib.dicom import ProfileOptions, scrub_tree
source, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
summary = scrub_tree(source, out, ProfileOptions(), bytes(range(32)), workers=workers, audit_dir=out + ".audit")
print(time.perf_counter() - start, 0)
assert summary["written"] == summary["files"], summary["failed_files"]
"""
DICOMDIR_ALONE = r"""
import sys, time
from DeFacerLib.dicom import ProfileOptions
from DeFacerLib.dicom.tree import scrub_file
dicomdir, out = sys.argv[1], sys.argv[2]
start = time.perf_counter()
record = scrub_file((dicomdir, "DICOMDIR", out, ProfileOptions(), bytes(range(32))))
print(time.perf_counter() - start, 0)
assert record["status"] == "written", record["reason"]
"""
WITH, WITHOUT, ALONE = "archive with its DICOMDIR", "same files, no DICOMDIR", "the DICOMDIR alone (reads its files)"
BEFORE = "archive with its DICOMDIR, code of {}"


def build_archive(series: list[Path], count: int, root: Path) -> None:
    """``count`` files, copies of ``series`` (one patient, study and series per copy), written
    by pydicom's FileSet with their DICOMDIR under ``root``."""
    from pydicom.fileset import FileSet
    from pydicom.uid import generate_uid

    media = FileSet()
    for index in range(count):
        copy, slice_ = divmod(index, len(series))
        if slice_ == 0:
            patient, study, frame_of_reference, series_uid = f"BENCH{copy:05d}", generate_uid(), generate_uid(), generate_uid()
        ds = pydicom.dcmread(series[slice_])
        ds.PatientID, ds.PatientName = patient, f"BENCH^PATIENT{copy:05d}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame_of_reference
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        media.add(ds)
    media.write(root)


def timed_run(code: str, source: Path, work: Path, workers: int, checkout: str | None = None) -> float:
    """Wall seconds of ``code`` on ``source`` in a fresh process (``checkout``: its DeFacerLib)."""
    out = work / "out"
    # PYTHONSAFEPATH: `python -c` would put the working folder's DeFacerLib before the checkout's
    environment = dict(os.environ, PYTHONPATH=checkout, PYTHONSAFEPATH="1") if checkout else None
    try:
        return timed([sys.executable, "-c", code, str(source), str(out), str(workers)], env=environment)[0]
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(str(out) + ".audit", ignore_errors=True)
        if out.is_file():
            out.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_DATA), help="folder of one DICOM series (flat)")
    parser.add_argument("--files", type=int, default=10000, help="files in the archive")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over every method (median kept)")
    parser.add_argument("--workers", type=int, default=2, help="scrub_tree's worker processes")
    parser.add_argument("--archive", help="the archive (DICOMDIR at its root); built when missing")
    parser.add_argument("--before", help="a checkout of earlier DeFacer code to time on the same archive")
    parser.add_argument("--output", default=str(REPO / "build" / "benchmarks" / "dicomdir.md"),
                        help="Markdown section to paste into docs/benchmarks.md")
    args = parser.parse_args(argv)
    series = dicom_files(Path(args.folder))
    archive = Path(args.archive or REPO / "build" / "benchmarks" / f"dicomdir_archive_{args.files}")
    if not (archive / "DICOMDIR").is_file():
        if args.archive:
            parser.error(f"{archive} has no DICOMDIR at its root")
        shutil.rmtree(archive, ignore_errors=True)  # a build cut short
        print(f"writing {args.files} files and their DICOMDIR to {archive} (pydicom FileSet: minutes)", flush=True)
        build_archive(series, args.files, archive)
    files = sum(1 for path in archive.rglob("*") if path.is_file()) - 1
    records = len(pydicom.dcmread(archive / "DICOMDIR").DirectoryRecordSequence)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        bare = work / "bare"
        shutil.copytree(archive, bare, ignore=lambda folder, names: ["DICOMDIR"] if Path(folder) == archive else [])
        workers = args.workers
        methods = {WITH: lambda: timed_run(TREE, archive, work, workers),
                   WITHOUT: lambda: timed_run(TREE, bare, work, workers),
                   ALONE: lambda: timed_run(DICOMDIR_ALONE, archive / "DICOMDIR", work, 1)}
        if args.before:
            methods[BEFORE.format(Path(args.before).name)] = lambda: timed_run(TREE, archive, work, workers, args.before)
        state_before = machine_state()
        runs: dict[str, list[float]] = {name: [] for name in methods}
        for round_number in range(args.repeat):  # alternating: the machine's load hits every method alike
            for name, run in methods.items():
                runs[name].append(run())
                print(f"round {round_number + 1}: {name}: {runs[name][-1]:.2f} s", flush=True)
        state_after = machine_state()
    median = {name: statistics.median(values) for name, values in runs.items()}
    lines = [
        f"- {files} files and a DICOMDIR of {records} records (`{archive.name}`); `--repeat {args.repeat}`, "
        f"`--workers {args.workers}`, seconds from after the imports to the audit written",
        f"- Machine state (`date -u` / `uptime`): {state_before} -> {state_after}",
        "",
        "| run | median s | runs s | vs no DICOMDIR |",
        "|---|---:|---:|---:|",
    ]
    for name, values in runs.items():
        lines.append(f"| {name} | {median[name]:.2f} | {', '.join(f'{v:.2f}' for v in values)} | "
                     f"{median[name] / median[WITHOUT]:.2f}x |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
