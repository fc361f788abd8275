#!/usr/bin/env python
"""Evaluate automatic defacing on the held-out validation heads: one table row per head.

    python scripts/evaluate_defacing.py                      # validation split, shipped model
    python scripts/evaluate_defacing.py --model build/m.onnx --json build/eval.json

For every head the shipped pipeline runs as `defacer deface` does (head mask -> U-Net ->
guarded removal with the predicted brain + frontal guard protected) and is compared with the
truth made from the hand-checked landmarks (scripts/training/landmarks.json, labelled by
DeFacerLib.face.labels exactly as in training) and, for IXI, the reference brain:

- found: the feature was reported present (a labelled feature that is not found is a miss);
- landmark error (mm): for each labelled region (each eye and ear separately) the distance
  from its centroid to the nearest predicted region's centroid. The labels are regions built
  around the landmarks, so this is the segmentation's landmark error measured on the same
  footing for truth and model (a region's centroid is not the landmark itself: the eye label
  is centred 4 mm in front of the globe centre, the nose label 12 mm behind and 18 mm above
  the tip);
- Dice of the predicted mask against the labelled region, on the input grid;
- removed: share of the labelled region's voxels the removal changed;
- brain changed: voxels inside the reference brain (brain_labels) that differ from the input;
- seconds: head mask + segmentation + removal (reading and writing excluded).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DeFacerLib.deface import head_mask  # noqa: E402
from DeFacerLib.deface.pipeline import DefaceParameters, deface_volume, find_features  # noqa: E402
from DeFacerLib.face.labels import feature_centres, load_landmarks, training_labels  # noqa: E402
from DeFacerLib.features import BRAIN, FEATURES, LABEL_VALUES  # noqa: E402
from DeFacerLib.io import read_volume  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from train_face_model import brain_labels_path, data_dir  # noqa: E402


def reference_brain(data: Path, rel: str) -> np.ndarray | None:
    path = brain_labels_path(data, rel)  # the training script's lookup: the same truth as in training
    return read_volume(path).array > 0 if path is not None else None


def centre_errors_mm(volume, truth_labels: np.ndarray, predicted_labels: np.ndarray) -> dict[str, list[float]]:
    """Per feature, for each labelled region (each eye, each ear) the distance from its centroid
    to the nearest predicted region's centroid (inf when nothing was predicted)."""
    truth, found = feature_centres(volume, truth_labels), feature_centres(volume, predicted_labels)
    errors: dict[str, list[float]] = {}
    for feature in FEATURES:
        expected = truth[feature][: 2 if feature in ("eyes", "ears") else 1]
        errors[feature] = [float(min((np.linalg.norm(c - p) for p in found[feature]), default=np.inf))
                           for c in expected]
    return errors


def evaluate_head(data: Path, rel: str, table: dict, model: Path | None,
                  parameters: DefaceParameters = DefaceParameters()) -> dict:
    volume = read_volume(data / rel)
    brain = reference_brain(data, rel)
    start = time.perf_counter()
    head = head_mask(volume)
    found = find_features(volume, head=head, model_path=model)
    defaced = deface_volume(volume, found.masks, parameters=parameters, guard=found.guard, head=head)
    seconds = time.perf_counter() - start

    entry = table[rel]
    truth = training_labels(volume, entry["landmarks"], brain=brain, head=head)
    changed = np.asarray(defaced.volume.array) != np.asarray(volume.array)
    row = {"head": Path(rel).name.split(".")[0], "seconds": round(seconds, 2),
           "brain_voxels_changed": None if brain is None else int(changed[brain].sum()),
           "brain_dice": None if brain is None else _dice(found.masks[BRAIN], brain),
           "features": {}}
    predicted = np.zeros(volume.shape3, np.uint8)
    for feature in FEATURES:
        predicted[found.masks[feature]] = LABEL_VALUES[feature]
    errors = centre_errors_mm(volume, truth, predicted)
    for feature in FEATURES:
        labelled = truth == LABEL_VALUES[feature]
        row["features"][feature] = {
            "labelled": bool(labelled.any()),
            "found": bool(found.present[feature]),
            "centre_errors_mm": [round(e, 1) for e in errors[feature]],
            "dice": _dice(found.masks[feature], labelled) if labelled.any() else None,
            "removed_fraction": round(float(changed[labelled].mean()), 3) if labelled.any() else None,
        }
    return row


def _dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    total = int(predicted.sum()) + int(truth.sum())
    return round(2.0 * int((predicted & truth).sum()) / total, 3) if total else 1.0


def summarise(rows: list[dict]) -> dict:
    """Targets of the U-Net issue over all rows: misses, median centre error, removal share, brain."""
    summary = {}
    for feature in FEATURES:
        cells = [r["features"][feature] for r in rows if r["features"][feature]["labelled"]]
        errors = [e for c in cells if c["found"] for e in c["centre_errors_mm"]]
        summary[feature] = {
            "heads": len(cells),
            "missed": sum(not c["found"] for c in cells),
            "median_centre_error_mm": round(float(np.median(errors)), 1) if errors else None,
            "median_dice": round(float(np.median([c["dice"] for c in cells])), 3) if cells else None,
            "min_removed_fraction": min((c["removed_fraction"] for c in cells), default=None),
            "median_removed_fraction": round(float(np.median([c["removed_fraction"] for c in cells])), 3) if cells else None,
        }
    changed = [r["brain_voxels_changed"] for r in rows if r["brain_voxels_changed"] is not None]
    summary["brain_voxels_changed_max"] = max(changed) if changed else None
    summary["median_seconds"] = round(float(np.median([r["seconds"] for r in rows])), 2)
    return summary


def markdown(rows: list[dict], summary: dict) -> str:
    lines = ["| head | " + " | ".join(f"{f}: found, error mm, Dice, removed" for f in FEATURES)
             + " | brain changed | s |", "|---" * (len(FEATURES) + 3) + "|"]
    for row in rows:
        cells = []
        for feature in FEATURES:
            c = row["features"][feature]
            if not c["labelled"]:
                cells.append("not in scan" + (" (found!)" if c["found"] else ""))
                continue
            error = "/".join(f"{e:.1f}" for e in c["centre_errors_mm"]) or "-"
            cells.append(f"{'yes' if c['found'] else '**MISS**'}, {error}, {c['dice']:.2f}, {c['removed_fraction']:.0%}")
        brain = "n/a" if row["brain_voxels_changed"] is None else str(row["brain_voxels_changed"])
        lines.append(f"| {row['head']} | " + " | ".join(cells) + f" | {brain} | {row['seconds']:.1f} |")
    lines += ["", "| feature | heads | missed | median landmark error (mm) | median Dice | removed (min / median) |",
              "|---|---|---|---|---|---|"]
    for feature in FEATURES:
        s = summary[feature]
        lines.append(f"| {feature} | {s['heads']} | {s['missed']} | {s['median_centre_error_mm']} | {s['median_dice']} | "
                     f"{s['min_removed_fraction']:.0%} / {s['median_removed_fraction']:.0%} |")
    lines.append(f"\nReference-brain voxels changed, worst head: {summary['brain_voxels_changed_max']}; "
                 f"median seconds per head: {summary['median_seconds']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("heads", nargs="*", help="data-relative head paths (default: the validation split)")
    parser.add_argument("--model", type=Path, default=None, help="face_unet.onnx to evaluate (default: shipped)")
    parser.add_argument("--split", type=Path, default=REPO / "scripts" / "training" / "split.json")
    parser.add_argument("--landmarks", type=Path, default=REPO / "scripts" / "training" / "landmarks.json")
    parser.add_argument("--json", type=Path, default=None, help="also write rows and summary here")
    parser.add_argument("--margin-mm", type=float, default=None, help="removal margin (default: the engine's)")
    parser.add_argument("--all-ixi", action="store_true", help="all 27 IXI heads (training ones too: a brain-safety check)")
    args = parser.parse_args(argv)

    data = data_dir()
    table = load_landmarks(args.landmarks)
    heads = args.heads or json.loads(args.split.read_text())["validation"]
    if args.all_ixi:
        heads = sorted(rel for rel in table if rel.startswith("heads/ixi/"))
    parameters = DefaceParameters(margin_mm=args.margin_mm)
    rows = []
    for rel in heads:
        rows.append(evaluate_head(data, rel, table, args.model, parameters))
        print(f"{rows[-1]['head']}: {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    summary = summarise(rows)
    print(markdown(rows, summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
