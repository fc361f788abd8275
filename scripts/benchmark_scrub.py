#!/usr/bin/env python3
"""Benchmark DICOM header de-identification: files per second, same files, same machine, one run.

Compares ``defacer scrub`` (Basic profile, 1 process and ``--workers 2``) with the practical
limit (plain pydicom read + write of the same files) and with two other de-identifiers,
dicognito and pydicom's ``deid``, installed in the benchmark's OWN virtual environment
(created under /tmp on first use, so they never enter DeFacer's environment).

    python scripts/benchmark_scrub.py [FOLDER] [--output build/benchmarks/scrub.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import peer_venv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEER_REQUIREMENTS = ["dicognito==0.19.0", "deid==0.4.13"]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dicom" / "siemens_trio_mprage_1mm"

PLAIN = r"""
import sys, time, pydicom
from pathlib import Path
files, out = [Path(p) for p in sys.argv[2:]], Path(sys.argv[1])
start = time.perf_counter()
for i, f in enumerate(files):
    ds = pydicom.dcmread(f)
    ds.save_as(out / f"{i}.dcm", enforce_file_format=False)
print(time.perf_counter() - start)
"""
DICOGNITO = r"""
import sys, time, pydicom
from pathlib import Path
from dicognito.anonymizer import Anonymizer
files, out = [Path(p) for p in sys.argv[2:]], Path(sys.argv[1])
anonymizer = Anonymizer()
start = time.perf_counter()
for i, f in enumerate(files):
    ds = pydicom.dcmread(f)
    anonymizer.anonymize(ds)
    ds.save_as(out / f"{i}.dcm")
print(time.perf_counter() - start)
"""
DEID = r"""
import sys, time, logging
logging.disable(logging.CRITICAL)
from pathlib import Path
from deid.dicom import get_identifiers, replace_identifiers
files, out = [str(p) for p in sys.argv[2:]], sys.argv[1]
start = time.perf_counter()
items = get_identifiers(files)
replace_identifiers(dicom_files=files, ids=items, save=True, output_folder=out, overwrite=True, remove_private=True)
print(time.perf_counter() - start)
"""
VERSIONS = r"""
import importlib.metadata as m, json
out = {}
for name in ("pydicom", "dicognito", "deid"):
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def timed_script(python: str, code: str, files: list[Path], workdir: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=workdir))
    result = subprocess.run([python, "-c", code, str(out), *map(str, files)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed")
    shutil.rmtree(out, ignore_errors=True)
    return float(result.stdout.strip().splitlines()[-1])


def timed_defacer(source: Path, workers: int, workdir: Path) -> float:
    out = workdir / f"defacer_{workers}"
    code = (
        "import sys, time; from DeFacerLib.dicom import ProfileOptions, scrub_tree;"
        "start = time.perf_counter();"
        f"s = scrub_tree(sys.argv[1], sys.argv[2], ProfileOptions(), bytes(range(32)), workers={workers}, audit_dir=sys.argv[2] + '.audit');"
        "print(time.perf_counter() - start); print(s['written'])"
    )
    result = subprocess.run([sys.executable, "-c", code, str(source), str(out)], capture_output=True, text=True, check=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(str(out) + ".audit", ignore_errors=True)
    return float(result.stdout.strip().splitlines()[0])


LOAD_BEFORE = os.getloadavg()
NOTES = """Where the time goes (1 process, per MPRAGE file; CPU time measured in-process on this 2-core
machine, 2026-11-26, not by this script): pydicom read ~0.55 ms and write ~1.4 ms (the limit); the
scrub adds ~0.25 ms (one walk over every element, the table's decision per tag looked up once per
run; nested sequences; keyed UIDs; markers; the leak check over every output value) and the file
checks and audit record ~0.05 ms. What made it cheap without dropping a guarantee: untouched and
replaced elements stay raw (the writer copies their bytes); a raw sequence or element whose bytes
were already scrubbed in this run (the localizer references, dates, names and institution repeat in
every slice) is replayed from its recorded outcome (new bytes or removal) and effects (PHI strings,
UID mappings, log rows) instead of being decoded, walked and re-encoded again; the markers are
encoded once; the leak check reads raw values without converting them, runs its regular expression
only when a PHI literal occurs in the lower-cased bytes (same answer, ~50x cheaper) and reads a
repeated raw sequence's values from a cache keyed by its bytes; keyed UIDs, pseudonyms and date
offsets are computed once per run. `--workers N` forks N processes that inherit the scrubber warmed
on the first file, sends files in chunks of <= 4 and starts no pool for fewer than 16 files per
worker; it scales only as far as idle cores allow (see the load average above)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_DATA), help="folder of DICOM files (flat)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the best is kept")
    parser.add_argument("--output", default=str(REPO / "build" / "benchmarks" / "scrub.md"),
                        help="Markdown section to paste into docs/benchmarks.md")
    args = parser.parse_args(argv)
    source = Path(args.folder)
    import pydicom

    files = []
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
            files.append(path)
        except Exception:
            continue
    bench_python = str(peer_venv("dicom_peers", PEER_REQUIREMENTS) / "python")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        staged = work / "input"  # only the DICOM files, so every method sees the same set
        staged.mkdir()
        for path in files:
            os.symlink(path, staged / path.name)
        methods = {
            "pydicom read+write (limit)": lambda: timed_script(sys.executable, PLAIN, files, work),
            "defacer scrub, 1 process": lambda: timed_defacer(staged, 1, work),
            "defacer scrub, --workers 2": lambda: timed_defacer(staged, 2, work),
            "dicognito, 1 process": lambda: timed_script(bench_python, DICOGNITO, files, work),
            "deid (pydicom/deid), 1 process": lambda: timed_script(bench_python, DEID, files, work),
        }
        # Rounds go over every method in turn (not all runs of one method, then the next), so
        # a change in the machine's load hits every method alike and the ratios hold.
        failed: set[str] = set()
        for round_number in range(args.repeat):
            for name, run in methods.items():
                if name in failed:
                    continue
                try:
                    seconds = run()
                except Exception as error:  # report, do not hide
                    print(f"{name}: failed ({error})")
                    failed.add(name)
                    results.pop(name, None)
                    continue
                results[name] = min(seconds, results.get(name, seconds))
                print(f"round {round_number + 1}: {name}: {len(files) / seconds:.1f} files/s ({seconds:.2f} s)")
        for name, best in results.items():
            print(f"{name}: {len(files) / best:.1f} files/s ({best:.2f} s), best of {args.repeat}")
    versions = json.loads(subprocess.run([bench_python, "-c", VERSIONS], capture_output=True, text=True).stdout)
    own = json.loads(subprocess.run([sys.executable, "-c", VERSIONS], capture_output=True, text=True).stdout)
    write_report(Path(args.output), source, len(files), results, versions, own, args.repeat)
    print(f"wrote {args.output}")
    return 0


def write_report(path: Path, source: Path, count: int, results: dict, versions: dict, own: dict, repeat: int) -> None:
    rate = {name: count / seconds for name, seconds in results.items()}
    limit = rate.get("pydicom read+write (limit)")
    single = rate.get("defacer scrub, 1 process")
    pooled = rate.get("defacer scrub, --workers 2")
    dicognito = rate.get("dicognito, 1 process")
    lines = [
        "# DICOM header de-identification benchmark",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; machine: {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- Files: {count} DICOM files of `{source.name}` (the same files for every method), best of {repeat} run(s) per method; "
        "outputs written to a local temporary folder",
        f"- Versions: pydicom {own.get('pydicom')} (DeFacer), benchmark venv: pydicom {versions.get('pydicom')}, "
        f"dicognito {versions.get('dicognito')}, deid {versions.get('deid')}",
        "- DeFacer: Basic Application Confidentiality Profile, leak check on, audit trail written",
        f"- Load average before the run (1/5/15 min): {' / '.join(f'{v:.2f}' for v in LOAD_BEFORE)}; other jobs share the 2 cores, "
        "so figures move by +-30 % between runs; the ratios within one run are what this page compares",
        "",
        "| method | seconds | files/s | vs read+write |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in results.items():
        ratio = f"{rate[name] / limit:.0%}" if limit else "n/a"
        lines.append(f"| {name} | {seconds:.2f} | {rate[name]:.1f} | {ratio} |")
    lines.append("")
    if single and limit:
        verdict = "met" if single >= 0.8 * limit else "MISSED"
        lines.append(f"- Target >= 80 % of plain read+write (1 process): {single / limit:.0%}, {verdict}.")
    if single and dicognito:
        verdict = "met" if single >= 2 * dicognito else "MISSED"
        lines.append(f"- Target >= 2x dicognito (1 process): {single / dicognito:.2f}x, {verdict}.")
    if single and pooled:
        lines.append(f"- Scaling: `--workers 2` runs at {pooled / single:.2f}x the 1-process rate (2.00x would be linear; "
                     f"it needs 2 idle cores, see the load average above).")
    lines += ["", NOTES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
