#!/usr/bin/env python
"""Evaluate automatic defacing on the held-out validation heads: one table row per head.

    python scripts/evaluate_defacing.py                      # validation split, shipped model
    python scripts/evaluate_defacing.py --model build/m.onnx --json build/eval.json

For every head the shipped pipeline runs as `defacer deface` does (head mask -> U-Net ->
guarded removal with the predicted brain + frontal guard protected) and is compared with the
truth made from the hand-checked landmarks (scripts/training/landmarks.json, labelled by
DeFacerLib.face.labels exactly as in training) and, for IXI, the reference brain:

The ears' landmarks are measured against the readers' consensus of the concha instead
(scripts/training/ear_consensus.json, annotate_ears.py agree; ``--ears``): landmarks.json's ear
points are the centres of the training labels (the old, looser "pinna centre"), 10.9 mm (median)
from where four blind readers put the concha.

- found: the feature was reported present (a labelled feature that is not found is a miss);
- landmark error (mm): the distance from each verified landmark (each eye and ear separately)
  to the landmark `defacer deface` reports for it (report["segmentation"]["landmarks_mm"]):
  the U-Net region's centroid less its mean offset, snapped to the anatomy where the cue
  agrees (DeFacerLib.face.landmarks; "a" in the table) or left as the model's estimate ("m").
  The verified landmarks were proposed by the same cues and then checked by eye: where the
  annotator accepted a proposal, a snapped landmark on the same voxel scores 0.0. The eyes
  are the globe fit on both sides (face.landmarks.globe_centre; the table's from the old
  point, checked on slices; the pipeline's from the model's estimate), so their error is how
  far two starts end apart, not an independent reading (the model's estimate alone is). The summary
  also gives the model's estimate alone, and the old region-centroid error (each labelled
  region's centroid to the nearest predicted region's; the eye label is centred 4 mm in front
  of the globe, the nose label 12 mm behind and 18 mm above the tip);
- Dice of the predicted mask against the labelled region, on the input grid;
- removed: share of the labelled region's voxels the removal replaced (with air, the seal or a
  blend; DefaceResult.removed); the summary gives it per head (min, median) and pooled over all
  the heads' labelled volume (mm^3, so that a finer grid does not weigh more). The JSON also has the share whose value differs from the input,
  which can be a little lower: a replaced voxel may already have held its new value (the seal
  is the head's median tissue value, and on 8-bit IXI heads ~1-2 % of the eye tissue has it);
- ear relief (mm^2): the part of the side view within EAR_RELIEF_WINDOW_MM of each reference ear
  (the concha) where the head stands more than EAR_RELIEF_MM proud of its own outline without the
  pinna (deface.pinna.head_outline), before and after: what is left of the pinna's shape. The
  removed share above only counts the labelled region, which a smaller cut can still cover;
- ear print (mm^2): the same window, where the skin surface the QA renderer would draw (its
  threshold, 1 mm smoothing) lies more than EAR_PRINT_MM above or below that outline, on the
  undefaced and the defaced head: the relief counts what the removal left, this also counts the
  cut's own shape (a sunken box, a floor that follows the pinna);
- ear floor sunk (mm^2): in the ring EAR_SUNK_RING_MM around the concha (past the pinna, inside
  the ears' reach), where the defaced rendered surface lies more than EAR_SUNK_MM under the
  undefaced one: a floor sunk below the head, measured against the head itself (the print
  is measured against the outline, and an outline that sinks under the head hides it);
- cut by the field of view: a landmark the table lists under ``cut_by_field_of_view`` is the
  last point of a feature the scan cuts (niivue_T2w's nose: its field of view ends across the
  nose, so its "tip" is the lowest point in view and the nose label, shaped for a whole nose
  and reaching 48 mm above its tip, lies in the glabella and forehead). Its cell is shown and
  marked, and left out of the feature's Dice and removed shares in the summary;
- brain changed: voxels inside the reference brain (brain_labels) that differ from the input;
- seconds: head mask + segmentation + removal (reading and writing excluded).

`--offsets` prints instead the mean offset of each U-Net region's centroid from its verified
landmark over the training split: face.landmarks.MODEL_CENTROID_OFFSET_MM is made from it; and
"concha_from_bowl", face.concha.CONCHA_FROM_BOWL_MM.
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
from DeFacerLib.deface.pinna import head_outline, lateral_extent, midline_index  # noqa: E402
from DeFacerLib.deface.pipeline import DefaceParameters, deface_volume, find_features  # noqa: E402
from DeFacerLib.face.concha import find_conchae  # noqa: E402
from DeFacerLib.face.labels import LANDMARK_FEATURE, feature_centres, load_landmarks, training_labels  # noqa: E402
from DeFacerLib.face.landmarks import model_landmarks  # noqa: E402
from DeFacerLib.face.segment import segment_features  # noqa: E402
from DeFacerLib.features import BRAIN, FEATURES, LABEL_VALUES  # noqa: E402
from DeFacerLib.io import read_volume  # noqa: E402
from DeFacerLib.orientation import canonical_reorientation  # noqa: E402

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


def with_ear_reference(table: dict, consensus_path: Path | None) -> dict:
    """The table with each ear's point replaced by the readers' consensus (ear_consensus.json), when
    it has one: the reference for landmark errors, offsets and the ear relief (labels keep the table's)."""
    if consensus_path is None:
        return table
    ears = json.loads(Path(consensus_path).read_text())["ears"]
    reference = {}
    for rel, entry in table.items():
        landmarks = dict(entry["landmarks"])
        for name, agreed in ears.get(rel, {}).items():
            if name in landmarks:
                landmarks[name] = agreed["point_mm"]
        reference[rel] = {**entry, "landmarks": landmarks}
    return reference


def evaluate_head(data: Path, rel: str, table: dict, model: Path | None,
                  parameters: DefaceParameters = DefaceParameters(), reference: dict | None = None) -> dict:
    """One row; ``table`` makes the labels, ``reference`` (default: the table) is what landmarks are measured against."""
    volume = read_volume(data / rel)
    brain = reference_brain(data, rel)
    start = time.perf_counter()
    head = head_mask(volume)
    found = find_features(volume, head=head, model_path=model)
    defaced = deface_volume(volume, found.masks, parameters=parameters, guard=found.guard, head=head,
                            landmarks=found.landmarks)
    seconds = time.perf_counter() - start

    truth = training_labels(volume, table[rel]["landmarks"], brain=brain, head=head)
    entry = (reference or table)[rel]
    changed = np.asarray(defaced.volume.array) != np.asarray(volume.array)
    if changed.ndim == 4:
        changed = changed.any(axis=-1)
    row = {"head": Path(rel).name.split(".")[0], "seconds": round(seconds, 2),
           "brain_voxels_changed": None if brain is None else int(changed[brain].sum()),
           "brain_dice": None if brain is None else _dice(found.masks[BRAIN], brain),
           "features": {}}
    predicted = np.zeros(volume.shape3, np.uint8)
    for feature in FEATURES:
        predicted[found.masks[feature]] = LABEL_VALUES[feature]
    errors = centre_errors_mm(volume, truth, predicted)
    estimates = model_landmarks(volume, predicted)
    relief = ear_relief_mm2(volume, head, defaced.removed, entry["landmarks"])
    ear_print, ear_sunk = ear_print_mm2(volume, head, [volume, defaced.volume], entry["landmarks"])
    for feature in FEATURES:
        labelled = truth == LABEL_VALUES[feature]
        names = [n for n in sorted(entry["landmarks"]) if LANDMARK_FEATURE[n] == feature]
        reported = [found.landmarks.get(n) for n in names]
        row["features"][feature] = {
            "labelled": bool(labelled.any()),
            "labelled_mm3": round(float(labelled.sum() * np.prod(volume.spacing_mm))),
            "found": bool(found.present[feature]),
            "landmark_errors_mm": [round(_distance(r["mm"], entry["landmarks"][n]), 1) if r else float("inf")
                                   for n, r in zip(names, reported)],
            "landmark_by": [r["by"] if r else None for n, r in zip(names, reported)],
            "model_estimate_errors_mm": [round(_distance(estimates[n], entry["landmarks"][n]), 1) if n in estimates
                                         else float("inf") for n in names],
            "centre_errors_mm": [round(e, 1) for e in errors[feature]],
            "dice": _dice(found.masks[feature], labelled) if labelled.any() else None,
            "removed_fraction": round(float(defaced.removed[labelled].mean()), 3) if labelled.any() else None,
            "changed_fraction": round(float(changed[labelled].mean()), 3) if labelled.any() else None,
            "cut_by_field_of_view": any(n in entry.get("cut_by_field_of_view", []) for n in names),
        }
    row["features"]["ears"]["relief_mm2"] = relief
    row["features"]["ears"]["print_mm2"] = ear_print
    row["features"]["ears"]["sunk_mm2"] = {name: areas[0] for name, areas in ear_sunk.items()}
    return row


EAR_RELIEF_MM = 5.0  # the pinna stands 7-24 mm proud of the outline; scalp bumps less
EAR_RELIEF_WINDOW_MM = 35.0  # the concha to the pinna's far rim, at most ~35 mm


def ear_relief_mm2(volume, head: np.ndarray, removed: np.ndarray, landmarks: dict) -> dict[str, list[float]]:
    """{ear: [area before, area after]} (mm^2) of the side view within EAR_RELIEF_WINDOW_MM of the
    ear landmark standing more than EAR_RELIEF_MM proud of the head's outline without the pinna
    (the outline is the original head's in both, so a cut that flattens the pinna shows)."""
    reorientation = canonical_reorientation(volume)
    spacing = np.asarray(volume.spacing_mm, float)[list(reorientation.permutation)]
    head_c = reorientation.apply(head)
    kept_c = head_c & ~reorientation.apply(removed)
    mid_i = midline_index(head_c)
    areas = {}
    for name, side in (("ear_left", 1.0), ("ear_right", -1.0)):
        if name not in landmarks:
            continue
        ear = reorientation.apply_index(volume.world_to_index(np.asarray(landmarks[name], float)[None, :]))[0]
        before = lateral_extent(head_c, side, mid_i)
        outline = head_outline(before, spacing)
        j, k = np.meshgrid(*(np.arange(n) for n in before.shape), indexing="ij")
        window = np.hypot((j - ear[1]) * spacing[1], (k - ear[2]) * spacing[2]) <= EAR_RELIEF_WINDOW_MM
        pixel_mm2 = spacing[1] * spacing[2]
        after = lateral_extent(kept_c, side, mid_i)
        areas[name] = [round(float((((lat - outline) * spacing[0] > EAR_RELIEF_MM) & window & (lat >= 0)).sum() * pixel_mm2))
                       for lat in (before, after)]
    return areas


EAR_PRINT_MM = 3.0  # the renderer's surface standing this far off the head's outline shows
EAR_SUNK_MM = 2.0  # the defaced surface this far under the undefaced one, around the ear, is a sunken floor
EAR_SUNK_RING_MM = (EAR_RELIEF_WINDOW_MM, 60.0)  # past the pinna, inside the ears' reach (box + margin + 15 mm)
EAR_PRINT_CROP_MM = EAR_SUNK_RING_MM[1] + 5.0


def ear_print_mm2(volume, head: np.ndarray, images: list, landmarks: dict) -> tuple[dict, dict]:
    """({ear: [print area (mm^2) per image]}, {ear: sunk area (mm^2) of each image after the first}).

    The print: the side view within EAR_RELIEF_WINDOW_MM of the ear landmark where the skin
    surface of each of ``images`` (``volume`` and its defaced copies, same grid) as the QA
    renderer makes it (qa.render.skin_threshold of ``volume``, 1 mm smoothing) lies more than
    EAR_PRINT_MM above or below the original head's outline without the pinna: the ear's print,
    whatever the removal did to make it. The sunk area: the ring EAR_SUNK_RING_MM around the ear
    landmark where an image's surface lies more than EAR_SUNK_MM under the first image's: a floor
    sunk below the head around the pinna, measured against the head itself, not an outline."""
    from scipy import ndimage as ndi

    from DeFacerLib.qa.render import skin_threshold

    reorientation = canonical_reorientation(volume)
    spacing = np.asarray(volume.spacing_mm, float)[list(reorientation.permutation)]
    head_c = reorientation.apply(head)
    mid_i = midline_index(head_c)
    values_c = [reorientation.apply(image.array[..., 0] if image.array.ndim == 4 else image.array) for image in images]
    threshold = (skin_threshold(volume) - volume.intercept) / volume.slope
    areas, sunk = {}, {}
    pixel_mm2 = spacing[1] * spacing[2]
    for name, side in (("ear_left", 1.0), ("ear_right", -1.0)):
        if name not in landmarks:
            continue
        ear = reorientation.apply_index(volume.world_to_index(np.asarray(landmarks[name], float)[None, :]))[0]
        outline = head_outline(lateral_extent(head_c, side, mid_i), spacing)
        reach = np.ceil(EAR_PRINT_CROP_MM / spacing[1:]).astype(int)
        lo = np.maximum(np.round(ear[1:]).astype(int) - reach, 0)
        hi = np.minimum(np.round(ear[1:]).astype(int) + reach + 1, head_c.shape[1:])
        local_outline = outline[lo[0]:hi[0], lo[1]:hi[1]]
        j, k = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
        distance_mm = np.hypot((j - ear[1]) * spacing[1], (k - ear[2]) * spacing[2])
        window = (distance_mm <= EAR_RELIEF_WINDOW_MM) & (local_outline >= 0)
        ring = (distance_mm > EAR_SUNK_RING_MM[0]) & (distance_mm <= EAR_SUNK_RING_MM[1])
        surfaces = []
        for values in values_c:
            block = values[:, lo[0]:hi[0], lo[1]:hi[1]].astype(np.float32)
            skin = ndi.gaussian_filter(block, np.maximum(1.0 / spacing, 0.8), truncate=2.0) > threshold
            surfaces.append(lateral_extent(skin, side, mid_i))
        areas[name] = [round(float(((np.abs(surface - local_outline) * spacing[0] > EAR_PRINT_MM) & (surface >= 0)
                                    & window).sum() * pixel_mm2)) for surface in surfaces]
        original = surfaces[0]
        sunk[name] = [round(float((((original - surface) * spacing[0] > EAR_SUNK_MM) & (original >= 0) & ring).sum()
                                  * pixel_mm2)) for surface in surfaces[1:]]
    return areas, sunk


def _distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def centroid_offsets(data: Path, heads: list[str], table: dict, model: Path | None = None) -> dict[str, list[float]]:
    """Mean of (U-Net region centroid - verified landmark) per feature over ``heads``, world LPS
    mm, x made lateral-positive for the paired features (model_landmarks with no offsets); and
    "concha_from_bowl": the mean of (verified ear - the ear bowls' centroid) in (posterior,
    superior) mm of the canonical frame (face.concha, searched around the model's ears as shipped)."""
    zero = {feature: (0.0, 0.0, 0.0) for feature in FEATURES}
    offsets: dict[str, list] = {feature: [] for feature in FEATURES}
    from_bowl = []
    for rel in heads:
        volume = read_volume(data / rel)
        head = head_mask(volume)
        labels = segment_features(volume, model_path=model, head=head).labels
        estimates = model_landmarks(volume, labels, offsets_mm=zero)
        for name, point in table[rel]["landmarks"].items():
            if name in estimates:
                offset = estimates[name] - np.asarray(point, float)
                offset[0] *= -1.0 if name.endswith("right") else 1.0
                offsets[LANDMARK_FEATURE[name]].append(offset)
        reorientation = canonical_reorientation(volume)
        spacing_c = np.asarray(volume.spacing_mm, float)[list(reorientation.permutation)]
        for name, bowl in find_conchae(volume, head, model_landmarks(volume, labels), from_bowl_mm=(0.0, 0.0)).items():
            canonical = [reorientation.apply_index(volume.world_to_index(np.asarray(p, float)[None, :]))[0]
                         for p in (table[rel]["landmarks"][name], bowl)]
            from_bowl.append(((canonical[0] - canonical[1]) * spacing_c)[1:])
    result = {feature: [round(float(v), 1) for v in np.mean(values, axis=0)] for feature, values in offsets.items()}
    result["concha_from_bowl"] = [round(float(v), 1) for v in np.mean(from_bowl, axis=0)]
    return result


def _dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    total = int(predicted.sum()) + int(truth.sum())
    return round(2.0 * int((predicted & truth).sum()) / total, 3) if total else 1.0


def summarise(rows: list[dict]) -> dict:
    """Targets of the U-Net issue over all rows: misses, median centre error, removal share, brain."""
    summary = {}
    for feature in FEATURES:
        labelled = [r["features"][feature] for r in rows if r["features"][feature]["labelled"]]
        found = [c for c in labelled if c["found"]]
        cells = [c for c in labelled if not c.get("cut_by_field_of_view")]  # the shares: whole features only
        errors = [e for c in found for e in c["landmark_errors_mm"]]
        summary[feature] = {
            "heads": len(labelled),
            "missed": sum(not c["found"] for c in labelled),
            "median_landmark_error_mm": _median([e for c in found for e in c["landmark_errors_mm"]]),
            "median_model_estimate_error_mm": _median([e for c in found for e in c["model_estimate_errors_mm"]]),
            "median_centre_error_mm": _median([e for c in found for e in c["centre_errors_mm"]]),
            "landmarks_snapped": f"{sum(b == 'anatomy' for c in found for b in c['landmark_by'])}/{len(errors)}",
            "median_dice": round(float(np.median([c["dice"] for c in cells])), 3) if cells else None,
            "min_removed_fraction": min((c["removed_fraction"] for c in cells), default=None),
            "median_removed_fraction": round(float(np.median([c["removed_fraction"] for c in cells])), 3) if cells else None,
            "pooled_removed_fraction": round(sum(c["removed_fraction"] * c["labelled_mm3"] for c in cells)
                                             / sum(c["labelled_mm3"] for c in cells), 3) if cells else None,
        }
    relief = [a for r in rows for a in r["features"]["ears"].get("relief_mm2", {}).values()]
    summary["ears"]["median_relief_before_mm2"] = round(float(np.median([a[0] for a in relief]))) if relief else None
    summary["ears"]["median_relief_after_mm2"] = round(float(np.median([a[1] for a in relief]))) if relief else None
    summary["ears"]["max_relief_after_mm2"] = max((a[1] for a in relief), default=None)
    prints = [a for r in rows for a in r["features"]["ears"].get("print_mm2", {}).values()]
    summary["ears"]["median_print_before_mm2"] = round(float(np.median([a[0] for a in prints]))) if prints else None
    summary["ears"]["median_print_after_mm2"] = round(float(np.median([a[1] for a in prints]))) if prints else None
    summary["ears"]["max_print_after_mm2"] = max((a[1] for a in prints), default=None)
    sunk = [a for r in rows for a in r["features"]["ears"].get("sunk_mm2", {}).values()]
    summary["ears"]["median_sunk_mm2"] = round(float(np.median(sunk))) if sunk else None
    summary["ears"]["max_sunk_mm2"] = max(sunk, default=None)
    changed = [r["brain_voxels_changed"] for r in rows if r["brain_voxels_changed"] is not None]
    summary["brain_voxels_changed_max"] = max(changed) if changed else None
    summary["median_seconds"] = round(float(np.median([r["seconds"] for r in rows])), 2)
    return summary


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 1) if values else None


def markdown(rows: list[dict], summary: dict) -> str:
    lines = ["| head | " + " | ".join(f"{f}: found, landmark error mm, Dice, removed" for f in FEATURES)
             + " | brain changed | s |", "|---" * (len(FEATURES) + 3) + "|"]
    for row in rows:
        cells = []
        for feature in FEATURES:
            c = row["features"][feature]
            if not c["labelled"]:
                cells.append("not in scan" + (" (found!)" if c["found"] else ""))
                continue
            error = "/".join(f"{e:.1f}{(b or '-')[0]}" for e, b in zip(c["landmark_errors_mm"], c["landmark_by"])) or "-"
            cut = " (cut by the field of view)" if c.get("cut_by_field_of_view") else ""
            cells.append(f"{'yes' if c['found'] else '**MISS**'}, {error}, {c['dice']:.2f}, {c['removed_fraction']:.0%}{cut}")
        brain = "n/a" if row["brain_voxels_changed"] is None else str(row["brain_voxels_changed"])
        lines.append(f"| {row['head']} | " + " | ".join(cells) + f" | {brain} | {row['seconds']:.1f} |")
    lines += ["", "| feature | heads | missed | median landmark error (mm) | snapped to the anatomy | model's estimate alone (mm) "
              "| region centroids (mm) | median Dice | removed (min / median) |", "|---|---|---|---|---|---|---|---|---|"]
    for feature in FEATURES:
        s = summary[feature]
        lines.append(f"| {feature} | {s['heads']} | {s['missed']} | {s['median_landmark_error_mm']} | {s['landmarks_snapped']} | "
                     f"{s['median_model_estimate_error_mm']} | {s['median_centre_error_mm']} | {s['median_dice']} | "
                     f"{s['min_removed_fraction']:.0%} / {s['median_removed_fraction']:.0%} |")
    partial = [f"{row['head']} {feature}" for row in rows for feature in FEATURES
               if row["features"][feature].get("cut_by_field_of_view")]
    if partial:
        lines.append("\nLeft out of the removed shares (min / median / pooled): " + ", ".join(partial)
                     + ": the field of view cuts the feature, so its landmark is the last point in view and "
                     "the label, shaped for a whole feature, lies off it (landmarks.json, cut_by_field_of_view)")
    lines.append("\nRemoved, pooled over every head's labelled volume (mm^3): " + ", ".join(
        f"{feature} {summary[feature]['pooled_removed_fraction']:.1%}" for feature in FEATURES
        if summary[feature]["pooled_removed_fraction"] is not None))
    ears = summary["ears"]
    if ears.get("median_relief_before_mm2") is not None:
        lines.append(f"\nEar relief standing > {EAR_RELIEF_MM:g} mm within {EAR_RELIEF_WINDOW_MM:g} mm of the concha (mm^2): "
                     f"median {ears['median_relief_before_mm2']} before, {ears['median_relief_after_mm2']} after "
                     f"(worst ear after: {ears['max_relief_after_mm2']})")
    if ears.get("median_print_before_mm2") is not None:
        lines.append(f"\nEar print, the rendered surface more than {EAR_PRINT_MM:g} mm off the head's outline within "
                     f"{EAR_RELIEF_WINDOW_MM:g} mm of the concha (mm^2): median {ears['median_print_before_mm2']} undefaced, "
                     f"{ears['median_print_after_mm2']} defaced (worst ear defaced: {ears['max_print_after_mm2']})")
    if ears.get("median_sunk_mm2") is not None:
        lines.append(f"\nEar floor sunk, the defaced rendered surface more than {EAR_SUNK_MM:g} mm under the undefaced "
                     f"one {EAR_SUNK_RING_MM[0]:g}-{EAR_SUNK_RING_MM[1]:g} mm from the concha (mm^2): median "
                     f"{ears['median_sunk_mm2']}, worst ear {ears['max_sunk_mm2']}")
    lines.append(f"\nReference-brain voxels changed, worst head: {summary['brain_voxels_changed_max']}; "
                 f"median seconds per head: {summary['median_seconds']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("heads", nargs="*", help="data-relative head paths (default: the validation split)")
    parser.add_argument("--model", type=Path, default=None, help="face_unet.onnx to evaluate (default: shipped)")
    parser.add_argument("--split", type=Path, default=REPO / "scripts" / "training" / "split.json")
    parser.add_argument("--landmarks", type=Path, default=REPO / "scripts" / "training" / "landmarks.json")
    parser.add_argument("--ears", type=Path, default=REPO / "scripts" / "training" / "ear_consensus.json",
                        help="the ears' reference (annotate_ears.py agree); 'none': the table's ear points")
    parser.add_argument("--json", type=Path, default=None, help="also write rows and summary here")
    parser.add_argument("--margin-mm", type=float, default=None, help="removal margin (default: the engine's)")
    parser.add_argument("--all-ixi", action="store_true", help="all 27 IXI heads (training ones too: a brain-safety check)")
    parser.add_argument("--offsets", action="store_true",
                        help="print the U-Net centroids' mean offsets from the landmarks over the training split")
    args = parser.parse_args(argv)

    data = data_dir()
    table = load_landmarks(args.landmarks)
    reference = with_ear_reference(table, None if str(args.ears) == "none" else args.ears)
    heads = args.heads or json.loads(args.split.read_text())["validation"]
    if args.all_ixi:
        heads = sorted(rel for rel in table if rel.startswith("heads/ixi/"))
    if args.offsets:
        training = args.heads or json.loads(args.split.read_text())["training"]
        print(json.dumps(centroid_offsets(data, training, reference, args.model)))
        return 0
    parameters = DefaceParameters(margin_mm=args.margin_mm)
    rows = []
    for rel in heads:
        rows.append(evaluate_head(data, rel, table, args.model, parameters, reference))
        print(f"{rows[-1]['head']}: {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    summary = summarise(rows)
    print(markdown(rows, summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
