#!/usr/bin/env python3
"""k-Same's groups, face by face: does a member's surrogate name its own original?

For every face k-Same averaged, the output face (at the original's place) is described by SFace
and compared with every original face of the set; the k-Same bound says a member's own original
is rank-1 for about 1 in k faces, and no group's surrogate should name one member far above the
others. Sets: the 9 dlib_faces group photos (faces from 34 to 425 px, and dog faces YuNet takes
for people), and one 331 px portrait with a group photo of small faces.

    python scripts/evaluate_ksame_groups.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from DeFacerLib.photo.anonymize import PhotoOptions, find_faces  # noqa: E402
from DeFacerLib.photo.identity import sface_descriptor  # noqa: E402
from DeFacerLib.photo.ksame import DEFAULT_K, k_same  # noqa: E402
from DeFacerLib.photo.media import read_image  # noqa: E402


def evaluate(files: list[Path], k: int = DEFAULT_K) -> dict:
    images = [read_image(f) for f in files]
    options = PhotoOptions(method="ksame")
    faces = [find_faces(image, options) for image in images]
    result = k_same(images, faces, k)
    originals = {(i, j): sface_descriptor(images[i], faces[i][j]) for i in range(len(images)) for j in range(len(faces[i]))}
    keys = list(originals)
    gallery = np.array([originals[key] for key in keys])
    averaged = own_rank1 = 0
    named = []
    for group in result.groups:
        if group[0] in result.filled:
            continue
        for i, j in group:
            similarities = gallery @ sface_descriptor(result.images[i], faces[i][j])
            averaged += 1
            if keys[int(np.argmax(similarities))] == (i, j):
                own_rank1 += 1
                named.append(f"{files[i].name}#{j} ({faces[i][j].size_px:.0f} px; group "
                             f"{[round(faces[a][b].size_px) for a, b in group]} px; {similarities.max():.2f})")
    return {"faces": len(keys), "averaged": averaged, "filled_instead": len(result.filled),
            "own_rank1": own_rank1, "bound": averaged / k, "named": named}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("DEFACER_TEST_DATA", "../shared/data"))
    args = parser.parse_args()
    photos = Path(args.data) / "photos"
    sets = {
        "dlib_faces (9 group photos)": sorted((photos / "dlib_faces").glob("*.jpg")),
        "a 331 px portrait with a group of small faces": [
            photos / "known_people" / "knn_examples" / "train" / "obama" / "obama2.jpg",
            photos / "dlib_faces" / "2007_007763.jpg"],
    }
    for name, files in sets.items():
        found = evaluate(files)
        print(f"{name}: {found['faces']} faces; averaged {found['averaged']}, filled instead {found['filled_instead']}; "
              f"own original rank-1 for {found['own_rank1']} of {found['averaged']} (1/k: {found['bound']:.1f})")
        for line in found["named"]:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
