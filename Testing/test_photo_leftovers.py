"""What `defacer photo` left of a face (helper audit "photoid"): k-Same groups of one person,
a profile under the head fill, a JPEG's thumbnail and trailer, small faces in a huge photo, and
k-Same asked of a camera. Each test failed before its fix."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from DeFacerLib.cli.main import main
from DeFacerLib.photo.anonymize import PhotoOptions, anonymize_path
from DeFacerLib.photo.detect import detect_faces, read_labelled_boxes
from DeFacerLib.photo.media import read_image


def _known(data_dir, *names):
    return [data_dir / "photos" / "known_people" / name for name in names]


@pytest.mark.parametrize("photos", [
    ("knn_examples/test/obama1.jpg", "obama-720p.jpg", "obama-240p.jpg"),  # one person, three photos
    ("knn_examples/test/obama1.jpg", "obama-720p.jpg", "knn_examples/test/alex_lacamoire1.jpg"),
])
def test_k_same_refuses_groups_of_one_person(data_dir, tmp_path, photos, capsys):
    """The surrogate of three photos of Obama was named Obama by SFace and dlib (3 of 3), exit 0."""
    folder = tmp_path / "visit"
    folder.mkdir()
    for number, source in enumerate(_known(data_dir, *photos)):
        shutil.copy(source, folder / f"{number}{source.suffix}")
    assert main(["photo", str(folder), "-o", str(tmp_path / "out"), "--method", "ksame", "--k", "3", "-q"]) == 3
    assert "different people" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_head_fill_covers_a_face_turned_to_profile(data_dir, tmp_path):
    """Frame 24 of the clip: a 170 px profile whose eyes lie 15-30 px apart in the image; the
    ellipse sized by the eyes alone left cheek, lips, jaw and ear in view."""
    capture = cv2.VideoCapture(str(data_dir / "photos" / "known_people" / "short_hamilton_clip.mp4"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 24)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    frame = tmp_path / "frame24.png"
    cv2.imwrite(str(frame), bgr)
    biggest = max(detect_faces(bgr[..., ::-1]), key=lambda face: face.width * face.height)
    assert biggest.width > 120
    anonymize_path(frame, tmp_path / "out.png", PhotoOptions())
    x0, y0, x1, y1 = (int(round(v)) for v in biggest.xyxy)
    box = read_image(tmp_path / "out.png")[max(y0, 0):y1, max(x0, 0):x1]
    grey = np.abs(box.astype(int) - 128).max(axis=-1) <= 2
    assert grey.mean() > 0.9


def test_a_jpeg_without_faces_loses_its_thumbnail_and_what_follows_its_end(data_dir, tmp_path):
    """Pixels copied as they are, but a JFXX thumbnail and a picture after the end of the image
    (an MPO's second frame, a motion photo's video) both showed the face the user had hidden."""
    face_jpeg = (data_dir / "photos" / "known_people" / "obama-480p.jpg").read_bytes()
    with Image.open(data_dir / "photos" / "known_people" / "obama-480p.jpg") as photo:
        thumbnail = np.asarray(photo.convert("RGB").resize((16, 9)), dtype=np.uint8)
    jfxx = b"JFXX\x00\x13" + bytes([16, 9]) + thumbnail.tobytes()  # an RGB thumbnail extension
    sky = data_dir / "photos" / "dlib_faces" / "2008_002470.jpg"  # its sky and ground: no face
    Image.open(sky).crop((0, 250, 500, 332)).save(tmp_path / "plain.jpg", quality=92)
    plain = (tmp_path / "plain.jpg").read_bytes()
    source = tmp_path / "in.jpg"
    source.write_bytes(plain[:2] + b"\xff\xe0" + (len(jfxx) + 2).to_bytes(2, "big") + jfxx + plain[2:] + face_jpeg)
    [report] = anonymize_path(source, tmp_path / "out.jpg", PhotoOptions())
    assert report.faces == 0
    written = (tmp_path / "out.jpg").read_bytes()
    assert b"JFXX" not in written and written.count(b"\xff\xd8") == 1 and written.endswith(b"\xff\xd9")
    np.testing.assert_array_equal(read_image(tmp_path / "out.jpg"), read_image(tmp_path / "plain.jpg"))


def test_small_faces_anywhere_in_a_huge_photo_are_found(data_dir):
    """A 24 Mpx photo was searched only at a third of its size: 21-26 px faces were lost. The
    faces sit in the far corner, so the tiles' boxes must come back to their place."""
    folder = data_dir / "photos" / "dlib_faces"
    labelled = read_labelled_boxes(folder / "testing.xml")
    name = "2008_002470.jpg"
    photo = read_image(folder / name)
    factor = 24 / np.median([x1 - x0 for x0, _, x1, _ in labelled[name]])
    small = cv2.resize(photo, (round(photo.shape[1] * factor), round(photo.shape[0] * factor)),
                       interpolation=cv2.INTER_AREA)
    canvas = np.full((4000, 6000, 3), 200, np.uint8)
    top, left = 3500, 5200
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    faces = detect_faces(canvas)
    for x0, y0, x1, y1 in labelled[name]:
        cx, cy = left + (x0 + x1) / 2 * factor, top + (y0 + y1) / 2 * factor
        assert any(abs(f.x + f.width / 2 - cx) < 12 and abs(f.y + f.height / 2 - cy) < 12 for f in faces)


def test_k_same_of_a_camera_is_a_usage_error_before_the_camera_opens(tmp_path, capsys):
    assert main(["photo", "--camera", str(tmp_path / "no_such_camera.mp4"), "--method", "ksame"]) == 2
    assert "camera" in capsys.readouterr().err


def test_video_and_camera_frames_are_not_searched_in_tiles(data_dir, monkeypatch):
    """They ask for a 640 px copy to keep their pace: the tiles made a 1080p frame 18x slower."""
    from DeFacerLib.photo import detect

    def no_tiles(*args):
        raise AssertionError("a video frame was searched in tiles")

    monkeypatch.setattr(detect, "_detect_tiles", no_tiles)
    frame = cv2.resize(read_image(data_dir / "photos" / "known_people" / "two_people.jpg"), (1920, 1080))
    assert len(detect_faces(frame, max_side_px=640)) >= 2


def test_k_same_finds_groups_of_different_people_a_greedy_first_seed_missed():
    """{A, C, B1, B2}, B1 and B2 one person, k = 2: seeded with the first face, A took C and
    left B1 and B2 together, and the set was refused; [A, B1], [C, B2] is a valid split."""
    from DeFacerLib.photo.identity import same_person
    from DeFacerLib.photo.ksame import _groups

    a, c, b1, b2 = (np.array(v) / np.linalg.norm(v) for v in ([1, 0, 0.], [.2, .98, 0], [0, 0, 1.], [0, .1, 1.]))
    assert same_person(b1, b2) and not same_person(a, c)
    groups = _groups([a, c, b1, b2], 2)
    assert sorted(map(sorted, groups)) == [[0, 2], [1, 3]] or sorted(map(sorted, groups)) == [[0, 3], [1, 2]]


@pytest.mark.parametrize("arguments, said", [
    (["--camera", "0", "IN"], "not both"),  # INPUT was ignored and the camera opened
    (["IN", "-o", "OUT", "--max-frames", "5"], "--max-frames is for --camera"),
    (["IN", "-o", "OUT", "--k", "5"], "--k is for --method ksame"),  # k-Same was meant, fill was done
])
def test_options_that_would_be_ignored_are_usage_errors(data_dir, tmp_path, arguments, said, capsys):
    photo = str(data_dir / "photos" / "known_people" / "obama-240p.jpg")
    arguments = [photo if a == "IN" else str(tmp_path / "out.jpg") if a == "OUT" else a for a in arguments]
    assert main(["photo", *arguments]) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "out.jpg").exists()


def test_an_output_folder_inside_the_input_folder_is_refused(data_dir, tmp_path, capsys):
    """`photo visit/ -o visit/anon` wrote into the folder it read (exit 0), which the next run then
    listed as one more thing in the input."""
    folder = tmp_path / "visit"
    folder.mkdir()
    shutil.copy(_known(data_dir, "obama-240p.jpg")[0], folder)
    for output in (folder / "anon", folder):
        assert main(["photo", str(folder), "-o", str(output), "--overwrite"]) == 4
        assert "inside the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["obama-240p.jpg"]
