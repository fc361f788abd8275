"""`defacer photo` on real photos in other modes, folders with a bad file, odd-sized
video and a live stream stopped with Ctrl-C (docs/photo.md, "Inputs and outputs")."""
from __future__ import annotations

import os
import signal
import subprocess
import threading

import numpy as np
import pytest
from PIL import Image

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.photo.anonymize import PhotoOptions, anonymize_camera, anonymize_path
from DeFacerLib.photo.media import ffmpeg_exe, probe

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def face_photo(data_dir):
    return Image.open(data_dir / "photos" / "known_people" / "obama-480p.jpg").convert("RGB")


def _modes(photo: Image.Image) -> dict[str, Image.Image]:
    grey = photo.convert("L")
    rgba = np.dstack([np.asarray(photo), np.linspace(0, 255, photo.width, dtype=np.uint8)[None, :].repeat(photo.height, 0)])
    return {
        "grey.png": grey,
        "deep.png": Image.fromarray(np.asarray(grey, dtype=np.uint16) * 200 + 7),  # 16-bit, not a 0-255 range
        "alpha.png": Image.fromarray(rgba, "RGBA"),
        "grey.jpg": grey,
    }


@pytest.mark.parametrize("name", ["grey.png", "deep.png", "alpha.png", "grey.jpg"])
def test_photo_keeps_mode_depth_and_alpha(face_photo, tmp_path, name):
    """A grey, 16-bit or transparent photo comes out in its own mode: the face hidden, alpha and
    the pixels outside the hidden region exactly as they were (they were 8-bit RGB before)."""
    source = tmp_path / name
    _modes(face_photo)[name].save(source)
    anonymize_path(source, tmp_path / ("out_" + name), PhotoOptions())
    before, after = Image.open(source), Image.open(tmp_path / ("out_" + name))
    assert after.mode == before.mode and after.size == before.size
    a, b = np.asarray(before), np.asarray(after)
    changed = (a != b).reshape(a.shape[0], a.shape[1], -1).any(axis=-1)
    assert 0.02 < changed.mean() < 0.6  # the head, not the whole picture
    if name == "alpha.png":
        np.testing.assert_array_equal(b[..., 3], a[..., 3])
    if name.endswith(".png"):  # lossless: every pixel outside the hidden region is untouched
        rows, cols = np.nonzero(changed)
        outside = np.ones_like(changed)
        outside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = False
        np.testing.assert_array_equal(a[outside], b[outside])


@pytest.mark.parametrize("mode", ["L", "I;16", "RGBA"])
def test_faceless_photo_pixels_identical_in_any_mode(tmp_path, mode):
    """The docs promise identical pixels for a photo without faces: also for grey, 16-bit, alpha."""
    y, x = np.mgrid[0:240, 0:320]
    grey = (y * 0.5 + x * 0.3).astype(np.uint8)
    pixels = {"L": grey, "I;16": grey.astype(np.uint16) * 250 + 3,
              "RGBA": np.dstack([grey, grey[::-1], 255 - grey, (x % 256).astype(np.uint8)])}[mode]
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    reports = anonymize_path(tmp_path / "plain.png", tmp_path / "out.png", PhotoOptions())
    assert reports[0].faces == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.dtype == pixels.dtype
    np.testing.assert_array_equal(out, pixels)


def test_folder_with_a_corrupt_photo_leaves_no_output_folder(data_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = (data_dir / "photos" / "known_people" / "obama-480p.jpg").read_bytes()
    (folder / "a.jpg").write_bytes(good)
    (folder / "b.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="b.jpg"):
        anonymize_path(folder, tmp_path / "out", PhotoOptions())
    assert not (tmp_path / "out").exists()


def test_folder_output_that_cannot_be_made_is_an_output_error(data_dir, tmp_path):
    """A folder of photos into a folder under a file (or on a read-only mount) was exit 1
    "internal error (NotADirectoryError ...)", after every photo had been read and anonymized."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((data_dir / "photos" / "known_people" / "obama-480p.jpg").read_bytes())
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(OutputError, match="is a file"):
        anonymize_path(folder, tmp_path / "taken" / "out", PhotoOptions())
    assert (tmp_path / "taken").read_text() == "a file"


def test_ksame_refusal_leaves_no_output_folder(data_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((data_dir / "photos" / "known_people" / "obama-480p.jpg").read_bytes())
    with pytest.raises(InputError, match="k-Same"):
        anonymize_path(folder, tmp_path / "out", PhotoOptions(method="ksame"))
    assert not (tmp_path / "out").exists()


def test_video_with_odd_width_and_height(data_dir, tmp_path):
    """H.264 (yuv420p) needs even sides: a 639x359 clip used to fail as 'cannot write' (exit 4)."""
    odd = tmp_path / "odd.mp4"
    clip = data_dir / "photos" / "known_people" / "short_hamilton_clip.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(clip), "-t", "2",
                    "-vf", "scale=639:359,format=yuv444p", "-c:v", "libx264", "-c:a", "copy", str(odd)], check=True)
    assert (probe(odd).width, probe(odd).height) == (639, 359)
    report = anonymize_path(odd, tmp_path / "out.mp4", PhotoOptions())[0]
    info = probe(tmp_path / "out.mp4")
    assert report.frames > 20 and report.faces > 0 and report.audio
    assert info.has_audio and (info.width, info.height) == (640, 360)


def test_camera_ctrl_c_ends_the_stream_and_keeps_the_recording(data_dir, tmp_path):
    """A webcam has no end but Ctrl-C (or --max-frames): Ctrl-C used to throw the recording away."""
    clip = data_dir / "photos" / "known_people" / "short_hamilton_clip.mp4"
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        stats, _ = anonymize_camera(str(clip), PhotoOptions(), destination=tmp_path / "session.mp4")
    finally:
        timer.cancel()
    assert 0 < stats.frames < 200 < probe(clip).frames  # stopped by Ctrl-C, not by the end of the clip
    assert probe(tmp_path / "session.mp4").frames == stats.frames


def test_cli_ksame_k_below_two_is_a_usage_error_before_reading(tmp_path):
    """--k 1 is a command-line mistake (exit 2), told before a whole folder is read and searched."""
    import sys

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff")  # would fail the read with exit 3
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "photo", str(folder), "-o", str(tmp_path / "out"),
                             "--method", "ksame", "--k", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--k" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
