"""k-Same groups whose average is still one member (helper audit of 2026-12-08): a 331 px portrait
averaged with two faces of 35 px stayed that person (SFace 0.74 to his own photo), a face grouped
with dog faces the detector took for people too. Such a group joins its nearest group, or is
filled when none is left to join (ksame.REVEAL_MARGIN). Real photos. Each failed before the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")

from DeFacerLib.cli.main import main  # noqa: E402
from DeFacerLib.photo.anonymize import PhotoOptions, find_faces  # noqa: E402
from DeFacerLib.photo.identity import sface_descriptor  # noqa: E402
from DeFacerLib.photo.ksame import REVEAL_MARGIN, k_same  # noqa: E402
from DeFacerLib.photo.media import read_image  # noqa: E402


def _portrait_and_group(data_dir):
    photos = data_dir / "photos"
    return [photos / "known_people" / "knn_examples" / "train" / "obama" / "obama2.jpg",
            photos / "dlib_faces" / "2007_007763.jpg"]


def test_a_large_face_among_small_ones_is_averaged_in_a_larger_group(data_dir):
    """His group of three (331, 35 and 34 px) averaged to him (SFace 0.74 to his own photo, 0.31
    and 0.34 to the others); it now joins its nearest group, and the average of seven no longer
    names him above the others."""
    files = _portrait_and_group(data_dir)
    images = [read_image(f) for f in files]
    faces = [find_faces(image, PhotoOptions(method="ksame")) for image in images]
    portrait = faces[0][0]
    assert portrait.size_px > 300 and len(faces[1]) == 7
    result = k_same(images, faces, 3)
    group = next(g for g in result.groups if (0, 0) in g)
    assert len(group) >= 6 and not result.filled
    surrogate = sface_descriptor(result.images[0], portrait)
    similarities = sorted((float(sface_descriptor(images[i], faces[i][j]) @ surrogate) for i, j in group), reverse=True)
    assert similarities[0] < 0.5 and similarities[0] - similarities[1] < REVEAL_MARGIN


def test_a_group_that_still_names_a_member_and_has_no_partner_is_filled(data_dir, tmp_path, capsys):
    """The 9 one-person photos of 5 people: one group (Alex Lacamoire, Obama, Kit Harington)
    averages to Alex (SFace 0.41 against 0.18 and 0.20; a fill in his place 0.12), and every other
    group holds Obama or Kit: its three faces are filled, and each file's report says so."""
    import json
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    train = data_dir / "photos" / "known_people" / "knn_examples" / "train"
    for path in sorted(train.glob("*/*")):
        shutil.copy(path, folder / f"{path.parent.name}_{path.name}")
    capsys.readouterr()
    assert main(["photo", str(folder), "-o", str(tmp_path / "out"), "--method", "ksame", "--json", "-q"]) == 0
    outputs = {Path(o["input"]).name: o["ksame_filled"] for o in json.loads(capsys.readouterr().out)["outputs"]}
    assert sorted(name for name, count in outputs.items() if count) == [
        "alex_lacamoire_img1.jpg", "kit_harington_john2.jpeg", "obama_obama.jpg"]
    assert all(count in (0, 1) for count in outputs.values())
