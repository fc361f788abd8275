"""Move each head's eye landmarks onto the globe's centre, and draw sheets to check them by eye.

    python scripts/training/refine_eye_landmarks.py [--data DIR] [--only NAME ...] [--write]

For every eye in landmarks.json, DeFacerLib.face.landmarks.globe_centre looks within
--search-mm (default 12) of the table's point for the globe: the 8 mm ball most uniform and
most unlike the shell around it. It prints each move (mm), and draws review sheets to --out
(never into the repository): per eye an axial, coronal and sagittal slice (40 mm, 6 px/mm)
centred on the fitted point, a 12 mm circle (the globe's outline if the fit is right), the
fitted point in red and the table's point in green. Slice orientation as render_landmarks.py.
With --write the fitted points replace the table's eyes and each head's ``verification``
records the move; only write after the sheets were looked at.

CT is skipped: the globe is barely denser than the orbit's fat and the lids in front have the
vitreous' density, so the shell's air pulls the fit forward (4-5 mm on the one CT head, read
on slices in a 0.2-0.45 window); its eyes were set by hand.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from DeFacerLib.face.landmarks import globe_centre, vitreous_is_bright
from DeFacerLib.io import read_volume
from render_landmarks import review_arguments, sample_slice  # scripts/training/, this script's folder

EYES = ("eye_left", "eye_right")
HALF_MM = 20.0
PX_PER_MM = 6
GLOBE_RADIUS_MM = 12.0
EYES_PER_SHEET = 16


def fit_eyes(volume, rel: str, entry: dict, search_mm: float) -> dict[str, np.ndarray]:
    """{eye: fitted world LPS mm} for the eyes the table has."""
    values = volume.physical()
    values = values[..., 0] if values.ndim == 4 else values
    fitted = {}
    for eye in EYES:
        if eye not in entry["landmarks"]:
            continue
        start = volume.world_to_index(np.asarray(entry["landmarks"][eye], float)[None, :])[0]
        index = globe_centre(values, volume.spacing_mm, start, bright=vitreous_is_bright(volume, rel), search_mm=search_mm)
        if index is None:
            print(f"{rel} {eye}: no globe within {search_mm:g} mm", file=sys.stderr)
            continue
        fitted[eye] = volume.index_to_world(index[None, :])[0]
    return fitted


def review_tile(volume, values, window, centre, old, plane: str, label: str) -> Image.Image:
    """One slice through ``centre`` (world LPS) with the circle, the fit (red) and the old point (green)."""
    grey = sample_slice(values, volume, centre, plane, window, half_mm=HALF_MM, step_mm=0.5)
    n = int(2 * HALF_MM * PX_PER_MM)
    tile = Image.fromarray(grey).convert("RGB").resize((n, n), Image.BILINEAR)
    draw = ImageDraw.Draw(tile)
    r = GLOBE_RADIUS_MM * PX_PER_MM
    draw.ellipse([n / 2 - r, n / 2 - r, n / 2 + r, n / 2 + r], outline=(255, 128, 0))
    offset = np.asarray(old, float) - centre
    x, y = {"axial": (offset[0], offset[1]), "coronal": (offset[0], -offset[2]), "sagittal": (offset[1], -offset[2])}[plane]
    for (px, py), colour in (((n / 2, n / 2), (255, 0, 0)), (((x + HALF_MM) * PX_PER_MM, (y + HALF_MM) * PX_PER_MM), (0, 255, 0))):
        draw.line([px - 5, py, px + 5, py], fill=colour)
        draw.line([px, py - 5, px, py + 5], fill=colour)
    draw.text((2, 2), label, fill=(255, 255, 0))
    return tile


def save_sheets(tiles: list[list[Image.Image]], out_dir: Path) -> list[Path]:
    n = int(2 * HALF_MM * PX_PER_MM)
    paths = []
    for start in range(0, len(tiles), EYES_PER_SHEET):
        chunk = tiles[start:start + EYES_PER_SHEET]
        sheet = Image.new("RGB", (2 * 3 * n, ((len(chunk) + 1) // 2) * n))
        for i, triple in enumerate(chunk):
            for j, tile in enumerate(triple):
                sheet.paste(tile, (((i % 2) * 3 + j) * n, (i // 2) * n))
        path = out_dir / f"eyes_{start // EYES_PER_SHEET + 1}.png"
        sheet.save(path)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    parser = review_arguments(__doc__.splitlines()[0])
    parser.add_argument("--search-mm", type=float, default=12.0)
    parser.add_argument("--window", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                        help="grey window of the sheets (default: the 1st-99.5th percentile; CT needs a soft-tissue one)")
    parser.add_argument("--write", action="store_true", help="write the fitted eyes into the table")
    args = parser.parse_args(argv)
    path = Path(args.landmarks)
    table = json.loads(path.read_text())
    heads = table.get("heads", table)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tiles = []
    for rel, entry in heads.items():
        if args.only and not any(s in rel for s in args.only):
            continue
        volume = read_volume(Path(args.data) / rel)
        if volume.modality == "CT":
            print(f"{rel}: CT, skipped (set by hand)")
            continue
        values = volume.physical()
        values = values[..., 0] if values.ndim == 4 else values
        window = tuple(args.window or np.percentile(values[::2, ::2, ::2], [1, 99.5]))
        moves = []
        for eye, point in fit_eyes(volume, rel, entry, args.search_mm).items():
            old = np.asarray(entry["landmarks"][eye], float)
            move_mm = float(np.linalg.norm(point - old))
            print(f"{rel} {eye}: {np.round(old, 1).tolist()} -> {np.round(point, 1).tolist()} ({move_mm:.1f} mm)")
            label = f"{Path(rel).name[:10]} {eye[4]} {move_mm:.1f}mm"
            tiles.append([review_tile(volume, values, window, point, old, plane, label if plane == "axial" else plane[:3])
                          for plane in ("axial", "coronal", "sagittal")])
            if args.write:
                entry["landmarks"][eye] = [round(float(c), 1) for c in point]
            moves.append(f"{eye} {move_mm:.1f} mm")
        if args.write and moves:
            entry["verification"] += f"; eyes moved to the globe fit (refine_eye_landmarks.py, sheets viewed): {', '.join(moves)}"
    for sheet in save_sheets(tiles, out_dir):
        print(sheet, file=sys.stderr)
    if args.write:
        path.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
