"""Review pictures of the landmarks: skin renders with the points, and slices through each point.

    python scripts/training/render_landmarks.py [--landmarks FILE] [--data DIR] [--only NAME ...]

One PNG per head in /tmp/landmark_review/ (never in the repository): top row, the front,
left and right skin renders (DeFacerLib.qa.render_views) with each landmark drawn as a
coloured disc at its projection through the same parallel camera (drawn whether or not the
skin hides it: the eye centres lie under the lids); below, for each landmark, an axial,
coronal and sagittal slice (80 mm square, 1 mm sampling) with a cross-hair on the point.
Slice orientation: axial = anterior up, patient's left on the image's right; coronal =
superior up, patient's left right; sagittal = superior up, anterior left.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from DeFacerLib.io import read_volume
from DeFacerLib.qa import face_direction, render_views, skin_surface, surface_points_mm, view_directions
from DeFacerLib.qa.render import view_camera

NAMES = ("eye_left", "eye_right", "nose_tip", "mouth", "ear_left", "ear_right")
COLOURS = {
    "eye_left": (255, 40, 40), "eye_right": (40, 220, 40), "nose_tip": (40, 120, 255),
    "mouth": (255, 220, 0), "ear_left": (255, 0, 255), "ear_right": (0, 230, 230),
}
SHORT = {"eye_left": "EL", "eye_right": "ER", "nose_tip": "N", "mouth": "M", "ear_left": "AL", "ear_right": "AR"}
RENDER_PX = 300
SLICE_PX = 150
HALF_MM = 40.0




def sample_slice(values: np.ndarray, volume, point: np.ndarray, plane: str, window: tuple[float, float],
                 half_mm: float = HALF_MM, step_mm: float = 1.0) -> np.ndarray:
    """A square slice through ``point`` (world LPS), 2 * half_mm across, as 8-bit grey in ``window``.
    Axial: columns patient right -> left (+x), rows anterior -> posterior; coronal: columns +x,
    rows superior -> inferior; sagittal: columns anterior -> posterior, rows superior -> inferior."""
    lo, hi = window
    t = np.arange(-half_mm, half_mm, step_mm)
    a, b = np.meshgrid(t, t, indexing="xy")  # a: image column, b: image row (down)
    world = np.zeros(a.shape + (3,))
    if plane == "axial":
        world[..., 0], world[..., 1], world[..., 2] = point[0] + a, point[1] + b, point[2]
    elif plane == "coronal":
        world[..., 0], world[..., 1], world[..., 2] = point[0] + a, point[1], point[2] - b
    else:
        world[..., 0], world[..., 1], world[..., 2] = point[0], point[1] + a, point[2] - b
    ijk = volume.world_to_index(world.reshape(-1, 3)).T
    sampled = ndi.map_coordinates(values, ijk, order=1, cval=lo).reshape(a.shape)
    return np.clip((sampled - lo) / (hi - lo + 1e-9) * 255, 0, 255).astype(np.uint8)


def slice_image(values: np.ndarray, volume, point: np.ndarray, plane: str, lo: float, hi: float) -> Image.Image:
    """An 80 mm square slice through ``point`` (world LPS), sampled at 1 mm."""
    grey = sample_slice(values, volume, point, plane, (lo, hi))
    return Image.fromarray(grey).convert("RGB").resize((SLICE_PX, SLICE_PX), Image.NEAREST)


def review_arguments(description: str) -> argparse.ArgumentParser:
    """The options every landmark review script takes: the table, the data, where the PNGs go, which heads."""
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--landmarks", default=str(here / "landmarks.json"))
    parser.add_argument("--data", default=str(here.parents[2] / "shared" / "data"))
    parser.add_argument("--out", default="/tmp/landmark_review")
    parser.add_argument("--only", nargs="*", default=None, help="substrings of the heads to do")
    return parser


def review(volume, landmarks: dict, missing: list, title: str, out: Path) -> Path:
    surface = skin_surface(volume, max_points=60_000)
    face = face_direction(volume, surface)
    views = ("front", "left", "right")
    images = render_views(volume, views, size=(RENDER_PX, RENDER_PX), surface=surface, face=face)
    directions = view_directions(face)
    spts = surface_points_mm(surface)
    names = [n for n in NAMES if n in landmarks]
    pts = np.array([landmarks[n] for n in names], float).reshape(-1, 3)
    canvas = Image.new("RGB", (3 * RENDER_PX, RENDER_PX + 3 * SLICE_PX + 20), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for col, view in enumerate(views):
        tile = Image.fromarray(images[view])
        d = ImageDraw.Draw(tile)
        if len(pts):
            xy = view_camera(spts, directions[view], directions["front"], RENDER_PX, RENDER_PX).project(pts, RENDER_PX, RENDER_PX)
            for name, (x, y) in zip(names, xy):
                d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=COLOURS[name], outline=(0, 0, 0))
                d.text((x + 5, y - 6), SHORT[name], fill=COLOURS[name])
        d.text((4, 4), view, fill=(255, 255, 255))
        canvas.paste(tile, (col * RENDER_PX, 0))
    values = volume.physical()
    values = values[..., 0] if values.ndim == 4 else values
    lo, hi = np.percentile(values[::2, ::2, ::2], [1, 99.5])
    for col, name in enumerate(names[:6]):
        for row, plane in enumerate(("axial", "coronal", "sagittal")):
            tile = slice_image(values, volume, np.asarray(landmarks[name], float), plane, lo, hi)
            d = ImageDraw.Draw(tile)
            c = SLICE_PX / 2
            d.line([c - 12, c, c - 4, c], fill=COLOURS[name]); d.line([c + 4, c, c + 12, c], fill=COLOURS[name])
            d.line([c, c - 12, c, c - 4], fill=COLOURS[name]); d.line([c, c + 4, c, c + 12], fill=COLOURS[name])
            if row == 0:
                d.text((3, 3), SHORT[name], fill=COLOURS[name])
            canvas.paste(tile, (col * SLICE_PX, RENDER_PX + row * SLICE_PX))
    draw.text((4, RENDER_PX + 3 * SLICE_PX + 4), f"{title}  missing: {','.join(missing) or '-'}", fill=(255, 255, 255))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def main(argv=None) -> int:
    args = review_arguments(__doc__.splitlines()[0]).parse_args(argv)
    table = json.loads(Path(args.landmarks).read_text())
    heads = table.get("heads", table)
    for rel, entry in heads.items():
        if args.only and not any(s in rel for s in args.only):
            continue
        volume = read_volume(Path(args.data) / rel)
        name = rel.replace("/", "_")
        out = review(volume, entry["landmarks"], entry.get("missing", []), rel, Path(args.out) / f"{name}.png")
        print(out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
