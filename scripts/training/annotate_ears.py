"""Hand reading of the ear landmarks: blind close-up sheets, and how the readings compare.

    python scripts/training/annotate_ears.py sheets [--only NAME ...] [--out DIR]
    python scripts/training/annotate_ears.py compare [ear_readings.json] [--second ear_readings_repeat.json]

Why: the ears are the one landmark the pipeline cannot snap to the anatomy, and their table
entries (landmarks.json: "pinna centre", proposed by the pinna cue, 14 of 33 moved by hand) had
never been checked against a second, independent reading. Here the ear landmark is read as
the **centre of the concha** (the bowl bounded by the tragus in front, the antitragus below and
the antihelix behind and above, where the ear canal opens), on the skin.

``sheets`` renders each head's left and right skin (DeFacerLib.qa.render_views, 1000 px, the
same parallel cameras as the review pictures) and crops a 110 mm square where the ear must be
(from ``--behind-eyes-mm`` 40 to 150 mm behind the eyes' midpoint, from ``--above-eyes-mm`` 40
above it down), drawn with a 10 mm grid labelled in mm from the crop's top-left corner. No
landmark is drawn: the reader sees neither the table nor the model.

``compare`` turns each reading (grid mm, with the sheets' window) into world LPS mm by casting
the view's ray through it into the head mask, 2 mm under the first head voxel it meets (the
concha's floor), and prints its distance to the table's landmark, to the U-Net's estimate
(DeFacerLib.face.landmarks.model_landmarks) and to a second reading of the same ear.
"""
from __future__ import annotations

import argparse
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


def _eyes_mm(entry: dict) -> np.ndarray:
    return 0.5 * (np.asarray(entry["landmarks"]["eye_left"], float) + np.asarray(entry["landmarks"]["eye_right"], float))


def sheet(volume, entry: dict, title: str, out: Path, behind_eyes_mm: float = BEHIND_EYES_MM,
          above_eyes_mm: float = ABOVE_EYES_MM) -> Path:
    surface = skin_surface(volume, max_points=200_000)
    face = face_direction(volume, surface)
    images = render_views(volume, ("left", "right"), size=(RENDER_PX, RENDER_PX), surface=surface, face=face)
    tiles = []
    for name, view in SIDES.items():
        ev = EarView(volume, surface, face, view, _eyes_mm(entry), behind_eyes_mm, above_eyes_mm)
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
    ImageDraw.Draw(canvas).text((4, canvas.height - 14), title, fill=(255, 255, 255))
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
    window = readings.get("window", {})
    points = {}
    for rel, ears in readings["readings"].items():
        volume = read_volume(data / rel)
        surface = skin_surface(volume, max_points=200_000)
        face = face_direction(volume, surface)
        head = head_mask(volume)
        for name, grid_mm in ears.items():
            ev = EarView(volume, surface, face, SIDES[name], _eyes_mm(table[rel]), **window)
            points[rel, name] = landmark_from_reading(volume, head, ev, grid_mm)
    return points


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
            volume = read_volume(data / rel)
            estimates[rel] = model_landmarks(volume, segment_features(volume).labels)
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
    parser.add_argument("mode", choices=("sheets", "compare"))
    parser.add_argument("readings", nargs="?", default=str(here / "ear_readings.json"),
                        help="compare: JSON of grid readings (default: ear_readings.json)")
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
        compare(data, table, json.loads(Path(args.readings).read_text()), second)
        return 0
    for rel, entry in table.items():
        if args.only and not any(s in rel for s in args.only):
            continue
        out = Path(args.out) / f"{rel.replace('/', '_')}.png"
        print(sheet(read_volume(data / rel), entry, rel, out, args.behind_eyes_mm, args.above_eyes_mm), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
