"""Hand reading of the ear landmarks: blind close-up sheets, and how the readings compare.

    python scripts/training/annotate_ears.py sheets [--only NAME ...] [--out DIR]
    python scripts/training/annotate_ears.py compare [ear_readings.json] [--second ear_readings_repeat.json]
    python scripts/training/annotate_ears.py agree READER.json READER.json ...

Why: the ears are the one landmark the pipeline cannot snap to the anatomy, and their table
entries (landmarks.json: "pinna centre", proposed by the pinna cue, 14 of 33 moved by hand) had
never been checked against a second, independent reading. Here the ear landmark is read as
the **centre of the concha** (the bowl bounded by the tragus in front, the antitragus below and
the antihelix behind and above, where the ear canal opens), on the skin.

``sheets`` renders each head's left and right skin (DeFacerLib.qa.render_views, 1000 px, the
same parallel cameras as the review pictures) and crops a 110 mm square where the ear must be
(from ``--behind-eyes-mm`` 40 to 150 mm behind the eyes' midpoint, from ``--above-eyes-mm`` 40
above it down; the midpoint the existing readings were made on is kept in ear_sheet_anchors.json), drawn with a 10 mm grid labelled in mm from the crop's top-left corner. No
landmark is drawn: the reader sees neither the table nor the model.

``compare`` turns each reading (grid mm, with the sheets' window) into world LPS mm by casting
the view's ray through it into the head mask, 2 mm under the first head voxel it meets (the
concha's floor), and prints its distance to the table's landmark, to the U-Net's estimate
(DeFacerLib.face.landmarks.model_landmarks) and to a second reading of the same ear.

``agree`` takes several readers' files (each read blind, on its own sheets window), prints how
far the readers lie from one another (every pair, per ear) and writes the consensus of each
ear (``ear_consensus.json``): the component-wise median, in world mm, of the largest majority
of its readings (at least two) that lie pairwise within ``AGREE_MM`` (the outliers are listed);
where no majority agrees, the median of all readings, marked ``"agreed": false``. That file is
the ears' reference for scripts/evaluate_defacing.py (landmark error, the model's offsets, the
ear relief); landmarks.json keeps its ear points, the centres of the training labels.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from DeFacerLib.deface import head_mask
from DeFacerLib.io import read_volume
from DeFacerLib.qa import face_direction, render_views, skin_surface, surface_points_mm, view_directions
from DeFacerLib.qa.render import view_camera

RENDER_PX = 1000
WINDOW_MM = 110.0
BEHIND_EYES_MM = 40.0  # the crop's front edge, behind the eyes' midpoint
ABOVE_EYES_MM = 40.0  # the crop's top edge, above the eyes' midpoint
ZOOM = 1.6  # the crop is shown enlarged for reading
UNDER_SKIN_MM = 2.0
SIDES = {"ear_left": "left", "ear_right": "right"}


class EarView:
    """One lateral view of a head: its camera and the crop's grid (mm from its top-left)."""

    def __init__(self, volume, surface, face, view: str, eyes_mm: np.ndarray,
                 behind_eyes_mm: float = BEHIND_EYES_MM, above_eyes_mm: float = ABOVE_EYES_MM):
        directions = view_directions(face)
        self.camera = view_camera(surface_points_mm(surface), directions[view], directions["front"], RENDER_PX, RENDER_PX)
        self.scale = (RENDER_PX / 2) / self.camera.half_height_mm  # px per mm
        front = directions["front"]
        # the crop's top-left corner: ABOVE_EYES_MM up, BEHIND_EYES_MM behind the eyes, in pixels
        corner_mm = eyes_mm - front * behind_eyes_mm
        x_front, y_top = self.camera.project(corner_mm[None, :], RENDER_PX, RENDER_PX)[0]
        y_top -= above_eyes_mm * self.scale
        x_back = self.camera.project((corner_mm - front * WINDOW_MM)[None, :], RENDER_PX, RENDER_PX)[0][0]
        self.x0 = min(x_front, x_back)  # the face is on the image's left in the left view, right in the right
        self.y0 = y_top

    def pixel(self, grid_mm) -> np.ndarray:
        return np.array([self.x0 + grid_mm[0] * self.scale, self.y0 + grid_mm[1] * self.scale])

    def ray(self, grid_mm) -> tuple[np.ndarray, np.ndarray]:
        """(start, unit direction) in world mm of the ray through a grid point, from the camera's side."""
        x, y = self.pixel(grid_mm)
        cam = self.camera
        on_plane = cam.centre + cam.right * (x - RENDER_PX / 2) / self.scale + cam.up * (RENDER_PX / 2 - y) / self.scale
        return on_plane + cam.toward_camera * cam.depth_mm, -cam.toward_camera


ANCHORS = Path(__file__).resolve().parent / "ear_sheet_anchors.json"


def _eyes_mm(rel: str, entry: dict) -> np.ndarray:
    """The eyes' midpoint a head's sheets are anchored to: the one they were read on
    (ear_sheet_anchors.json; the eyes have moved since), else the table's eyes'."""
    anchors = json.loads(ANCHORS.read_text())["anchors_mm"] if ANCHORS.exists() else {}
    if rel in anchors:
        return np.asarray(anchors[rel], float)
    return 0.5 * (np.asarray(entry["landmarks"]["eye_left"], float) + np.asarray(entry["landmarks"]["eye_right"], float))


def sheet(volume, rel: str, entry: dict, out: Path, behind_eyes_mm: float = BEHIND_EYES_MM,
          above_eyes_mm: float = ABOVE_EYES_MM) -> Path:
    surface = skin_surface(volume, max_points=200_000)
    face = face_direction(volume, surface)
    images = render_views(volume, ("left", "right"), size=(RENDER_PX, RENDER_PX), surface=surface, face=face)
    tiles = []
    for name, view in SIDES.items():
        ev = EarView(volume, surface, face, view, _eyes_mm(rel, entry), behind_eyes_mm, above_eyes_mm)
        side = int(round(WINDOW_MM * ev.scale))
        crop = Image.fromarray(images[view]).crop((int(ev.x0), int(ev.y0), int(ev.x0) + side, int(ev.y0) + side))
        crop = crop.resize((int(side * ZOOM), int(side * ZOOM)), Image.LANCZOS)
        draw = ImageDraw.Draw(crop)
        px = ev.scale * ZOOM
        for mm in range(0, int(WINDOW_MM) + 1, 10):
            colour = (90, 90, 255) if mm % 50 else (255, 80, 80)
            draw.line([(mm * px, 0), (mm * px, crop.height)], fill=colour)
            draw.line([(0, mm * px), (crop.width, mm * px)], fill=colour)
            draw.text((mm * px + 2, 2), str(mm), fill=(255, 255, 0))
            draw.text((2, mm * px + 2), str(mm), fill=(255, 255, 0))
        draw.text((crop.width - 70, crop.height - 14), view, fill=(255, 255, 255))
        tiles.append(crop)
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 10, max(t.height for t in tiles) + 18))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + 10
    ImageDraw.Draw(canvas).text((4, canvas.height - 14), rel, fill=(255, 255, 255))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def landmark_from_reading(volume, head: np.ndarray, ev: EarView, grid_mm) -> np.ndarray:
    """World LPS mm of the concha: UNDER_SKIN_MM under the first head voxel on the reading's ray."""
    start, direction = ev.ray(grid_mm)
    step = 0.25 * float(min(volume.spacing_mm))
    steps = np.arange(0.0, 2 * ev.camera.depth_mm, step)
    points = start + steps[:, None] * direction
    ijk = np.round(volume.world_to_index(points)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(volume.shape3)), axis=1)
    hit = np.zeros(len(points), bool)
    hit[inside] = head[tuple(ijk[inside].T)]
    if not hit.any():
        raise ValueError("the ray misses the head")
    first = int(np.argmax(hit))
    return points[first] + direction * UNDER_SKIN_MM


def read_points(data: Path, table: dict, readings: dict) -> dict[tuple[str, str], np.ndarray]:
    """World LPS mm of every reading in a readings file: {(head, ear name): point}."""
    return read_points_of_readers(data, table, [readings])[0]


def read_points_of_readers(data: Path, table: dict, readers: list[dict]) -> list[dict[tuple[str, str], np.ndarray]]:
    """read_points for several readings files, each head read once."""
    points: list[dict] = [{} for _ in readers]
    for rel in sorted({rel for readings in readers for rel in readings["readings"]}):
        volume = read_volume(data / rel)
        surface = skin_surface(volume, max_points=200_000)
        face = face_direction(volume, surface)
        head = head_mask(volume)
        for found, readings in zip(points, readers):
            for name, grid_mm in readings["readings"].get(rel, {}).items():
                ev = EarView(volume, surface, face, SIDES[name], _eyes_mm(rel, table[rel]), **readings.get("window", {}))
                found[rel, name] = landmark_from_reading(volume, head, ev, grid_mm)
    return points


AGREE_MM = 8.0  # readings farther apart than this do not agree (two voxels of the U-Net's 3.75 mm grid)


def consensus(readings_mm: dict[str, np.ndarray]) -> tuple[np.ndarray | None, list[str]]:
    """(the median of the readings that agree, the readers left out) of one ear; None without agreement.

    The readings that agree are the largest group of them, pairwise within AGREE_MM, holding
    more than half of the readers and at least two (on a tie, the tighter group); a reader
    outside it is an outlier on that ear.
    """
    names = list(readings_mm)
    best: tuple | None = None
    for size in range(len(names), 1, -1):
        if size * 2 <= len(names):
            break
        for group in itertools.combinations(names, size):
            spread = max(float(np.linalg.norm(readings_mm[a] - readings_mm[b])) for a, b in itertools.combinations(group, 2))
            if spread <= AGREE_MM and (best is None or spread < best[0]):
                best = (spread, group)
        if best is not None:
            break
    if best is None:
        return None, names
    group = best[1]
    return np.median([readings_mm[n] for n in group], axis=0), [n for n in names if n not in group]


def agree(data: Path, table: dict, readers: dict[str, dict]) -> dict:
    """Inter-reader distances and each ear's consensus (world LPS mm), printed and returned."""
    names = list(readers)
    points = dict(zip(names, read_points_of_readers(data, table, list(readers.values()))))
    pair_mm: dict[str, list[float]] = {}
    ears: dict[str, dict] = {}
    for rel, name in sorted({key for found in points.values() for key in found}):
        readings_mm = {r: points[r][rel, name] for r in names if (rel, name) in points[r]}
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if a in readings_mm and b in readings_mm:
                    pair_mm.setdefault(f"{a}-{b}", []).append(float(np.linalg.norm(readings_mm[a] - readings_mm[b])))
        point, left_out = consensus(readings_mm)
        agreed = point is not None
        if not agreed:  # no majority agrees: the median of all readings, marked as such
            point, left_out = np.median(list(readings_mm.values()), axis=0), []
        spread = {r: round(float(np.linalg.norm(p - point)), 1) for r, p in readings_mm.items()}
        print(f"{rel} {name}: " + (f"consensus of {len(readings_mm) - len(left_out)}" if agreed
                                   else f"NO consensus, median of {len(readings_mm)}") + f", distances {spread}")
        ears.setdefault(rel, {})[name] = {"point_mm": [round(float(v), 1) for v in point], "agreed": agreed,
                                          "readers": sorted(readings_mm), "left_out": left_out, "distance_mm": spread,
                                          "table_distance_mm": round(float(np.linalg.norm(
                                              point - np.asarray(table[rel]["landmarks"][name], float))), 1)
                                          if name in table[rel]["landmarks"] else None}
    for pair, values in pair_mm.items():
        print(f"readers {pair}: median {np.median(values):.1f} mm, 90th percentile {np.percentile(values, 90):.1f} mm, n={len(values)}")
    agreed = [e for head in ears.values() for e in head.values() if e["agreed"]]
    print(f"consensus on {len(agreed)} of {sum(len(h) for h in ears.values())} ears; "
          f"median reader-to-consensus {np.median([d for e in agreed for d in e['distance_mm'].values()]):.1f} mm; "
          f"median consensus-to-table {np.median([e['table_distance_mm'] for e in agreed]):.1f} mm")
    return {"pairwise_median_mm": {p: round(float(np.median(v)), 1) for p, v in pair_mm.items()}, "ears": ears}


def compare(data: Path, table: dict, readings: dict, second: dict | None) -> dict[str, list[float]]:
    """Distances (mm) from each reading to the table's landmark, the U-Net's estimate and a second reading."""
    from DeFacerLib.face.landmarks import model_landmarks
    from DeFacerLib.face.segment import segment_features

    points = read_points(data, table, readings)
    again = read_points(data, table, second) if second else {}
    distances: dict[str, list[float]] = {"table": [], "model": [], "second reading": []}
    held_out = set(json.loads((Path(__file__).resolve().parent / "split.json").read_text())["validation"])
    held_out_distances: dict[str, list[float]] = {"table": [], "model": []}
    estimates: dict[str, dict] = {}
    for (rel, name), point in points.items():
        if rel not in estimates:
            estimates[rel] = model_landmarks(read_volume(data / rel), segment_features(read_volume(data / rel)).labels)
        row = {"table": table[rel]["landmarks"][name], "model": estimates[rel].get(name),
               "second reading": again.get((rel, name))}
        cells = []
        for key, other in row.items():
            if other is None:
                continue
            d = float(np.linalg.norm(point - np.asarray(other, float)))
            distances[key].append(d)
            if rel in held_out and key in held_out_distances:
                held_out_distances[key].append(d)
            cells.append(f"{key} {d:5.1f}")
        print(f"{rel} {name}: " + ", ".join(cells))
    for title, table_of in (("all readings", distances), ("held-out heads", held_out_distances)):
        print(f"medians (mm), {title}: " + ", ".join(f"{k} {np.median(v):.1f} (n={len(v)})" for k, v in table_of.items() if v))
    return distances


def main(argv=None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("sheets", "compare", "agree"))
    parser.add_argument("readings", nargs="*", default=[str(here / "ear_readings.json")],
                        help="compare: JSON of grid readings (default: ear_readings.json); agree: one per reader")
    parser.add_argument("--consensus-out", default=str(here / "ear_consensus.json"), help="agree: where the consensus goes")
    parser.add_argument("--second", help="compare: a second reading of the same ears (repeatability)")
    parser.add_argument("--behind-eyes-mm", type=float, default=BEHIND_EYES_MM, help="sheets: the crop's front edge")
    parser.add_argument("--above-eyes-mm", type=float, default=ABOVE_EYES_MM, help="sheets: the crop's top edge")
    parser.add_argument("--landmarks", default=str(here / "landmarks.json"))
    parser.add_argument("--data", default=str(here.parents[2] / "shared" / "data"))
    parser.add_argument("--out", default="/tmp/ear_sheets")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    table = json.loads(Path(args.landmarks).read_text())["heads"]
    data = Path(args.data)
    if args.mode == "compare":
        second = json.loads(Path(args.second).read_text()) if args.second else None
        compare(data, table, json.loads(Path(args.readings[0]).read_text()), second)
        return 0
    if args.mode == "agree":
        readers = {Path(f).stem: json.loads(Path(f).read_text()) for f in args.readings}
        agreed = agree(data, table, readers)
        agreed = {"what": "each ear's concha (world LPS mm, 2 mm under the skin): the median of the largest "
                          f"majority of blind readings pairwise within {AGREE_MM:g} mm (annotate_ears.py agree)",
                  "readers": {name: Path(f).name for name, f in zip(readers, args.readings)}, **agreed}
        Path(args.consensus_out).write_text(json.dumps(agreed, indent=1) + "\n")
        return 0
    for rel, entry in table.items():
        if args.only and not any(s in rel for s in args.only):
            continue
        out = Path(args.out) / f"{rel.replace('/', '_')}.png"
        print(sheet(read_volume(data / rel), rel, entry, out, args.behind_eyes_mm, args.above_eyes_mm), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
