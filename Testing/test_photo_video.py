"""Video and camera mode on the real 10 s clip: frame count and audio kept, silent video, frame loop speed."""
from __future__ import annotations

import subprocess

import pytest

from DeFacerLib.errors import InputError
from DeFacerLib.photo.anonymize import PhotoOptions, anonymize_camera, anonymize_path, anonymize_video
from DeFacerLib.photo.media import ffmpeg_exe, open_video, probe


@pytest.fixture(scope="module")
def clip(data_dir):
    return data_dir / "photos" / "known_people" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def short_clip(clip, tmp_path_factory):
    """The clip's first 2 s (60 frames) with its audio, stream-copied (no re-encoding)."""
    path = tmp_path_factory.mktemp("video") / "short.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(clip), "-frames:v", "60", "-t", "2.9", "-c", "copy", str(path)],
                   check=True)
    return path


def test_probe_reads_the_clip(clip):
    info = probe(clip)
    assert (info.width, info.height, info.frames) == (640, 360, 275)
    assert info.has_audio and info.audio_codec == "aac" and abs(info.fps - 29.97) < 0.01


def test_video_round_trip_keeps_frames_and_audio(short_clip, tmp_path):
    source = probe(short_clip)
    report = anonymize_video(short_clip, tmp_path / "out.mp4", PhotoOptions())
    out = probe(tmp_path / "out.mp4")
    assert report.frames == source.frames == out.frames
    assert out.has_audio and out.audio_codec == source.audio_codec == "aac"
    assert (out.width, out.height) == (640, 360)
    # the picture stays in step with the sound (the clip's video starts 0.84 s after its audio)
    assert abs((out.video_start_s - out.audio_start_s) - (source.video_start_s - source.audio_start_s)) < 0.05
    assert report.faces >= report.frames  # at least one face in every frame of this clip
    assert "encoder" not in out.text.lower().split("stream #0:0")[0]  # container metadata dropped


def test_video_without_audio(short_clip, tmp_path):
    silent = tmp_path / "silent.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(short_clip), "-an", "-frames:v", "30", "-c:v", "copy", str(silent)],
                   check=True)
    [report] = anonymize_path(silent, tmp_path / "out.mp4", PhotoOptions(method="blur"))
    out = probe(tmp_path / "out.mp4")
    assert report.audio is False and "no audio" in report.note
    assert out.frames == 30 and not out.has_audio


def test_unreadable_video_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(InputError, match="bad.mp4"):
        anonymize_path(bad, tmp_path / "out.mp4", PhotoOptions())
    assert not (tmp_path / "out.mp4").exists()


def test_camera_loop_on_a_file_source(short_clip):
    """The webcam loop runs on any cv2.VideoCapture source; frames come out at 640x480."""
    stats, _ = anonymize_camera(str(short_clip), PhotoOptions(), max_frames=45)
    assert stats.frames == 45 and (stats.width, stats.height) == (640, 480)
    assert stats.faces >= 45  # speed is measured by scripts/evaluate_photo.py, never asserted in a test


@pytest.mark.slow
def test_camera_mode_runs_a_whole_stream_at_640x480(clip):
    capture = open_video(str(clip))
    capture.release()
    stats, _ = anonymize_camera(str(clip), PhotoOptions(), size=(640, 480))
    assert stats.frames == 275 and (stats.width, stats.height) == (640, 480)
    assert stats.faces >= 275


@pytest.mark.slow
def test_whole_clip_round_trip(clip, tmp_path):
    report = anonymize_video(clip, tmp_path / "out.mp4", PhotoOptions())
    out = probe(tmp_path / "out.mp4")
    assert report.frames == out.frames == 275 and out.has_audio
