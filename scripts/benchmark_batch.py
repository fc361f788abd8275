#!/usr/bin/env python3
"""Load benchmark of ``defacer batch``: a synthetic PACS export scrubbed on a Dask LocalCluster.

The archive (default 114 patients x the 176-file Siemens MPRAGE = 20,064 DICOM files, plus one
non-DICOM .nfo per patient and one corrupt file) is made from the shared series with new
patients and new Study/Series/SOP/Frame-of-Reference UIDs, under /tmp (never in the
repository; reused when it exists). It is then scrubbed (``--scrub-only``: headers, no
defacing) with 1 and with 2 worker processes (one thread each) and the script reports
files/s, the scaling efficiency (files/s at N workers / (N x files/s at 1 worker)), the peak
resident memory of each worker and the accounting check input = written + skipped + failed.

    python scripts/benchmark_batch.py [--patients 114] [--archive /tmp/defacer_batch_archive]
                                      [--workers 1 2] [--output build/benchmarks/batch.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = REPO.parent / "shared" / "data" / "dicom" / "siemens_trio_mprage_1mm"


def make_archive(series: Path, root: Path, patients: int) -> dict:
    """patients x the series with new identities and UIDs; returns the file counts."""
    import pydicom
    from pydicom.uid import generate_uid

    marker = root.with_name(root.name + ".complete")  # beside the archive: every file inside is input
    if marker.is_file() and marker.read_text().strip() == str(patients):
        return _counts(root)
    shutil.rmtree(root, ignore_errors=True)
    sources = sorted(p for p in series.iterdir() if p.suffix == ".dcm")
    datasets = [pydicom.dcmread(p) for p in sources]
    extra = sorted(p for p in series.iterdir() if p.suffix != ".dcm")
    for patient in range(patients):
        folder = root / f"P{patient:04d}" / "STUDY1" / "SERIES1"
        folder.mkdir(parents=True)
        study, series_uid, frame = generate_uid(), generate_uid(), generate_uid()
        for path, ds in zip(sources, datasets):
            ds.PatientName = f"SYNTH^PATIENT{patient:04d}"
            ds.PatientID = f"SYN{patient:06d}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(folder / path.name, enforce_file_format=False)
        for path in extra:  # the .nfo dump beside the slices: not DICOM, skipped
            shutil.copyfile(path, folder / path.name)
    (root / "P0000" / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 16)  # failed
    marker.write_text(str(patients))
    return _counts(root)


def _counts(root: Path) -> dict:
    files = [p for p in root.rglob("*") if p.is_file()]
    return {"files": len(files), "dicom": sum(p.suffix == ".dcm" for p in files),
            "bytes": sum(p.stat().st_size for p in files)}


def _warm_cache(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 20):
                    pass


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(archive: Path, workers: int, key_file: Path, scratch: Path) -> dict:
    from distributed import Client, LocalCluster

    from DeFacerLib.batch import run_batch

    out = scratch / f"out_{workers}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".audit"), ignore_errors=True)
    load = os.getloadavg()
    started = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    cluster_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        summary = run_batch(archive, out, scrub_only=True, key_file=key_file, client=client)
        seconds = time.perf_counter() - started
        rss = sorted(client.run(_peak_rss_mib).values())
    finally:
        client.close()
        cluster.close()
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".audit"), ignore_errors=True)
    return {"workers": workers, "seconds": seconds, "cluster_start_s": cluster_s, "files": summary["files"],
            "written": summary["written"], "skipped": summary["skipped"], "failed": summary["failed"],
            "files_per_s": summary["files"] / seconds, "peak_rss_mib": rss, "load_before": load,
            "accounted": summary["files"] == summary["written"] + summary["skipped"] + summary["failed"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    parser.add_argument("--patients", type=int, default=114, help="copies of the series (114 -> 20,064 DICOM files)")
    parser.add_argument("--archive", type=Path, default=Path(tempfile.gettempdir()) / "defacer_batch_archive")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output", type=Path, help="write the results as Markdown here")
    args = parser.parse_args(argv)

    made = time.perf_counter()
    counts = make_archive(args.series, args.archive, args.patients)
    made = time.perf_counter() - made
    print(f"archive: {counts['files']} files ({counts['dicom']} DICOM, {counts['bytes'] / 2**30:.2f} GiB) "
          f"at {args.archive} ({made:.0f} s)", flush=True)
    _warm_cache(args.archive)
    scratch = Path(tempfile.mkdtemp(prefix="defacer_batch_bench_"))
    results = []
    try:
        for workers in args.workers:
            result = measure(args.archive, workers, scratch / "key", scratch)
            results.append(result)
            print(f"{workers} worker(s): {result['seconds']:.1f} s, {result['files_per_s']:.1f} files/s, "
                  f"peak RSS per worker {result['peak_rss_mib']} MiB, written {result['written']} skipped "
                  f"{result['skipped']} failed {result['failed']}, accounted {result['accounted']}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = render(results, counts, args)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0 if all(r["accounted"] for r in results) else 1


def render(results: list[dict], counts: dict, args) -> str:
    import dask
    import distributed
    import pydicom

    base = next((r for r in results if r["workers"] == 1), None)
    lines = [
        "# Batch (Dask) load benchmark",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores "
        f"({platform.machine()}), Linux {platform.release()}, Python {platform.python_version()}",
        f"- Versions: dask {dask.__version__}, distributed {distributed.__version__}, pydicom {pydicom.__version__}",
        f"- Archive: {counts['files']} files ({counts['dicom']} DICOM = {args.patients} synthetic patients x the "
        f"{args.series.name} series with new identities and UIDs, {args.patients} non-DICOM .nfo files, 1 corrupt file), "
        f"{counts['bytes'] / 2**30:.2f} GiB, page cache warm",
        "- Command equivalent: `defacer batch ARCHIVE OUT --scrub-only --workers N` (PS3.15 Basic profile, leak check, "
        "per-item audit trail, SQLite manifest committed per item); one task per series (176 files), "
        "LocalCluster processes, one thread per worker; cluster start-up not counted",
        "",
        "| workers | seconds | files/s | scaling efficiency | peak RSS per worker (MiB) | input = written + skipped + failed | load avg before |",
        "|---:|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        efficiency = (f"{100 * r['files_per_s'] / (r['workers'] * base['files_per_s']):.0f} %" if base else "-")
        lines.append(f"| {r['workers']} | {r['seconds']:.1f} | {r['files_per_s']:.1f} | {efficiency} | "
                     f"{', '.join(f'{m:.0f}' for m in r['peak_rss_mib'])} | {r['files']} = {r['written']} + "
                     f"{r['skipped']} + {r['failed']} ({'ok' if r['accounted'] else 'MISMATCH'}) | "
                     f"{' / '.join(f'{x:.2f}' for x in r['load_before'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
