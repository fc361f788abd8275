#!/usr/bin/env python
"""Measure DeFacer's photo anonymizer against face recognition, and side by side with `deface`.

What it measures (figures go to build/benchmarks/photo.md, a section for docs/benchmarks.md, and, with --json, to a JSON file):
1. detection recall and false positives on the 43 hand-labelled faces of dlib_faces/
   (training.xml + testing.xml), IoU >= 0.5, for YuNet, dlib HOG, dlib MMOD and deface's CenterFace;
   also with every detector's boxes made square (same centre and area), since the labels are
   dlib's square boxes and YuNet's/CenterFace's are taller, and with YuNet's boxes mapped to
   dlib's convention (Face.dlib_xyxy, constants fitted on other photos: detect.py);
2. re-identification on known_people/knn_examples: rank-1 identification and verification at
   each recogniser's own threshold (SFace cosine >= 0.363, dlib ResNet distance <= 0.6), for
   originals and every method, under a naive attacker (gallery = original train photos, probe =
   anonymized test photos) and an adaptive one (gallery anonymized the same way), next to chance
   (1/N). The attacker is told where each face was (the original's box and 5 points), the
   strongest assumption; ties between identities count as a fractional hit;
3. how often a face detector still finds a face in the anonymized outputs;
4. speed: the 10 s, 640x360 clip end to end (decode, detect, obscure, encode, audio copy),
   DeFacer and deface in the same run; camera mode on a 4:3 camera's 640x480 frames (the clip's
   frames letterboxed, as a 16:9 camera fitted within 640x480 gives only 640x360).

deface (ORB-HD, PyPI deface==1.5.0) runs in its own virtual environment (created by
--make-peer-venv under build/deface-venv, or given with --peer-python).

usage: python scripts/evaluate_photo.py [--data ../shared/data] [--out build/benchmarks/photo.md]
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DeFacerLib.photo.anonymize import DETECT_SIDE_CAMERA_PX, PhotoOptions, frame_processor  # noqa: E402
from DeFacerLib.photo.camera import run_stream  # noqa: E402
from DeFacerLib.photo.detect import box_iou, detect_faces, match_boxes, read_labelled_boxes  # noqa: E402
from DeFacerLib.photo.identity import descriptor, distance, match_distance  # noqa: E402
from DeFacerLib.photo.ksame import k_same  # noqa: E402
from DeFacerLib.photo.landmarks import add_landmarks  # noqa: E402
from DeFacerLib.photo.media import open_video, probe, read_image  # noqa: E402
from DeFacerLib.photo.obscure import obscure_faces  # noqa: E402

PEER_VENV = REPO / "build" / "deface-venv"
PEER_VERSION = "1.5.0"
# who is in each test photo (file stem -> people); faces are assigned to them by recognition
TEST_PEOPLE = {
    "alex_lacamoire1": ["alex_lacamoire"],
    "johnsnow_test1": ["kit_harington"],
    "kit_with_rose": ["kit_harington", "rose_leslie"],
    "obama1": ["obama"],
    "obama_and_biden": ["obama", "biden"],
}
# label -> (method, region); region None = the method's own
METHODS = {
    "original": ("original", None), "bar": ("bar", None),
    "pixelate face": ("pixelate", "face"), "blur face": ("blur", "face"), "fill face": ("fill", "face"),
    "pixelate head": ("pixelate", "head"), "blur head": ("blur", "head"), "fill head": ("fill", "head"),
    "ksame face": ("ksame", "5 face feather"), "ksame head": ("ksame", "5 head feather"),
    "ksame head poisson": ("ksame", "5 head poisson"), "ksame68 head": ("ksame", "68 head feather"),
    "deface": ("deface", None),
}
RECOGNISERS = ("sface", "dlib")

PEER_CODE = r'''
import json, sys, time
import numpy as np, imageio.v2 as iio
from deface.centerface import CenterFace
from deface.deface import anonymize_frame
spec = json.load(open(sys.argv[1]))
cf = CenterFace(in_shape=None, backend="auto")
out = {"backend": cf.backend, "items": {}}
for item in spec["items"]:
    frame = np.asarray(iio.imread(item["input"]))
    if frame.ndim == 2: frame = np.stack([frame] * 3, -1)
    frame = np.ascontiguousarray(frame[..., :3])
    t = time.perf_counter(); dets, _ = cf(frame, threshold=spec["threshold"]); dt = time.perf_counter() - t
    if item.get("output"):
        anonymize_frame(dets, frame, mask_scale=1.3, replacewith="blur", ellipse=True, draw_scores=False,
                        replaceimg=None, mosaicsize=20)
        iio.imwrite(item["output"], frame)
    out["items"][item["input"]] = {"dets": np.asarray(dets).tolist(), "seconds": dt}
json.dump(out, open(sys.argv[2], "w"))
'''


# ---- helpers ----------------------------------------------------------------------------------
def square(box):
    """The square of the same centre and area as (x0, y0, x1, y1)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = np.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def peer_python(args) -> Path | None:
    python = Path(args.peer_python) if args.peer_python else PEER_VENV / "bin" / "python"
    if not python.exists() and args.make_peer_venv:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", f"deface=={PEER_VERSION}"], check=True)
    return python if python.exists() else None


def run_peer(python: Path, items: list[dict], threshold: float = 0.2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"items": items, "threshold": threshold}))
        subprocess.run([str(python), "-c", PEER_CODE, str(spec), str(result)], check=True)
        return json.loads(result.read_text())


def fmt(value, digits=2):
    return "n/a" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


# ---- 1. detection -------------------------------------------------------------------------------
def evaluate_detection(data: Path, peer: Path | None) -> dict:
    folder = data / "photos" / "dlib_faces"
    truth = {}
    for name in ("training.xml", "testing.xml"):
        truth.update(read_labelled_boxes(folder / name))
    images = {name: read_image(folder / name) for name in truth}
    total = sum(len(b) for b in truth.values())
    rows = {}
    for detector, threshold in (("yunet", None), ("yunet", 0.7), ("hog", None), ("mmod", None)):
        faces, seconds = {}, 0.0
        for name, image in images.items():
            started = time.perf_counter()
            faces[name] = detect_faces(image, detector, threshold)
            seconds += time.perf_counter() - started
        label = f"DeFacer {detector}" + ("" if threshold is None else f" (score >= {threshold})")
        rows[label] = _score_boxes(truth, {n: [f.xyxy for f in v] for n, v in faces.items()}, seconds, len(images),
                                   {n: [f.dlib_xyxy for f in v] for n, v in faces.items()})
    if peer is not None:
        result = run_peer(peer, [{"input": str(folder / name)} for name in truth])
        found = {Path(k).name: [d[:4] for d in v["dets"]] for k, v in result["items"].items()}
        seconds = sum(v["seconds"] for v in result["items"].values())
        rows[f"deface {PEER_VERSION} CenterFace (thresh 0.2, {result['backend']})"] = _score_boxes(truth, found, seconds, len(images))
    # dogs.jpg has no human faces: every detection there is a false positive
    dogs = read_image(folder / "dogs.jpg")
    return {"faces": total, "images": len(images), "rows": rows,
            "dogs_false_positives_yunet": len(detect_faces(dogs))}


def _score_boxes(truth, found, seconds, count, found_dlib=None) -> dict:
    """Recall and false positives with the detector's boxes, made square, and in dlib's convention."""
    total = sum(len(b) for b in truth.values())
    row = {"ms_per_image": 1000 * seconds / count}
    variants = {"": found, "_square": {n: [square(f) for f in v] for n, v in found.items()}, "_dlib": found_dlib or found}
    for suffix, boxes_by_name in variants.items():
        tp = fp = 0
        for name, boxes in truth.items():
            a, b = match_boxes(boxes, boxes_by_name.get(name, []))
            tp, fp = tp + a, fp + b
        row.update({f"tp{suffix}": tp, f"fp{suffix}": fp, f"recall{suffix}": tp / total})
    return row


# ---- 2. recognition -------------------------------------------------------------------------------
def load_set(paths, landmarks="5"):
    images = [read_image(p) for p in paths]
    faces = [add_landmarks(im, detect_faces(im), landmarks) for im in images]
    return images, faces


def test_targets(test_paths, test_faces, test_images, gallery):
    """(image index, face index, person) for the named people of each test photo, by SFace."""
    targets = []
    for i, path in enumerate(test_paths):
        people = TEST_PEOPLE[path.stem]
        faces = test_faces[i]
        cost = np.array([[min(distance(descriptor(test_images[i], f), g) for g, who in gallery["sface"] if who == person)
                          for person in people] for f in faces])
        best = None
        for chosen in itertools.permutations(range(len(faces)), len(people)):
            total = sum(cost[f, p] for p, f in enumerate(chosen))
            if best is None or total < best[0]:
                best = (total, chosen)
        for p, f in enumerate(best[1]):
            targets.append((i, f, people[p]))
    return targets


def anonymized_sets(label, sets, peer, workdir, filled: set | None = None):
    """{name: list of anonymized images} for the train and test sets with one method; k-Same's
    faces filled instead of averaged go into ``filled`` as (set name, image index)."""
    method, region = METHODS[label]
    out = {}
    for name, (paths, images, faces, faces68) in sets.items():
        if method == "original":
            out[name] = images
        elif method in ("bar", "pixelate", "blur", "fill"):
            out[name] = [obscure_faces(im, f, method, region) for im, f in zip(images, faces)]
        elif method == "ksame":
            points, where, blend = region.split()
            result = k_same(images, faces68 if points == "68" else faces, 3, blend=blend, region=where)
            out[name] = result.images
            if filled is not None:
                filled.update((name, i) for i, _ in result.filled)
        elif method == "deface":
            items = [{"input": str(p), "output": str(workdir / f"{name}_{i}.png")} for i, p in enumerate(paths)]
            run_peer(peer, items)
            out[name] = [read_image(item["output"]) for item in items]
    return out


def rank1_and_verify(probes, gallery, recogniser):
    """Tie-aware rank-1 identification, true-match and false-match rates at the recogniser's threshold."""
    threshold = match_distance(recogniser)
    people = sorted({who for _, who in gallery})
    hits = verified = false_matches = 0.0
    for vector, truth in probes:
        nearest = {p: min(distance(vector, g, recogniser) for g, who in gallery if who == p) for p in people}
        best = min(nearest.values())
        tied = [p for p, d in nearest.items() if d <= best + 1e-9]
        hits += (truth in tied) / len(tied)
        verified += nearest[truth] <= threshold
        false_matches += sum(nearest[p] <= threshold for p in people if p != truth)
    n = len(probes)
    return {"rank1": hits / n, "verified": verified / n, "false_match": false_matches / (n * (len(people) - 1))}


def evaluate_recognition(data: Path, peer: Path | None, workdir: Path, methods=tuple(METHODS)) -> dict:
    root = data / "photos" / "known_people" / "knn_examples"
    train_paths = sorted((root / "train").glob("*/*"))
    test_paths = sorted((root / "test").glob("*"))
    train_people = [p.parent.name for p in train_paths]
    sets = {}
    for name, paths in (("train", train_paths), ("test", test_paths)):
        images, faces = load_set(paths, "5")
        faces68 = [add_landmarks(im, f, "68") for im, f in zip(images, faces)]
        sets[name] = (paths, images, faces, faces68)
    _, train_images, train_faces, _ = sets["train"]
    # each training photo shows one person: the biggest face
    train_main = [max(f, key=lambda x: x.width * x.height) for f in train_faces]
    original_gallery = {r: [(descriptor(im, f, r), who) for im, f, who in zip(train_images, train_main, train_people)]
                        for r in RECOGNISERS}
    _, test_images, test_faces, _ = sets["test"]
    targets = test_targets(test_paths, test_faces, test_images, original_gallery)
    people = sorted(set(train_people))
    results = {"people": len(people), "gallery_photos": len(train_paths), "probe_faces": len(targets),
               "chance": 1 / len(people), "methods": {}}
    for method in methods:
        if method == "deface" and peer is None:
            continue
        started = time.perf_counter()
        filled = set()
        anonymized = anonymized_sets(method, sets, peer, workdir, filled)
        seconds = time.perf_counter() - started
        row = {"seconds": seconds}
        for r in RECOGNISERS:
            probes = [(descriptor(anonymized["test"][i], test_faces[i][f], r), who) for i, f, who in targets]
            adaptive_gallery = [(descriptor(im, f, r), who) for im, f, who in zip(anonymized["train"], train_main, train_people)]
            row[r] = {"naive": rank1_and_verify(probes, original_gallery[r], r),
                      "adaptive": rank1_and_verify(probes, adaptive_gallery, r)}
            # how far each anonymized face moved from its own original (1 - cosine / Euclidean)
            row[r]["self_distance_min"] = min(
                distance(descriptor(test_images[i], test_faces[i][f], r), vector, r)
                for (i, f, _), (vector, _) in zip(targets, probes))
        # does a detector still find a face where each face was?
        # (k-Same: over the photos whose face was averaged; those it filled instead are counted apart)
        found = total = images_with_face = images = 0
        for name in ("train", "test"):
            _, _, faces, _ = sets[name]
            for i, (image, image_faces) in enumerate(zip(anonymized[name], faces)):
                if (name, i) in filled:
                    continue
                detections = detect_faces(image)
                hits = [any(box_iou(face.xyxy, d.xyxy) >= 0.3 for d in detections) for face in image_faces]
                total, found = total + len(hits), found + sum(hits)
                images, images_with_face = images + 1, images_with_face + any(hits)
        row["face_detected"] = found / total
        row["faces_checked"] = total
        row["outputs_with_face"] = images_with_face / images
        row["outputs_checked"] = images
        row["outputs_filled_instead"] = len(filled)
        results["methods"][method] = row
        print(f"  {method}: " + ", ".join(f"{r} naive {row[r]['naive']['rank1']:.2f} adaptive {row[r]['adaptive']['rank1']:.2f}"
                                          for r in RECOGNISERS) + f", face detected {row['face_detected']:.2f}", flush=True)
    return results


# ---- 3. speed --------------------------------------------------------------------------------------
SPEED_RUNS = 3  # each tool runs this often, alternately; the median run is reported (the machine is shared)


def _timed_run(command: list[str], output: Path, frames: int) -> dict:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    got = probe(output)
    return {"seconds": wall, "fps": frames / wall, "frames_out": got.frames, "audio_out": got.has_audio}


class Camera4x3:
    """The clip's frames as a 4:3 camera at 640x480 gives them: letterboxed, the faces as they are
    (the camera loop, as `defacer photo --camera` runs it, at its full default frame size)."""

    def __init__(self, clip: Path):
        self.capture = open_video(str(clip))

    def read(self):
        ok, bgr = self.capture.read()
        if not ok:
            return ok, bgr
        frame = np.zeros((480, 640, 3), dtype=bgr.dtype)
        scale = min(640 / bgr.shape[1], 480 / bgr.shape[0])
        inner = cv2.resize(bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        top, left = (480 - inner.shape[0]) // 2, (640 - inner.shape[1]) // 2
        frame[top:top + inner.shape[0], left:left + inner.shape[1]] = inner
        return ok, frame


def evaluate_speed(data: Path, peer: Path | None, workdir: Path) -> dict:
    clip = data / "photos" / "known_people" / "short_hamilton_clip.mp4"
    info = probe(clip)
    out = {"clip": f"{info.width}x{info.height}, {info.frames} frames, {info.fps} fps, audio {info.audio_codec}"}
    ours, theirs = workdir / "defacer_clip.mp4", workdir / "deface_clip.mp4"
    commands = {"defacer": ([str(Path(sys.executable).with_name("defacer")), "photo", str(clip), "-o", str(ours), "--overwrite", "-q"], ours)}
    if peer is not None:
        commands["deface"] = ([str(peer.with_name("deface")), str(clip), "-o", str(theirs), "--keep-audio", "--scale", "640x360"], theirs)
    runs = {tool: [] for tool in commands}
    for _ in range(SPEED_RUNS):
        for tool, (command, output) in commands.items():
            output.unlink(missing_ok=True)
            runs[tool].append(_timed_run(command, output, info.frames))
    for tool, tool_runs in runs.items():
        out[tool] = sorted(tool_runs, key=lambda r: r["fps"])[len(tool_runs) // 2]
        out[tool]["fps_all_runs"] = [r["fps"] for r in tool_runs]
    if peer is not None:
        out["speed_ratio"] = out["defacer"]["fps"] / out["deface"]["fps"]
        out["speed_ratio_per_run"] = [a["fps"] / b["fps"] for a, b in zip(runs["defacer"], runs["deface"])]
    cpu_started = time.process_time()
    camera = Camera4x3(clip)
    stats = run_stream(camera, frame_processor(PhotoOptions(), max_side_px=DETECT_SIDE_CAMERA_PX), size=(640, 480))
    camera.capture.release()
    cpu = time.process_time() - cpu_started
    assert (stats.width, stats.height) == (640, 480)
    out["camera_640x480_fps"] = stats.fps
    out["camera_frames"] = stats.frames
    out["camera_cpu_seconds_per_frame"] = cpu / max(stats.frames, 1)
    out["load_average"] = os.getloadavg()
    return out


# ---- documentation figure (synthetic head only: no real person's face goes into the repository) ----
def make_doc_figure(path: Path) -> Path:
    """The synthetic phantom head rendered from the front, and each method applied to it."""
    import cv2

    from DeFacerLib.phantom import make_phantom
    from DeFacerLib.photo.landmarks import add_landmarks as landmarks
    from DeFacerLib.qa import render_views, save_png

    volume, _ = make_phantom()
    render = render_views(volume, views=("front",))["front"]
    faces = landmarks(render, detect_faces(render), "5")
    panels = [("original", render.copy())]
    for label, method, region in (("bar (cosmetic)", "bar", None), ("pixelate face", "pixelate", "face"),
                                  ("blur face", "blur", "face"), ("fill head (default)", "fill", "head")):
        panels.append((label, obscure_faces(render, faces, method, region)))
    tiles = []
    for label, image in panels:
        tile = np.ascontiguousarray(image)
        for face in faces:
            x0, y0, x1, y1 = (int(v) for v in face.xyxy)
            if label == "original":
                cv2.rectangle(tile, (x0, y0), (x1, y1), (0, 200, 0), 2)
                for x, y in face.landmarks5:
                    cv2.circle(tile, (int(x), int(y)), 4, (255, 60, 60), -1)
        cv2.putText(tile, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(tile)
    return save_png(np.hstack(tiles), path)


# ---- report ----------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def markdown(results: dict) -> str:
    lines = ["# Photo anonymizer benchmarks", "",
             f"Measured {results['date']} on {results['machine']} by `scripts/evaluate_photo.py`.",
             f"Peer: deface {PEER_VERSION} (ORB-HD, CenterFace) in its own virtual environment.", ""]
    det = results.get("detection")
    if det:
        lines += [f"## Detection: {det['faces']} labelled faces in {det['images']} dlib_faces photos (IoU >= 0.5)", "",
                  "| detector | found | recall | false pos. | recall, square boxes | false pos., square "
                  "| found, dlib-convention boxes | recall, dlib conv. | false pos., dlib conv. | ms/image |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in det["rows"].items():
            lines.append(f"| {name} | {r['tp']}/{det['faces']} | {r['recall']:.3f} | {r['fp']} | {r['recall_square']:.3f} "
                         f"| {r['fp_square']} | {r['tp_dlib']}/{det['faces']} | {r['recall_dlib']:.3f} | {r['fp_dlib']} "
                         f"| {r['ms_per_image']:.0f} |")
        lines += ["", "Square boxes: every detector's box replaced by the square of the same centre and area "
                      "(the labels are dlib's square boxes; YuNet's and CenterFace's are taller). "
                      "dlib-convention boxes: YuNet's box and 5 points mapped to dlib's box convention "
                      "(`Face.dlib_xyxy`; its 4 constants were fitted on 245 faces in other photos, none of the 43); "
                      "dlib's detectors and deface keep their own boxes in that column.",
                  f"YuNet also fires on {det['dogs_false_positives_yunet']} dog faces in dogs.jpg (no human faces).", ""]
    rec = results.get("recognition")
    if rec:
        lines += [f"## Re-identification: {rec['people']} people, {rec['gallery_photos']} gallery photos, "
                  f"{rec['probe_faces']} probe faces; chance = 1/N = {rec['chance']:.2f}", "",
                  "Rank-1 identification (tie-aware) and verification rate at each model's threshold "
                  "(SFace cosine >= 0.363; dlib distance <= 0.6). Naive: gallery = original photos; "
                  "adaptive: gallery anonymized the same way.", "",
                  "| method | SFace rank-1 naive | SFace rank-1 adaptive | SFace TMR/FMR naive | SFace TMR/FMR adaptive "
                  "| dlib rank-1 naive | dlib rank-1 adaptive | dlib TMR/FMR naive | dlib TMR/FMR adaptive | face still detected |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for method, row in rec["methods"].items():
            cells = []
            for r in RECOGNISERS:
                cells += [f"{row[r][a]['rank1']:.2f}" for a in ("naive", "adaptive")]
                cells += [f"{row[r][a]['verified']:.2f}/{row[r][a]['false_match']:.2f}" for a in ("naive", "adaptive")]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {row['face_detected']:.2f} of {row['faces_checked']} faces, "
                         f"{row['outputs_with_face']:.2f} of {row['outputs_checked']} photos |")
        lines += ["", "TMR: probes whose true identity is within the match threshold; FMR: probe/other-identity "
                      "pairs within it (1.00/1.00 means every face matches every other: nothing to tell apart).", ""]
        lines += ["", "Methods: bar = black bar over eyes and brows; pixelate = 6 blocks across the face; "
                      "blur = Gaussian, sigma 0.15 x face size, twice; fill = one constant grey; face/head = region; "
                      "ksame = k-Same, k = 3, YuNet's 5 points, piecewise warp onto a fixed template; ksame68 = k-Same, k = 3, dlib 68-point piecewise warp; "
                      "deface = deface's default (blur, ellipse, mask scale 1.3).", ""]
    speed = results.get("speed")
    if speed:
        lines += ["## Speed (end to end: decode, detect, obscure, encode, audio copy; same run, same machine)", "",
                  f"Clip: {speed['clip']}. Each tool ran {SPEED_RUNS} times, alternately; the median run is shown.", "",
                  "| tool | seconds | fps | fps of every run | frames out | audio out |", "|---|---|---|---|---|---|"]
        for tool in ("defacer", "deface"):
            if tool in speed:
                r = speed[tool]
                every = ", ".join(f"{v:.1f}" for v in r.get("fps_all_runs", [r["fps"]]))
                lines.append(f"| {tool} | {r['seconds']:.1f} | {r['fps']:.1f} | {every} | {r['frames_out']} | {r['audio_out']} |")
        if "speed_ratio" in speed:
            per_run = ", ".join(f"{v:.2f}" for v in speed.get("speed_ratio_per_run", []))
            lines += ["", f"DeFacer / deface speed ratio: {speed['speed_ratio']:.2f}x (medians; run by run: {per_run})."]
        lines += ["", f"Camera mode (YuNet, default method, a 4:3 camera's 640x480 frames: the clip letterboxed, no encoding): "
                      f"{speed['camera_640x480_fps']:.1f} fps over {speed['camera_frames']} frames "
                      f"({1000 * speed.get('camera_cpu_seconds_per_frame', 0):.0f} ms of CPU time per frame, all threads).",
                  "", f"Load average (1, 5, 15 min) when measured: "
                      f"{', '.join(f'{v:.1f}' for v in speed.get('load_average', ()))} on {os.cpu_count()} cores.", ""]
    lines += targets(results)
    return "\n".join(lines)


def targets(results: dict) -> list[str]:
    """The issue's targets, each with the measured figure and PASS/FAIL."""
    rows = []
    det, rec, speed = results.get("detection"), results.get("recognition"), results.get("speed")
    if det:
        ours = det["rows"]["DeFacer yunet"]
        peer = next((r for name, r in det["rows"].items() if name.startswith("deface")), None)
        rows.append(("detection recall >= 0.98 (IoU >= 0.5), YuNet boxes in dlib's convention",
                     f"{ours['recall_dlib']:.3f} ({ours['recall']:.3f} with YuNet's raw boxes, {ours['recall_square']:.3f} square)",
                     ours["recall_dlib"] >= 0.98))
        if peer:
            rows.append(("recall >= deface's at equal or fewer false positives",
                         f"{ours['recall_dlib']:.3f}/{ours['fp_dlib']} FP (raw {ours['recall']:.3f}/{ours['fp']}) "
                         f"vs {peer['recall']:.3f}/{peer['fp']} FP (square {peer['recall_square']:.3f}/{peer['fp_square']})",
                         ours["recall_dlib"] >= max(peer["recall"], peer["recall_square"]) and ours["fp_dlib"] <= peer["fp"]))
    if rec:
        limit = 2 * rec["chance"]
        default = rec["methods"].get("fill head")
        if default:
            worst = max(default[r][a]["rank1"] for r in RECOGNISERS for a in ("naive", "adaptive"))
            rows.append((f"default (fill head) rank-1 <= 2/N = {limit:.2f}, both attackers, both recognisers",
                         f"worst {worst:.2f}", worst <= limit + 1e-9))
        bar = rec["methods"].get("bar")
        if bar:
            rows.append(("eye bar fails (expected: published rates near 98 %)",
                         f"rank-1 {min(bar[r][a]['rank1'] for r in RECOGNISERS for a in ('naive', 'adaptive')):.2f} or more",
                         True))
        for label, points in (("ksame head", "5 points"), ("ksame68 head", "68 points, non-commercial model")):
            ksame = rec["methods"].get(label)
            if not ksame:
                continue
            worst = max(ksame[r][a]["rank1"] for r in RECOGNISERS for a in ("naive", "adaptive"))
            rows.append((f"k-Same k=3 ({points}): rank-1 <= 1/k = 0.33, both attackers, both recognisers",
                         f"worst {worst:.2f}", worst <= 1 / 3 + 1e-9))
            rows.append((f"k-Same ({points}): a face still detected in >= 95 % of outputs (of those averaged)",
                         f"{ksame['outputs_with_face']:.2f} of {ksame['outputs_checked']} photos "
                         f"({ksame['outputs_filled_instead']} filled instead: their group's average was one of them); "
                         f"{ksame['face_detected']:.2f} of {ksame['faces_checked']} faces (faces under 32 px are filled, not averaged)",
                         ksame["outputs_with_face"] >= 0.95))
    if speed:
        if "speed_ratio" in speed:
            rows.append(("video speed >= 2x deface's fps (640x360, same run)", f"{speed['speed_ratio']:.2f}x",
                         speed["speed_ratio"] >= 2))
        rows.append(("camera mode >= 25 fps at 640x480", f"{speed['camera_640x480_fps']:.1f} fps",
                     speed["camera_640x480_fps"] >= 25))
    if not rows:
        return []
    out = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    out += [f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |" for name, value, ok in rows]
    return out + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("DEFACER_TEST_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default=str(REPO / "build" / "benchmarks" / "photo.md"))
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--peer-python", help="python of a virtual environment with deface installed")
    parser.add_argument("--make-peer-venv", action="store_true", help=f"create {PEER_VENV} with deface=={PEER_VERSION}")
    parser.add_argument("--methods", nargs="*", choices=tuple(METHODS), help="recognition: only these methods")
    parser.add_argument("--doc-figure", help="only write the synthetic-head methods figure to this PNG")
    parser.add_argument("--skip", nargs="*", default=[], choices=("detection", "recognition", "speed"))
    args = parser.parse_args(argv)
    if args.doc_figure:
        print(make_doc_figure(Path(args.doc_figure)))
        return 0
    data = Path(args.data)
    peer = peer_python(args)
    if peer is None:
        print("deface not found: the peer columns are left out (use --make-peer-venv)", file=sys.stderr)
    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "detection" not in args.skip:
            print("detection ...", flush=True)
            results["detection"] = evaluate_detection(data, peer)
        if "recognition" not in args.skip:
            print("recognition ...", flush=True)
            results["recognition"] = evaluate_recognition(data, peer, workdir, args.methods or tuple(METHODS))
        if "speed" not in args.skip:
            print("speed ...", flush=True)
            results["speed"] = evaluate_speed(data, peer, workdir)
    text = markdown(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
