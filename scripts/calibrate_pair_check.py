#!/usr/bin/env python3
"""Calibrate `defacer qa`'s match thresholds, per view, on the comparison the check makes.

    python scripts/calibrate_pair_check.py ../shared/data/heads/ixi [--out Resources/QA/pair_check_thresholds.json]
        [--defaced NAME=DIR ...] [--markdown FILE]

Why: the pair check compares a view of the original head with the SAME view of the defaced
head, cut where the original's face is (qa/check.py). A defaced face "still matches" when it is
closer to its original than 99 % of other people's are. So the impostor pairs are that
comparison between two different people: for every view and every head j, j's render against
every other head i's ORIGINAL render in the same view, cut and aligned where j's face is
(27 x 26 pairs per view on IXI). The thresholds do not depend on any defacer. (The study's own
calibration, scripts/reid_study.py, pairs a front gallery with oblique probes: two poses make
different people look less alike than one, so it called 3-7 % of different-person oblique
pairs a dlib match and let SFace pass same-view pairs it should have flagged.)

``--defaced NAME=DIR``: outputs of a tool (same file names as the heads) put through the check
(qa.check.check_pair, the front and the two oblique views) with the thresholds it loads (those
just written with ``--out``): how many pass, and how many views match.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from DeFacerLib.io import read_volume  # noqa: E402
from DeFacerLib.qa.check import VERDICT_VIEWS, check_pair, impostor_threshold, is_match, pair_thresholds  # noqa: E402
from DeFacerLib.qa.recognize import MODELS, best_face, describe, similarity  # noqa: E402
from DeFacerLib.qa.render import face_direction, render_views  # noqa: E402
from markdown_out import publish  # noqa: E402

FALSE_MATCH_RATE = 0.01


def impostor_scores(renders: dict[str, dict]) -> dict[str, dict[str, np.ndarray]]:
    """Per view and model: head j's original face against every other head's original render
    in the same view, cut where j's face is (the check's forced crop)."""
    scores = {view: {model: [] for model in MODELS} for view in VERDICT_VIEWS}
    for view in VERDICT_VIEWS:
        for j, own in renders.items():
            face = best_face(own[view])
            if face is None:
                continue
            reference = describe(own[view], face)
            for i, other in renders.items():
                if i != j:
                    cut = describe(other[view], face)
                    for model in MODELS:
                        scores[view][model].append(similarity(reference[model], cut[model]))
    return {view: {model: np.asarray(values) for model, values in per.items()} for view, per in scores.items()}


def thresholds_from(impostors: dict) -> dict:
    """The value FALSE_MATCH_RATE of impostor pairs reach (SFace: cosine, higher is closer; dlib:
    distance, lower is closer)."""
    out = {}
    for view, per in impostors.items():
        out[view] = {}
        for model, values in per.items():
            cut = impostor_threshold(model, values, FALSE_MATCH_RATE)
            out[view][model] = {"threshold": round(cut, 4), "impostor_pairs": int(values.size),
                                "impostor_median": round(float(np.median(values)), 4)}
    return out


def verdicts(heads: list[Path], folder: Path) -> tuple[int, dict[str, int]]:
    """(heads whose defaced output in ``folder`` passes `defacer qa`'s check, verdict views
    matching per model), with the thresholds the check loads."""
    passed, hits = 0, {model: 0 for model in MODELS}
    for head in heads:
        check, _, _ = check_pair(read_volume(head), read_volume(folder / head.name), views=VERDICT_VIEWS)
        passed += check.verdict == "PASS"
        for view in check.views:
            for model in MODELS:
                hits[model] += any(values.get(model) is not None and is_match(model, values[model], view.view)
                                   for values in (view.similarity, view.similarity_forced))
    return passed, hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("heads_dir", type=Path, help="IXI layout: t1/*_T1.nii.gz")
    parser.add_argument("--out", type=Path, help="write the thresholds here (Resources/QA/pair_check_thresholds.json)")
    parser.add_argument("--defaced", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    heads = sorted((args.heads_dir / "t1").glob("*_T1.nii.gz"))
    originals, faces = {}, {}
    for head in heads:
        volume = read_volume(head)
        faces[head.name] = face_direction(volume)
        originals[head.name] = render_views(volume, views=VERDICT_VIEWS, face=faces[head.name])
    calibration = thresholds_from(impostor_scores(originals))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"- Date: {now}; machine: {os.cpu_count()} cores, {platform.machine()}; {len(heads)} heads of "
             f"{args.heads_dir.name}; impostor pairs per view: {len(heads)} x {len(heads) - 1}",
             "", "| view | SFace: match at cosine >= | dlib: match at distance <= |", "|---|---:|---:|"]
    lines += [f"| {view} | {per['sface']['threshold']:.3f} | {per['dlib']['threshold']:.3f} |" for view, per in calibration.items()]
    if args.out:
        args.out.write_text(json.dumps({
            "calibrated_on": f"{len(heads)} heads of {args.heads_dir.name}, {now} (scripts/calibrate_pair_check.py)",
            "false_match_rate": FALSE_MATCH_RATE, "views": calibration}, indent=1) + "\n")
        pair_thresholds.cache_clear()
    if args.defaced:
        lines += ["", f"`defacer qa`'s check with the thresholds it loads ({'these' if args.out else 'the shipped ones'}):",
                  "", "| defaced heads | pass (no verdict view matches) | verdict views matching: SFace / dlib |",
                  "|---|---:|---:|"]
    for spec in args.defaced:
        name, folder = spec.split("=", 1)
        passed, hits = verdicts(heads, Path(folder))
        lines.append(f"| {name} | {passed} / {len(heads)} | {hits['sface']} / {hits['dlib']} |")
    lines.append(f"\n{time.perf_counter() - started:.0f} s in all")
    publish(lines, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
