#!/usr/bin/env python3
"""Re-identification study: can face recognition still tell who a defaced head is?

    python scripts/reid_study.py ../shared/data/heads/ixi --markdown docs/reid_study.md

Every original head is rendered (gallery: the front view) and so is every defaced head
(probes: the two 45-degree oblique views), with DeFacer (run here through its CLI with its
default parameters, end to end: the U-Net finds the features), with
quickshear (PyPI, in its own venv, given each head's brain mask) and with any other tool's
outputs given as ``--defaced NAME=DIR`` (same file names as the originals).

Two attackers, two recognisers (SFace, dlib ResNet):
- naive: probe = defaced oblique render, gallery = ORIGINAL front renders; a probe whose face
  no detector finds cannot be identified.
- adaptive: gallery defaced the same way; both gallery and probe faces are cut where the
  original face was (the renderer is the attacker's own), so a missing detection does not help.
  Two galleries: the very scan the probe was made from (same scan: the degenerate upper bound;
  an attacker who holds the identified scan itself needs no face to match it), and a second
  acquisition of each person (rescan: the attacker's own identified scans, defaced the same
  way). IXI has one T1 per person, so the rescan is simulated (``simulate_rescan``): the head
  lies differently (up to 5 degrees about each axis, 4 mm off), is sampled again on the same
  grid, with fresh noise at the image's own level and another receiver gain; the original row
  shows how well undefaced rescans still identify.
- adaptive, cohort crop: the same two galleries, but every face is cut where the faces of the
  attacker's identified (undefaced) gallery sit on average in that view. The crop above is
  placed and scaled by the probe's own original eyes and mouth, which an attacker holding only
  the defaced probe does not have (the original face's geometry leaks into the crop); this one
  knows nothing of the probe but the renderer's framing, which places every head alike.
Reported: face detection rate on front renders before/after, rank-1 and rank-5 identification
accuracy next to chance (1/N, 5/N). The undefaced row (original oblique probes against the
original front gallery) shows the renderer is good enough to be an attacker.

Cross-view match thresholds are calibrated here too: the published photo thresholds call
different people's renders a match, so a front render and an oblique one "match" only when they
are closer than 99 % of different-person front-vs-oblique pairs of original renders. They are
written with ``--thresholds-out`` (Resources/QA/render_match_thresholds.json ships the IXI
calibration). `defacer qa` compares the same view of two heads instead, and uses its own
per-view thresholds (scripts/calibrate_pair_check.py), falling back to these.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ixi_layout import brain_labels_of  # noqa: E402
from markdown_out import publish  # noqa: E402
from peers import peer_venv  # noqa: E402

from DeFacerLib.io import read_volume  # noqa: E402
from DeFacerLib.qa import face_direction, render_views  # noqa: E402
from DeFacerLib.qa.check import impostor_threshold  # noqa: E402
from DeFacerLib.qa.render import FaceBox  # noqa: E402
from DeFacerLib.qa.recognize import FACE_PRESENT_SCORE, MODELS, best_face, describe, detect_faces_dlib, similarity  # noqa: E402

GALLERY_VIEW = "front"
PROBE_VIEWS = ("front_left", "front_right")
VIEWS = (GALLERY_VIEW, *PROBE_VIEWS)
QUICKSHEAR = "quickshear==1.2.0"
RESCAN_ROTATION_DEG = 5.0  # about each axis, uniform in +-: how differently a head lies in a second session
RESCAN_SHIFT_MM = 4.0
RESCAN_GAIN = (0.9, 1.1)
RESCAN_SEED = 20261205


def brain_mask_for(t1: Path, heads_dir: Path) -> Path | None:
    mask = brain_labels_of(t1, heads_dir)
    return mask if mask.exists() else None


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def simulate_rescan(head: Path, brain: Path | None, out_dir: Path, seed: int) -> Path:
    """A second acquisition of the same person (see the module docstring), written with the same
    grid, header and dtype as ``head`` to ``out_dir/t1``; its brain mask, moved the same way, to
    ``out_dir/brain_labels`` (quickshear needs one)."""
    import nibabel as nib
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    image = nib.load(str(head))
    data = np.asarray(image.dataobj.get_unscaled(), dtype=np.float64)  # stored values: the header's scaling stays
    affine = image.affine
    centre = affine[:3, :3] @ ((np.asarray(data.shape[:3]) - 1) / 2) + affine[:3, 3]
    rotation = _rotation(np.deg2rad(rng.uniform(-RESCAN_ROTATION_DEG, RESCAN_ROTATION_DEG, 3)))
    shift = rng.uniform(-RESCAN_SHIFT_MM, RESCAN_SHIFT_MM, 3)
    inverse = np.eye(4)  # world -> world: where each new position was in the first session
    inverse[:3, :3] = rotation.T
    inverse[:3, 3] = rotation.T @ (-centre - shift) + centre
    index_map = np.linalg.inv(affine) @ inverse @ affine
    corners = np.concatenate([data[:8, :8, :8].ravel(), data[-8:, -8:, -8:].ravel()])
    sigma = float(np.mean(corners)) / np.sqrt(np.pi / 2) if np.mean(corners) > 0 else 1.0  # Rayleigh background
    moved = ndi.affine_transform(data, index_map[:3, :3], offset=index_map[:3, 3], order=1, cval=0.0)
    moved *= rng.uniform(*RESCAN_GAIN)
    noisy = np.hypot(moved + rng.normal(0, sigma, moved.shape), rng.normal(0, sigma, moved.shape))
    dtype = image.get_data_dtype()
    if np.issubdtype(dtype, np.integer):
        noisy = np.clip(np.round(noisy), np.iinfo(dtype).min, np.iinfo(dtype).max)
    target = out_dir / "t1" / head.name
    target.parent.mkdir(parents=True, exist_ok=True)
    rescan = nib.Nifti1Image(noisy.astype(dtype), affine, image.header.copy())
    rescan.header.set_slope_inter(image.dataobj.slope, image.dataobj.inter)
    nib.save(rescan, str(target))
    if brain is not None:
        labels = nib.load(str(brain))
        moved_labels = ndi.affine_transform(np.asanyarray(labels.dataobj), index_map[:3, :3], offset=index_map[:3, 3],
                                            order=0, cval=0)
        mask_target = out_dir / "brain_labels" / brain.name
        mask_target.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(moved_labels, labels.affine, labels.header), str(mask_target))
    return target


def render_head(path: Path, face=None) -> tuple[dict, np.ndarray]:
    volume = read_volume(path)
    face = face_direction(volume) if face is None else face
    return render_views(volume, views=VIEWS, size=(400, 400), face=face), face


def descriptors(images: dict, reference_faces: dict) -> dict:
    """Per view: detection (YuNet score, dlib count), descriptors of the detected face, and
    descriptors cut where the ORIGINAL's face was (reference_faces, None for originals)."""
    out = {}
    for view, image in images.items():
        face = best_face(image)
        entry = {"score": face.score if face else 0.0, "dlib_faces": len(detect_faces_dlib(image)),
                 "detected": describe(image, face) if face else None}
        reference = reference_faces.get(view) if reference_faces else face
        entry["forced"] = describe(image, reference) if reference is not None else None
        entry["face"] = face
        entry["image"] = image  # kept for the cohort crop, placed once every original is seen
        out[view] = entry
    return out


def cohort_faces(originals: list[dict]) -> dict:
    """Per view, the mean face box and landmarks of the detected faces on the original renders:
    where a face sits in that view when the renderer frames a head, knowing no one head."""
    faces = {}
    for view in VIEWS:
        found = [o[view]["face"] for o in originals if o[view]["face"] is not None]
        faces[view] = FaceBox(x=float(np.mean([f.x for f in found])), y=float(np.mean([f.y for f in found])),
                              width=float(np.mean([f.width for f in found])),
                              height=float(np.mean([f.height for f in found])), score=1.0,
                              landmarks=np.mean([f.landmarks for f in found], axis=0))
    return faces


def add_cohort_crops(entries: list[dict | None], faces: dict) -> None:
    """In place: each entry's descriptors cut at the cohort's face (``cohort``); frees the image."""
    for entry in entries:
        for view in VIEWS if entry is not None else ():
            entry[view]["cohort"] = describe(entry[view].pop("image"), faces[view])


def ranks(gallery: list[dict | None], probes: list[dict | None], model: str) -> list[float]:
    """Rank (1 = best) of the true identity for each probe; inf when the probe has no descriptor."""
    result = []
    for index, probe in enumerate(probes):
        if probe is None or gallery[index] is None:
            result.append(float("inf"))
            continue
        scores = []
        for entry in gallery:
            value = similarity(probe[model], entry[model]) if entry is not None else None
            if value is None:
                scores.append(-np.inf)
            else:
                scores.append(value if model == "sface" else -value)  # higher = more alike
        order = np.argsort(-np.asarray(scores))
        result.append(float(int(np.where(order == index)[0][0]) + 1))
    return result


def identification(gallery, probes_by_view, model) -> tuple[float, float]:
    all_ranks = [r for probes in probes_by_view for r in ranks(gallery, probes, model)]
    rank_array = np.asarray(all_ranks)
    return float(np.mean(rank_array <= 1)), float(np.mean(rank_array <= 5))


def calibrate(originals: list[dict]) -> dict:
    """Different-person (impostor) and same-person (genuine) scores, front gallery vs oblique probes."""
    thresholds = {}
    for model in MODELS:
        impostor, genuine = [], []
        for i, gallery in enumerate(originals):
            g = gallery[GALLERY_VIEW]["detected"]
            for j, probe_head in enumerate(originals):
                for view in PROBE_VIEWS:
                    p = probe_head[view]["detected"]
                    if g is None or p is None:
                        continue
                    (genuine if i == j else impostor).append(similarity(g[model], p[model]))
        impostor, genuine = np.asarray(impostor), np.asarray(genuine)
        cut = impostor_threshold(model, impostor)
        if model == "sface":
            accept = float(np.mean(genuine >= cut))
            rule = "cosine similarity >= threshold is a match"
        else:
            accept = float(np.mean(genuine <= cut))
            rule = "distance <= threshold is a match"
        thresholds[model] = {"threshold": round(cut, 4), "rule": rule, "impostor_pairs": int(impostor.size),
                             "genuine_pairs": int(genuine.size), "genuine_match_rate": round(accept, 4)}
    return thresholds


def run_defacer(heads: list[Path], heads_dir: Path, out: Path, extra: list[str] = (), reuse: bool = False) -> dict[str, Path]:
    """DeFacer through its CLI with default parameters, end to end: the shipped U-Net finds the
    features and the brain itself (no reference mask, no landmarks)."""
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for head in heads:
        target = out / head.name
        if not (reuse and target.exists()):  # outputs of older code must not stand in for this run's
            subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(head), str(target), "-q",
                            "--overwrite", *extra], check=True)
        result[head.name] = target
    return result


def run_quickshear(heads: list[Path], heads_dir: Path, out: Path) -> dict[str, Path]:
    binary = peer_venv("quickshear", [QUICKSHEAR]) / "quickshear"
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for head in heads:
        mask = brain_mask_for(head, heads_dir)
        if mask is None:
            continue
        target = out / head.name
        if not target.exists():
            subprocess.run([str(binary), str(head), str(mask), str(target)], check=True, capture_output=True)
        result[head.name] = target
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("heads_dir", type=Path, help="folder of heads (IXI layout: t1/ and brain_labels/)")
    parser.add_argument("--defaced", action="append", default=[], metavar="NAME=DIR", help="another tool's outputs")
    parser.add_argument("--no-defacer", action="store_true")
    parser.add_argument("--defacer-arg", action="append", default=[], metavar="ARG",
                        help="extra `defacer deface` argument for DeFacer's row (repeat), e.g. --defacer-arg=--margin-mm=20")
    parser.add_argument("--no-quickshear", action="store_true")
    parser.add_argument("--limit", type=int, help="only the first N heads")
    parser.add_argument("--work", type=Path, default=Path("build/reid_study"), help="folder for the defaced heads")
    parser.add_argument("--reuse", action="store_true",
                        help="keep DeFacer outputs already in --work (default: deface again, so no older code's output is measured)")
    parser.add_argument("--no-rescan", action="store_true", help="leave out the rescan attacker (faster)")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--thresholds-out", type=Path)
    args = parser.parse_args()

    t1_dir = args.heads_dir / "t1" if (args.heads_dir / "t1").is_dir() else args.heads_dir
    heads = sorted(t1_dir.glob("*.nii*"))[: args.limit]
    started = time.perf_counter()
    tools: dict[str, dict[str, Path]] = {}
    rescan_tools: dict[str, dict[str, Path]] = {}  # the same tools on the rescans
    rescan_dir = args.work / "rescans"
    rescans = [] if args.no_rescan else [
        simulate_rescan(head, brain_mask_for(head, args.heads_dir), rescan_dir, RESCAN_SEED + index)
        for index, head in enumerate(heads)]
    if not args.no_defacer:
        label = "DeFacer (default features, U-Net" + (", " + " ".join(args.defacer_arg) if args.defacer_arg else "") + ")"
        work = args.work / ("defacer" + "".join(a.strip("-").replace("=", "") for a in args.defacer_arg))
        tools[label] = run_defacer(heads, args.heads_dir, work, args.defacer_arg, reuse=args.reuse)
        if rescans:
            rescan_tools[label] = run_defacer(rescans, rescan_dir, work.with_name(work.name + "_rescans"),
                                              args.defacer_arg, reuse=args.reuse)
    if not args.no_quickshear:
        tools["quickshear 1.2.0"] = run_quickshear(heads, args.heads_dir, args.work / "quickshear")
        if rescans:
            rescan_tools["quickshear 1.2.0"] = run_quickshear(rescans, rescan_dir, args.work / "quickshear_rescans")
    for spec in args.defaced:
        name, folder = spec.split("=", 1)
        tools[name] = {h.name: Path(folder) / h.name for h in heads if (Path(folder) / h.name).exists()}

    originals, faces = [], []
    for head in heads:
        images, face = render_head(head)
        originals.append(descriptors(images, None))
        faces.append(face)
    rescan_originals, rescan_faces = [], []  # the attacker's own identified scans, undefaced
    for rescan in rescans:
        images, face = render_head(rescan)
        rescan_originals.append(descriptors(images, None))
        rescan_faces.append(face)
    n = len(heads)
    thresholds = calibrate(originals)
    cohort = cohort_faces(originals)  # the attacker's gallery: the originals (the rescans frame alike)
    add_cohort_crops(originals, cohort)
    add_cohort_crops(rescan_originals, cohort)

    rows = []
    original_gallery = [o[GALLERY_VIEW]["detected"] for o in originals]

    def row(name, entries, naive_probes, adaptive_gallery, adaptive_probes, rescan_gallery=None, cohort_sets=None):
        front_detect = float(np.mean([e[GALLERY_VIEW]["score"] >= FACE_PRESENT_SCORE for e in entries]))
        dlib_detect = float(np.mean([e[GALLERY_VIEW]["dlib_faces"] > 0 for e in entries]))
        figures = {"tool": name, "heads": len(entries), "yunet_front_detection": front_detect,
                   "dlib_front_detection": dlib_detect}
        for model in MODELS:
            figures[f"naive_{model}"] = identification(original_gallery, naive_probes, model)
            figures[f"adaptive_{model}"] = identification(adaptive_gallery, adaptive_probes, model)
            figures[f"rescan_{model}"] = identification(rescan_gallery, adaptive_probes, model) if rescan_gallery else None
            gallery, rescan, probes = cohort_sets
            figures[f"cohort_{model}"] = identification(gallery, probes, model)
            figures[f"cohort_rescan_{model}"] = identification(rescan, probes, model) if rescan else None
        rows.append(figures)

    def defaced_entries(outputs, sources, source_faces, source_originals):
        entries = []
        for index, source in enumerate(sources):
            path = outputs.get(source.name)
            if path is None:
                entries.append(None)
                continue
            images, _ = render_head(path, face=source_faces[index])
            reference = {view: source_originals[index][view]["face"] for view in VIEWS}
            entries.append(descriptors(images, reference))
        add_cohort_crops(entries, cohort)
        return entries

    def cohort_sets(entries, rescan_entries):
        """(gallery, rescan gallery, probes by view) of the cohort-crop attacker."""
        gallery = [e[GALLERY_VIEW]["cohort"] if e else None for e in entries]
        rescan = [e[GALLERY_VIEW]["cohort"] if e else None for e in rescan_entries] if rescan_entries else None
        return gallery, rescan, [[e[v]["cohort"] if e else None for e in entries] for v in PROBE_VIEWS]

    row("original (no defacing)", originals,
        [[o[v]["detected"] for o in originals] for v in PROBE_VIEWS],
        original_gallery, [[o[v]["detected"] for o in originals] for v in PROBE_VIEWS],
        [o[GALLERY_VIEW]["detected"] for o in rescan_originals] if rescans else None,
        cohort_sets(originals, rescan_originals))
    for name, outputs in tools.items():
        entries = defaced_entries(outputs, heads, faces, originals)
        rescan_gallery, rescan_entries = None, None
        if name in rescan_tools:
            rescan_entries = defaced_entries(rescan_tools[name], rescans, rescan_faces, rescan_originals)
            rescan_gallery = [e[GALLERY_VIEW]["forced"] if e else None for e in rescan_entries]
        present = [e for e in entries if e is not None]
        row(name, present,
            [[e[v]["detected"] if e else None for e in entries] for v in PROBE_VIEWS],
            [e[GALLERY_VIEW]["forced"] if e else None for e in entries],
            [[e[v]["forced"] if e else None for e in entries] for v in PROBE_VIEWS],
            rescan_gallery, cohort_sets(entries, rescan_entries))

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Re-identification study: skin renders against face recognition",
        "",
        f"- Date: {now}; machine: {os.cpu_count()} cores, {platform.machine()}; {n} heads from "
        f"`{args.heads_dir.name}`; {time.perf_counter() - started:.0f} s in all",
        "- Gallery: front renders; probes: both 45-degree oblique renders (2 probes per head); "
        f"chance: rank-1 {1 / n:.3f}, rank-5 {min(1.0, 5 / n):.3f}",
        "- Naive attacker: original gallery, probes need a detected face. Adaptive attacker: gallery "
        "defaced the same way, faces cut where the original face was (no detection needed); its gallery "
        "is the probe's own scan (same scan) or a second acquisition of each person (rescan, simulated: "
        f"up to {RESCAN_ROTATION_DEG:g} degrees and {RESCAN_SHIFT_MM:g} mm moved, resampled, fresh noise, "
        f"gain {RESCAN_GAIN[0]:g}-{RESCAN_GAIN[1]:g}, seed {RESCAN_SEED}). Cohort crop: the same attacker "
        "with every face cut where the original gallery's faces sit on average in that view (nothing of the "
        "probe's own original).",
        "",
        "| heads | YuNet face on front | dlib face on front | naive SFace r1 / r5 | naive dlib r1 / r5 "
        "| adaptive, same scan: SFace r1 / r5 | adaptive, same scan: dlib r1 / r5 "
        "| adaptive, rescan: SFace r1 / r5 | adaptive, rescan: dlib r1 / r5 "
        "| adaptive, cohort crop, same scan: SFace r1 / r5 | adaptive, cohort crop, same scan: dlib r1 / r5 "
        "| adaptive, cohort crop, rescan: SFace r1 / r5 | adaptive, cohort crop, rescan: dlib r1 / r5 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [f"{r[k][0]:.2f} / {r[k][1]:.2f}" if r[k] else "n/a"
                 for k in ("naive_sface", "naive_dlib", "adaptive_sface", "adaptive_dlib", "rescan_sface", "rescan_dlib",
                           "cohort_sface", "cohort_dlib", "cohort_rescan_sface", "cohort_rescan_dlib")]
        lines.append(f"| {r['tool']} ({r['heads']}) | {r['yunet_front_detection']:.2f} | "
                     f"{r['dlib_front_detection']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Render match thresholds calibrated on the original renders (1 % of different-person "
              "pairs match):", ""]
    for model, entry in thresholds.items():
        lines.append(f"- {model}: {entry['rule'].replace('threshold', str(entry['threshold']))}; same-person "
                     f"oblique-vs-front pairs matching at it: {entry['genuine_match_rate']:.2f} "
                     f"({entry['genuine_pairs']} genuine, {entry['impostor_pairs']} impostor pairs)")
    publish(lines, args.markdown)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "thresholds": thresholds}, indent=1))
    if args.thresholds_out:
        args.thresholds_out.parent.mkdir(parents=True, exist_ok=True)
        args.thresholds_out.write_text(json.dumps({"calibrated_on": f"{n} heads of {args.heads_dir.name}, {now}",
                                                   "models": thresholds}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
