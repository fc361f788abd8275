"""Video and camera mode on the real 10 s clip: frame count and audio kept, silent video, frame loop speed."""
from __future__ import annotations

import subprocess

import numpy as np
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


def test_camera_loop_on_a_file_source(short_clip, tmp_path):
    """The webcam loop runs on any cv2.VideoCapture source; the 16:9 clip fits 640x480 as 640x360
    (it was stretched to 640x480), and so does its recording."""
    stats, _ = anonymize_camera(str(short_clip), PhotoOptions(), max_frames=45, destination=tmp_path / "rec.mp4")
    assert stats.frames == 45 and (stats.width, stats.height) == (640, 360)
    assert stats.faces >= 45  # speed is measured by scripts/evaluate_photo.py, never asserted in a test
    recording = probe(tmp_path / "rec.mp4")
    assert (recording.width, recording.height, recording.frames) == (640, 360, 45)


@pytest.mark.slow
def test_camera_mode_runs_a_whole_stream_within_640x480(clip):
    capture = open_video(str(clip))
    capture.release()
    stats, _ = anonymize_camera(str(clip), PhotoOptions(), size=(640, 480))
    assert stats.frames == 275 and (stats.width, stats.height) == (640, 360)
    assert stats.faces >= 275


class _Webcam720p:
    """A frame source like a 16:9 720p webcam: the real clip's frames at 1280x720."""

    def __init__(self, clip):
        self.capture = open_video(str(clip))

    def read(self):
        import cv2

        ok, bgr = self.capture.read()
        return ok, cv2.resize(bgr, (1280, 720), interpolation=cv2.INTER_CUBIC) if ok else bgr


def _shape_ratio(face):
    """Eye-to-mouth over eye-to-eye distance: a vertical stretch changes it."""
    p = face.landmarks5
    return np.linalg.norm((p[3] + p[4]) / 2 - (p[0] + p[1]) / 2) / np.linalg.norm(p[1] - p[0])


def test_camera_frames_keep_their_aspect_ratio(clip):
    """A 16:9 camera asked for 640x480 gives 640x360 frames in which faces keep their shape and
    are found. Stretched to 4:3 (before), the largest face's eye-mouth/eye-eye ratio grew by a
    median 1.17 over 60 frames and YuNet found 2.33 faces a frame, not 3.08."""
    import cv2

    from DeFacerLib.photo.anonymize import DETECT_SIDE_CAMERA_PX, find_faces
    from DeFacerLib.photo.camera import run_stream

    seen = []

    def detect_only(rgb):
        faces = find_faces(rgb, PhotoOptions(), max_side_px=DETECT_SIDE_CAMERA_PX)
        seen.append((rgb.shape, faces))
        return rgb, len(faces)

    stats = run_stream(_Webcam720p(clip), detect_only, max_frames=30, size=(640, 480))
    assert stats.frames == 30 and (stats.width, stats.height) == (640, 360)
    assert all(shape == (360, 640, 3) and len(faces) >= 2 for shape, faces in seen)
    reference = open_video(str(clip))  # the same frames at their own 640x360
    ratios = []
    for _, faces in seen:
        rgb = cv2.cvtColor(reference.read()[1], cv2.COLOR_BGR2RGB)
        own = max(find_faces(rgb, PhotoOptions(), max_side_px=DETECT_SIDE_CAMERA_PX), key=lambda f: f.size_px)
        ratios.append(_shape_ratio(max(faces, key=lambda f: f.size_px)) / _shape_ratio(own))
    reference.release()
    assert abs(np.median(ratios) - 1) < 0.03


@pytest.mark.slow
def test_whole_clip_round_trip(clip, tmp_path):
    report = anonymize_video(clip, tmp_path / "out.mp4", PhotoOptions())
    out = probe(tmp_path / "out.mp4")
    assert report.frames == out.frames == 275 and out.has_audio


FAKE_PHI = ("SMITHERSON", "99887766", "HOSPITALDOC", "51.5074")


def test_video_output_keeps_no_tags_or_chapters(short_clip, tmp_path):
    """Chapter titles, stream titles/handlers and global tags (names, an MRN, a date, a place) are
    all gone from the output, chapters included; the audio is still kept."""
    (tmp_path / "meta.txt").write_text(
        ";FFMETADATA1\ntitle=Visit of JOHN SMITHERSON\ncomment=MRN 99887766\nartist=Dr ALICE HOSPITALDOC\n"
        "creation_time=2024-05-01T10:11:12Z\nlocation=+51.5074-000.1278/\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=Intake JOHN SMITHERSON\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=1000\nEND=2000\ntitle=Exam MRN 99887766\n")
    tagged = tmp_path / "tagged.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(short_clip), "-i", str(tmp_path / "meta.txt"), "-map", "0",
                    "-map_metadata", "1", "-map_chapters", "1", "-c", "copy",
                    "-metadata:s:v:0", "title=camera of JOHN SMITHERSON", "-metadata:s:v:0", "handler_name=cam SMITHERSON",
                    "-metadata:s:a:0", "title=voice of JOHN SMITHERSON", "-metadata:s:a:0", "handler_name=mic SMITHERSON",
                    str(tagged)], check=True)
    source = probe(tagged)
    assert "Chapter #0:1" in source.text and all(word in source.text for word in FAKE_PHI)  # the input carries them

    report = anonymize_video(tagged, tmp_path / "out.mp4", PhotoOptions())
    out = probe(tmp_path / "out.mp4")
    dump = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "out.mp4"), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, check=True).stdout
    data = (tmp_path / "out.mp4").read_bytes()
    assert "Chapter" not in out.text and "[CHAPTER]" not in dump  # no chapters at all, not even untitled ones
    assert b"chpl" not in data and b"chap" not in data  # no Nero chapter list, no QuickTime chapter track reference
    for word in FAKE_PHI:
        assert word not in out.text and word not in dump and word.encode() not in data
    assert "2024-05-01" not in out.text
    assert report.audio and out.has_audio and out.audio_codec == "aac" and out.frames == report.frames == source.frames


def _frame(clip, index):
    import cv2

    capture = open_video(str(clip))
    for _ in range(index + 1):
        ok, bgr = capture.read()
    capture.release()
    assert ok
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_video_frames_use_the_landmarks_asked_for(clip):
    """--landmarks 68 on video: frames used YuNet's 5 points while the report was computed for 68."""
    from DeFacerLib.photo.anonymize import DETECT_SIDE_VIDEO_PX, find_faces, frame_processor
    from DeFacerLib.photo.obscure import obscure_faces

    rgb = _frame(clip, 30)  # a 230 px face turned towards profile and a 62 px one
    out, count = frame_processor(PhotoOptions(method="bar", landmarks="68"))(rgb)
    bars = {mode: obscure_faces(rgb, find_faces(rgb, PhotoOptions(landmarks=mode), max_side_px=DETECT_SIDE_VIDEO_PX), "bar")
            for mode in ("5", "68")}
    assert count == 2
    np.testing.assert_array_equal(out, bars["68"])
    covered = {mode: int((bar != rgb).any(axis=-1).sum()) for mode, bar in bars.items()}
    assert covered["68"] > 4 * covered["5"] > 0  # measured 12819 and 2336 px: the two differ, and 68 was used
