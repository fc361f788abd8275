#!/usr/bin/env python
"""Does the brain stay untouched, and the face go, on tilted heads? IXI heads turned in their
header, defaced.

    python scripts/evaluate_tilted_heads.py [--degrees 15] [--limit N] [--json FILE]

Why: a patient's head is rarely square to the scanner: pitch (chin up or down) and roll of
10-15 degrees are common. Every IXI head is defaced as `defacer deface` does (head mask ->
U-Net -> guarded removal with the eye tissue), once upright and once turned by +-``--degrees``
about the left-right axis (pitch) and the front-back axis (roll), about the volume's centre.
The turn is made in the header (the direction matrix and origin), so the voxel array, and with
it the reference brain (IXI's DLMUSE labels > 0), stays voxel for voxel the same, while the
model, the landmarks and every world-space rule see a tilted head. Printed per head and tilt:
reference-brain voxels changed (the guarantee: 0), each feature's labelled tissue removed (eyes,
nose, mouth, ears; the labels are built from the head's verified landmarks, as in
evaluate_defacing.py), and whether a face detector finds a face on the defaced head's skin
render (YuNet on the front and both 45-degree views, dlib's HOG on the front; the renderer finds
the face's direction itself, as an attacker's would). A face found there is then put to the
re-identification study's naive attacker (scripts/reid_study.py): its SFace and dlib descriptors
against the gallery of every head's ORIGINAL front render; reported are the probes named right
at rank 1 and those matching their own original at the render-calibrated threshold (qa/check.py).
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
from DeFacerLib.qa import render_views  # noqa: E402
from DeFacerLib.qa.check import is_match  # noqa: E402
from DeFacerLib.qa.recognize import FACE_PRESENT_SCORE, MODELS, best_face, describe, detect_faces_dlib, similarity  # noqa: E402
from DeFacerLib.volume import Volume  # noqa: E402

FEATURES = ("eyes", "nose", "mouth", "ears")
VIEWS = ("front", "front_left", "front_right")


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


def evaluate(volume: Volume, brain: np.ndarray, labels: np.ndarray) -> tuple[dict, list]:
    """The cell for one pose, and the (view, descriptors) of every face found on its renders."""
    head = head_mask(volume)
    found = find_features(volume, head=head)
    result = deface_volume(volume, found.masks, guard=found.guard, head=head, landmarks=found.landmarks)
    changed = np.asarray(result.volume.array) != np.asarray(volume.array)
    cell = {"brain_voxels_changed": int(changed[brain].sum())}
    for name in FEATURES:
        tissue = labels == LABEL_VALUES[name]
        cell[f"{name}_removed"] = round(float(result.removed[tissue].mean()), 3) if tissue.any() else None
    images = render_views(result.volume, views=VIEWS)
    faces = {view: best_face(image) for view, image in images.items()}
    cell["face_views"] = [view for view, face in faces.items() if face is not None and face.score >= FACE_PRESENT_SCORE]
    cell["dlib_front_faces"] = len(detect_faces_dlib(images["front"]))
    probes = [(view, describe(images[view], faces[view])) for view in cell["face_views"]]
    return cell, probes


def gallery_entry(volume: Volume) -> dict | None:
    """The original head's front-render descriptors (None: no face found on it)."""
    image = render_views(volume, views=("front",))["front"]
    face = best_face(image)
    return None if face is None else describe(image, face)


def identify(probes: list, gallery: dict) -> None:
    """In place: each probe cell's naive-attacker result, per model: named right at rank 1, and a
    match with its own original at the render threshold (the gallery: every head's original)."""
    names = [name for name, entry in gallery.items() if entry is not None]
    for head, cell, view, descriptors in probes:
        result = {}
        for model in MODELS:
            scores = np.array([similarity(descriptors[model], gallery[name][model]) for name in names])
            best = names[int(np.argmax(scores) if model == "sface" else np.argmin(scores))]
            own = similarity(descriptors[model], gallery[head][model]) if gallery.get(head) else None
            result[model] = {"rank1": best == head, "own_match": own is not None and is_match(model, own)}
        cell.setdefault("identified", {})[view] = result


def _named(cell: dict) -> bool:
    """Any view's face named right at rank 1 or matching its own original, by either model."""
    return any(r["rank1"] or r["own_match"] for per_model in cell.get("identified", {}).values()
               for r in per_model.values())


def _cell_text(cell: dict) -> str:
    shares = "/".join("-" if cell[f"{n}_removed"] is None else f"{cell[f'{n}_removed']:.0%}".rstrip("%")
                      for n in FEATURES)
    face = ("FACE, NAMED" if _named(cell) else "FACE") if cell["face_views"] or cell["dlib_front_faces"] else "-"
    return f"{cell['brain_voxels_changed']} · {shares} · {face}"


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
    rows, probes, gallery, started = [], [], {}, time.perf_counter()
    print("| head | " + " | ".join(f"{a} {d:+g}" if d else a for a, d in tilts) + " |")
    print("|---" * (len(tilts) + 1) + "|")
    for rel in heads:
        volume = read_volume(data / rel)
        brain = reference_brain(data, rel)
        labels = training_labels(volume, table[rel]["landmarks"], brain=brain, head=head_mask(volume))  # as evaluate_defacing
        row = {"head": Path(rel).name.split(".")[0]}
        gallery[row["head"]] = gallery_entry(volume)
        for axis, degrees in tilts:
            cell, found = evaluate(turned(volume, axis, degrees) if degrees else volume, brain, labels)
            row[f"{axis} {degrees:+g}"] = cell
            probes += [(row["head"], cell, view, descriptors) for view, descriptors in found]
        rows.append(row)
    identify(probes, gallery)  # every head's original is in the gallery before any probe is named
    for row in rows:
        print(f"| {row['head']} | " + " | ".join(_cell_text(c) for k, c in row.items() if k != "head") + " |")
    summary = {}
    for key in (k for k in rows[0] if k != "head"):
        cells = [r[key] for r in rows]
        summary[key] = {"heads_with_brain_changed": sum(c["brain_voxels_changed"] > 0 for c in cells),
                        "brain_voxels_changed_max": max(c["brain_voxels_changed"] for c in cells),
                        "heads_with_a_face": sum(bool(c["face_views"] or c["dlib_front_faces"]) for c in cells),
                        "faces_described": sum(len(c.get("identified", {})) for c in cells)}
        for model in MODELS:
            results = [r[model] for c in cells for r in c.get("identified", {}).values()]
            summary[key][f"{model}_rank1"] = sum(r["rank1"] for r in results)
            summary[key][f"{model}_own_match"] = sum(r["own_match"] for r in results)
        for name in FEATURES:
            shares = [c[f"{name}_removed"] for c in cells if c[f"{name}_removed"] is not None]
            summary[key][f"{name}_removed_min"] = min(shares)
            summary[key][f"{name}_removed_pooled_mean"] = round(float(np.mean(shares)), 3)
    described = sum(entry is not None for entry in gallery.values())
    print(f"\nCells: reference-brain voxels changed · labelled tissue removed, % (eyes/nose/mouth/ears) · "
          f"a face found on the defaced render (FACE; NAMED when the naive attacker names it at rank 1 or it "
          f"matches its own original) or not (-); {len(rows)} heads ({described} originals with a face in the "
          f"gallery, chance 1/{described}), {time.perf_counter() - started:.0f} s")
    for key, s in summary.items():
        print(f"- {key}: brain changed on {s['heads_with_brain_changed']} heads (at most {s['brain_voxels_changed_max']} "
              f"voxels); removed at least " + ", ".join(f"{n} {s[f'{n}_removed_min']:.0%}" for n in FEATURES)
              + f"; a face found on {s['heads_with_a_face']} heads ({s['faces_described']} YuNet faces: named at "
              f"rank 1 " + ", ".join(f"{m} {s[f'{m}_rank1']}" for m in MODELS) + "; matching their own original "
              + ", ".join(f"{m} {s[f'{m}_own_match']}" for m in MODELS) + ")")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
