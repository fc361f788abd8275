#!/usr/bin/env python3
"""Benchmark DICOM header de-identification: files per second, same files, same machine, one run.

Compares ``defacer scrub`` (Basic profile, 1 process and ``--workers 2``) with the practical
limit (plain pydicom read + write of the same files) and with two other de-identifiers,
dicognito and pydicom's ``deid``, installed in their OWN virtual environment (build/peers/,
so they never enter DeFacer's environment).

Fair by construction: every method reads the same copies of the files from one temporary
folder and writes every file into a fresh folder beside them; each runs in a fresh process
timed from after its imports to after its last write (wall clock and the process's CPU time
from getrusage); the rounds alternate the methods, so a change in the machine's load hits
all alike; the ratios are given best-vs-best and as the median of each round's own ratio.

    python scripts/benchmark_scrub.py [FOLDER] [--output build/benchmarks/scrub.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import peer_venv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEER_REQUIREMENTS = ["dicognito==0.19.0", "deid==0.4.13"]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dicom" / "siemens_trio_mprage_1mm"

# Every timed script starts with CLOCK: wall time and CPU time (this process and its waited-for
# children, i.e. a pool's workers) from after the imports to after the last file is written.
CLOCK = r"""
import resource, sys, time
from pathlib import Path
def cpu():
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
"""
PLAIN = CLOCK + r"""
import pydicom
files, out = [Path(p) for p in sys.argv[2:]], Path(sys.argv[1])
start, start_cpu = time.perf_counter(), cpu()
for f in files:
    ds = pydicom.dcmread(f)
    ds.save_as(out / f.name, enforce_file_format=False)
print(time.perf_counter() - start, cpu() - start_cpu)
"""
DICOGNITO = CLOCK + r"""
import pydicom
from dicognito.anonymizer import Anonymizer
files, out = [Path(p) for p in sys.argv[2:]], Path(sys.argv[1])
anonymizer = Anonymizer()
start, start_cpu = time.perf_counter(), cpu()
for f in files:
    ds = pydicom.dcmread(f)
    anonymizer.anonymize(ds)
    ds.save_as(out / f.name)
print(time.perf_counter() - start, cpu() - start_cpu)
"""
DEID = CLOCK + r"""
import logging
logging.disable(logging.CRITICAL)
from deid.dicom import get_identifiers, replace_identifiers
files, out = [str(p) for p in sys.argv[2:]], sys.argv[1]
start, start_cpu = time.perf_counter(), cpu()
items = get_identifiers(files)
replace_identifiers(dicom_files=files, ids=items, save=True, output_folder=out, overwrite=True, remove_private=True)
print(time.perf_counter() - start, cpu() - start_cpu)
"""
DEFACER = CLOCK + r"""
from DeFacerLib.dicom import ProfileOptions, scrub_tree
source, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
start, start_cpu = time.perf_counter(), cpu()
summary = scrub_tree(source, out, ProfileOptions(), bytes(range(32)), workers=workers, audit_dir=out + ".audit")
print(time.perf_counter() - start, cpu() - start_cpu)
assert summary["written"] == summary["files"], summary["failed_files"]
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
READ_WRITE = "pydicom read+write (limit)"
SINGLE, POOLED, DICOGNITO_NAME = "defacer scrub, 1 process", "defacer scrub, --workers 2", "dicognito, 1 process"


def timed(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall s, CPU s) that a timed script printed (``env``: its environment, default this one's)."""
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed")
    wall, cpu = result.stdout.split()[:2]
    return float(wall), float(cpu)


def timed_script(python: str, code: str, files: list[Path], workdir: Path) -> tuple[float, float]:
    out = Path(tempfile.mkdtemp(dir=workdir))
    try:
        return timed([python, "-c", code, str(out), *map(str, files)])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def timed_defacer(source: Path, workers: int, workdir: Path) -> tuple[float, float]:
    out = workdir / f"defacer_{workers}"
    try:
        return timed([sys.executable, "-c", DEFACER, str(source), str(out), str(workers)])
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(str(out) + ".audit", ignore_errors=True)


def machine_state() -> str:
    """`date -u` and `uptime`, as the shell prints them."""
    return " / ".join(subprocess.run(cmd, capture_output=True, text=True).stdout.strip() for cmd in (["date", "-u"], ["uptime"]))


def dicom_files(source: Path) -> list[Path]:
    import pydicom

    files = []
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
            files.append(path)
        except Exception:
            continue
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_DATA), help="folder of DICOM files (flat)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds over every method (best and median are kept)")
    parser.add_argument("--output", default=str(REPO / "build" / "benchmarks" / "scrub.md"),
                        help="Markdown section to paste into docs/benchmarks.md")
    args = parser.parse_args(argv)
    source = Path(args.folder)
    bench_python = str(peer_venv("dicom_peers", PEER_REQUIREMENTS) / "python")
    runs: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        staged = work / "input"  # copies of only the DICOM files: every method reads these, from the same disk
        staged.mkdir()
        files = [Path(shutil.copy2(path, staged / path.name)) for path in dicom_files(source)]
        methods = {
            READ_WRITE: lambda: timed_script(sys.executable, PLAIN, files, work),
            SINGLE: lambda: timed_defacer(staged, 1, work),
            POOLED: lambda: timed_defacer(staged, 2, work),
            DICOGNITO_NAME: lambda: timed_script(bench_python, DICOGNITO, files, work),
            "deid (pydicom/deid), 1 process": lambda: timed_script(bench_python, DEID, files, work),
        }
        state_before = machine_state()
        # Rounds go over every method in turn (not all runs of one method, then the next), so
        # a change in the machine's load hits every method alike and the ratios hold.
        for round_number in range(args.repeat):
            for name, run in methods.items():
                if name in runs and not runs[name]:
                    continue  # failed before
                try:
                    wall, cpu = run()
                except Exception as error:  # report, do not hide
                    print(f"{name}: failed ({error})")
                    runs[name] = []
                    continue
                runs.setdefault(name, []).append((wall, cpu))
                print(f"round {round_number + 1}: {name}: {len(files) / wall:.1f} files/s ({wall:.3f} s, CPU {cpu:.3f} s)")
        state_after = machine_state()
    runs = {name: values for name, values in runs.items() if values}
    versions = json.loads(subprocess.run([bench_python, "-c", VERSIONS], capture_output=True, text=True).stdout)
    own = json.loads(subprocess.run([sys.executable, "-c", VERSIONS], capture_output=True, text=True).stdout)
    lines = report(source, len(files), runs, versions, own, args.repeat, (state_before, state_after))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.output}")
    return 0


def paired_ratio(runs: dict, name: str, column: int) -> float:
    """Median over rounds of (read+write time / method time) within the same round."""
    return statistics.median(limit[column] / own[column] for limit, own in zip(runs[READ_WRITE], runs[name]))


def report(source: Path, count: int, runs: dict, versions: dict, own: dict, repeat: int, states: tuple) -> list[str]:
    best = {name: min(wall for wall, _ in values) for name, values in runs.items()}
    best_cpu = {name: min(cpu for _, cpu in values) for name, values in runs.items()}
    limit = READ_WRITE in runs
    lines = [
        "# DICOM header de-identification benchmark",
        "",
        f"- Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        f"- Before: {states[0]}",
        f"- After: {states[1]}",
        f"- Files: {count} DICOM files of `{source.name}`, copied to one local temporary folder that every method reads; "
        f"each writes every file to a fresh folder; {repeat} alternating round(s) of every method, each in a fresh process",
        f"- Versions: pydicom {own.get('pydicom')} (DeFacer), peers' venv: pydicom {versions.get('pydicom')}, "
        f"dicognito {versions.get('dicognito')}, deid {versions.get('deid')}",
        "- DeFacer: Basic Application Confidentiality Profile, leak check on, audit trail written",
        "",
        "| method | best s | median s | files/s (best) | vs read+write, best | vs read+write, median of rounds | CPU s (best) | vs read+write, CPU median of rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in runs.items():
        median = statistics.median(wall for wall, _ in values)
        ratios = (f"{best[READ_WRITE] / best[name]:.0%} | {paired_ratio(runs, name, 0):.0%}" if limit else "n/a | n/a")
        cpu_ratio = f"{paired_ratio(runs, name, 1):.0%}" if limit else "n/a"
        lines.append(f"| {name} | {best[name]:.3f} | {median:.3f} | {count / best[name]:.1f} | {ratios} | "
                     f"{best_cpu[name]:.3f} | {cpu_ratio} |")
    lines.append("")
    if SINGLE in runs and limit:
        ratio = paired_ratio(runs, SINGLE, 0)
        lines.append(f"- Target >= 80 % of plain read+write (1 process, wall, median of rounds): {ratio:.0%}, "
                     f"{'met' if ratio >= 0.8 else 'MISSED'} (best-vs-best {best[READ_WRITE] / best[SINGLE]:.0%}, "
                     f"CPU {paired_ratio(runs, SINGLE, 1):.0%}).")
    if SINGLE in runs and DICOGNITO_NAME in runs:
        ratio = best[DICOGNITO_NAME] / best[SINGLE]
        lines.append(f"- Target >= 2x dicognito (1 process, best): {ratio:.2f}x, {'met' if ratio >= 2 else 'MISSED'}.")
    if SINGLE in runs and POOLED in runs:
        lines.append(f"- Scaling: `--workers 2` runs at {best[SINGLE] / best[POOLED]:.2f}x the 1-process rate (best; 2.00x "
                     "would be linear and needs 2 idle cores, see the load above).")
    return lines


if __name__ == "__main__":
    sys.exit(main())
