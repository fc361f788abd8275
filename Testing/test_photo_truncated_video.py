"""A video file cut short (a copy or download interrupted) is bad input, not a short video.

The real 10 s clip (275 frames), made faststart so its header comes first and then cut to its first
half: OpenCV and ffmpeg alike decode 130 frames and stop, and `defacer photo trunc.mp4 -o anon.mp4`
wrote those 5.2 s, exit 0, no warning. The container still declares 275 frames and 10.02 s: now
exit 3, one line, nothing written. Containers whose count is an estimate or counts frames no
decoder shows (MKV, AVI, an MP4 trimmed by an edit list) still pass when complete.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from DeFacerLib.errors import InputError


def _ffmpeg() -> str:
    try:
        from DeFacerLib.photo.media import ffmpeg_exe

        return ffmpeg_exe()
    except Exception:  # the imageio-ffmpeg wheel missing: a system ffmpeg does as well
        found = shutil.which("ffmpeg")
        if found is None:
            pytest.skip("no ffmpeg binary (neither imageio-ffmpeg's nor one on PATH) to build the cut file with")
        return found


def _ffmpeg_run(*args) -> None:
    subprocess.run([_ffmpeg(), "-y", "-v", "error", *map(str, args)], check=True)


def _cut_in_half(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _defacer(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "DeFacerLib", "photo", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fast(data_dir, tmp_path_factory) -> Path:
    """The real clip stream-copied with its index (moov) first, as a phone or a web upload writes it."""
    path = tmp_path_factory.mktemp("truncated") / "fast.mp4"
    _ffmpeg_run("-i", data_dir / "photos" / "known_people" / "short_hamilton_clip.mp4", "-c", "copy",
                "-movflags", "+faststart", path)
    return path


def test_a_video_cut_in_half_is_an_input_error_and_nothing_is_written(fast, tmp_path):
    trunc = _cut_in_half(fast, tmp_path / "trunc.mp4")
    before = _sha(trunc)
    out = tmp_path / "anon.mp4"
    result = _defacer(trunc, "-o", out, "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (f"defacer: error: {trunc}: the video ends after 130 of 275 frames, 5.2 of 10.0 s "
                        "(cut short?); nothing written")
    assert result.stdout == ""
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trunc.mp4"]  # no temporary left either
    assert _sha(trunc) == before


def test_the_complete_file_still_gives_every_frame(fast, tmp_path):
    from DeFacerLib.photo.media import probe

    out = tmp_path / "anon.mp4"
    result = _defacer(fast, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    source = probe(fast)
    assert source.frames == source.declared_frames == 275
    assert json.loads(result.stdout)["outputs"][0]["frames"] == 275
    assert probe(out).frames == 275


def test_complete_files_whose_count_is_no_exact_declaration_pass(fast, tmp_path):
    """OpenCV's CAP_PROP_FRAME_COUNT for the same 275 frames: 300 as MKV (the container's 10.01 s,
    of which the picture's first 0.84 s are empty, times 29.97 fps), 301 as AVI (its empty frames),
    215 for an MP4 trimmed from 3.3 s by an edit list that shows 201. Each reaches the end it
    declares, and is whole; their halves do not."""
    from DeFacerLib.photo.media import probe

    mkv, avi, trimmed = tmp_path / "copy.mkv", tmp_path / "enc.avi", tmp_path / "trimmed.mp4"
    _ffmpeg_run("-i", fast, "-c", "copy", mkv)
    _ffmpeg_run("-i", fast, avi)  # re-encoded: MPEG-4 part 2 and MP3, the AVI defaults
    _ffmpeg_run("-ss", "3.3", "-i", fast, "-c", "copy", trimmed)
    for path, declared, frames in ((mkv, 300, 275), (avi, 301, 275), (trimmed, 215, 201)):
        info = probe(path)
        assert (info.declared_frames, info.frames) == (declared, frames), path
    for path, declared in ((mkv, 300), (avi, 301)):
        half = _cut_in_half(path, tmp_path / f"half{path.suffix}")
        with pytest.raises(InputError, match=rf"half\{path.suffix}: the video ends after \d+ of {declared} frames"):
            probe(half)


def test_a_matroska_picture_shorter_than_its_sound_is_whole(fast, tmp_path):
    """The first 4 s of picture with the full 10 s of sound: the file's duration is the sound's, so
    OpenCV estimates 300 frames; the video stream's own DURATION tag (3.17 s) is what it declares."""
    from DeFacerLib.photo.media import probe

    picture, mkv = tmp_path / "picture.mp4", tmp_path / "long_sound.mkv"
    _ffmpeg_run("-i", fast, "-t", "4", "-an", "-c:v", "copy", picture)
    _ffmpeg_run("-i", picture, "-i", fast, "-map", "0:v", "-map", "1:a", "-c", "copy", mkv)
    info = probe(mkv)
    assert (info.declared_frames, info.frames) == (300, 95)
