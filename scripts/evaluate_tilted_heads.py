#!/usr/bin/env python
"""Does the brain stay untouched on tilted heads? IXI heads turned in their header, defaced.

    python scripts/evaluate_tilted_heads.py [--degrees 15] [--limit N] [--json FILE]

Why: a patient's head is rarely square to the scanner: pitch (chin up or down) and roll of
10-15 degrees are common. Every IXI head is defaced as `defacer deface` does (head mask ->
U-Net -> guarded removal with the eye tissue), once upright and once turned by +-``--degrees``
about the left-right axis (pitch) and the front-back axis (roll), about the volume's centre.
The turn is made in the header (the direction matrix and origin), so the voxel array, and with
it the reference brain (IXI's DLMUSE labels > 0), stays voxel for voxel the same, while the
model, the landmarks and every world-space rule see a tilted head. Printed per head and tilt:
reference-brain voxels changed (the guarantee: 0), and the eyes' labelled tissue removed.
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
sys.path.insert(0, str(REPO / "scripts"))

from evaluate_defacing import data_dir, reference_brain  # noqa: E402
from DeFacerLib.deface import head_mask  # noqa: E402
from DeFacerLib.deface.pipeline import deface_volume, find_features  # noqa: E402
from DeFacerLib.face.labels import load_landmarks, training_labels  # noqa: E402
from DeFacerLib.features import LABEL_VALUES  # noqa: E402
from DeFacerLib.io import read_volume  # noqa: E402
from DeFacerLib.volume import Volume  # noqa: E402


def turned(volume: Volume, axis: str, degrees: float) -> Volume:
    """The same voxels with the header turned about the volume's centre: pitch about world x
    (left-right), roll about world y (front-back)."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    rotation = (np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) if axis == "pitch"
                else np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]))
    centre = volume.index_to_world((np.asarray(volume.shape3) - 1)[None, :] / 2.0)[0]
    return Volume(volume.array, volume.spacing_mm, rotation @ (volume.origin_mm - centre) + centre,
                  rotation @ volume.direction, modality=volume.modality, slope=volume.slope, intercept=volume.intercept)


def evaluate(volume: Volume, brain: np.ndarray, eyes: np.ndarray) -> dict:
    head = head_mask(volume)
    found = find_features(volume, head=head)
    result = deface_volume(volume, found.masks, guard=found.guard, head=head, landmarks=found.landmarks)
    changed = np.asarray(result.volume.array) != np.asarray(volume.array)
    return {"brain_voxels_changed": int(changed[brain].sum()),
            "eyes_removed": round(float(result.removed[eyes].mean()), 3) if eyes.any() else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degrees", type=float, default=15.0)
    parser.add_argument("--limit", type=int, help="only the first N IXI heads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    data = data_dir()
    table = load_landmarks()
    heads = sorted(rel for rel in table if rel.startswith("heads/ixi/"))[: args.limit]
    tilts = [("upright", 0.0)] + [(axis, sign * args.degrees) for axis in ("pitch", "roll") for sign in (1, -1)]
    rows, started = [], time.perf_counter()
    print("| head | " + " | ".join(f"{a} {d:+g}" if d else a for a, d in tilts) + " |")
    print("|---" * (len(tilts) + 1) + "|")
    for rel in heads:
        volume = read_volume(data / rel)
        brain = reference_brain(data, rel)
        eyes = training_labels(volume, table[rel]["landmarks"], brain=brain) == LABEL_VALUES["eyes"]
        row = {"head": Path(rel).name.split(".")[0]}
        for axis, degrees in tilts:
            row[f"{axis} {degrees:+g}"] = evaluate(turned(volume, axis, degrees) if degrees else volume, brain, eyes)
        rows.append(row)
        cells = [f"{c['brain_voxels_changed']} / {c['eyes_removed']:.0%}" for k, c in row.items() if k != "head"]
        print(f"| {row['head']} | " + " | ".join(cells) + " |", flush=True)
    summary = {key: {"heads_with_brain_changed": sum(r[key]["brain_voxels_changed"] > 0 for r in rows),
                     "brain_voxels_changed_max": max(r[key]["brain_voxels_changed"] for r in rows),
                     "eyes_removed_min": min(r[key]["eyes_removed"] for r in rows)}
               for key in rows[0] if key != "head"}
    print(f"\nCells: reference-brain voxels changed / eyes' labelled tissue removed; {len(rows)} heads, "
          f"{time.perf_counter() - started:.0f} s")
    for key, s in summary.items():
        print(f"- {key}: brain changed on {s['heads_with_brain_changed']} heads (at most {s['brain_voxels_changed_max']} "
              f"voxels); eyes removed >= {s['eyes_removed_min']:.0%}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
