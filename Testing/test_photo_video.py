"""Video and camera mode on the real 10 s clip: frame count and audio kept, silent video, frame loop speed."""
from __future__ import annotations

import json
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


# ---- what the CLI shows of a camera source, the camera's output, the video report's frame rates ----
SECRET = "S3cretPass"


def _defacer(*argv, cwd=None):
    import sys

    return subprocess.run([sys.executable, "-m", "DeFacerLib", "photo", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd)


def test_shown_source_hides_a_urls_password():
    from DeFacerLib.photo.media import shown_source

    assert shown_source(f"rtsp://drsmith:{SECRET}@10.0.0.7:554/stream1") == "rtsp://drsmith:***@10.0.0.7:554/stream1"
    assert shown_source("http://u:p@ss:w@cam.local/x?a=1") == "http://u:***@cam.local/x?a=1"  # '@' in the password
    for typed in ("s3c/ret", "s3c?ret", "s3c#ret", "a/b@c?d"):  # not percent-encoded: the whole password was printed
        assert shown_source(f"rtsp://admin:{typed}@10.0.0.1/stream") == "rtsp://admin:***@10.0.0.1/stream", typed
    for kept in ("rtsp://10.0.0.7:554/stream1", "http://token@cam.local/x", "/data/visit:1@home.mp4", "0", 3):
        assert shown_source(kept) == str(kept)


@pytest.fixture
def served_clip(short_clip, tmp_path):
    """The short clip (moov first, so it streams) served over HTTP on this machine: a real URL
    source; the server ignores the user and password the URL carries, as a camera would check them."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(short_clip), "-c", "copy", "-movflags", "+faststart",
                    str(folder / "cam.mp4")], check=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_camera_url_password_is_never_printed(served_clip, tmp_path):
    """stderr of a failed open, the JSON and the console line of a run that worked: the URL's
    password was echoed in full in each (rtsp://user:password@... ends up in logs)."""
    url = f"http://drsmith:{SECRET}@127.0.0.1:{served_clip}/cam.mp4"
    ok = _defacer("--camera", url, "--max-frames", "5", "--json", "-o", tmp_path / "rec.mp4")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["frames"] == 5 and result["camera"] == f"http://drsmith:***@127.0.0.1:{served_clip}/cam.mp4"
    console = _defacer("--camera", url, "--max-frames", "3")
    assert console.returncode == 0 and "3 frames" in console.stdout, console.stderr
    bad = _defacer("--camera", f"rtsp://drsmith:{SECRET}@127.0.0.1:1/cam", "--max-frames", "1")
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1, bad.stderr
    assert "rtsp://drsmith:***@127.0.0.1:1/cam: cannot open" in bad.stderr
    for run in (ok, console, bad):
        assert SECRET not in run.stdout + run.stderr
    assert SECRET.encode() not in (tmp_path / "rec.mp4").read_bytes()


def test_camera_refuses_to_record_over_its_own_input(short_clip, tmp_path):
    """--camera X.mp4 -o X.mp4 --overwrite replaced the input with 10 anonymized frames (exit 0);
    the video path refuses that even with --overwrite, and now so does the camera, before it opens."""
    source = tmp_path / "visit.mp4"
    source.write_bytes(short_clip.read_bytes())
    before = source.read_bytes()
    for output in (source, tmp_path / "sub" / ".." / "visit.mp4"):
        run = _defacer("--camera", source, "-o", output, "--overwrite", "--max-frames", "10")
        assert run.returncode == 4 and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith("defacer: error:") and "would overwrite the input" in run.stderr
    video = _defacer(source, "-o", source, "--overwrite")  # the video path's own refusal: the same words and code
    assert video.returncode == 4 and "would overwrite the input" in video.stderr
    assert source.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["visit.mp4"]


def test_camera_refuses_an_existing_recording_before_it_opens_the_stream(short_clip, tmp_path):
    """The recording's path is checked as a video's is (anonymize.check_target), before the stream
    is opened: an existing one was found only once the camera was on, so a source that cannot
    open hid it ("cannot open the video") and the user met it on the next try."""
    from DeFacerLib.errors import OutputError

    earlier = tmp_path / "rec.mp4"
    earlier.write_bytes(short_clip.read_bytes())
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        anonymize_camera(str(tmp_path / "no_such_clip.mp4"), PhotoOptions(), max_frames=3, destination=earlier)
    assert earlier.read_bytes() == short_clip.read_bytes()


def test_ksame_on_a_video_or_a_stream_is_one_usage_error(short_clip, tmp_path):
    """k-Same averages a set of faces; it cannot run on a video (exit 3, an input error) nor on a
    camera stream (exit 2): the same slip, now the same code, and nothing written."""
    video = _defacer(short_clip, "-o", tmp_path / "out.mp4", "--method", "ksame")
    camera = _defacer("--camera", short_clip, "-o", tmp_path / "rec.mp4", "--method", "ksame", "--max-frames", "3")
    for run, words in ((video, "not video"), (camera, "not a camera stream")):
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and words in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_camera_file_named_from_home_is_found(short_clip, tmp_path):
    """`--camera=~/clip.mp4` (the shell leaves ~ after `=`) was opened as the literal path "~/clip.mp4"."""
    import os
    import sys

    (tmp_path / "clip.mp4").write_bytes(short_clip.read_bytes())
    run = subprocess.run([sys.executable, "-m", "DeFacerLib", "photo", "--camera=~/clip.mp4", "--max-frames", "2", "--json"],
                         capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["frames"] == 2


def test_camera_summary_says_when_the_method_is_cosmetic(short_clip):
    """Photo and video lines say "(cosmetic: not de-identifying)"; the camera's said only "faces hidden"."""
    blur = _defacer("--camera", short_clip, "--max-frames", "5", "--method", "blur")
    assert blur.returncode == 0, blur.stderr
    assert "faces hidden" in blur.stdout and "(cosmetic: not de-identifying)" in blur.stdout
    fill = _defacer("--camera", short_clip, "--max-frames", "5")
    assert fill.returncode == 0 and "faces hidden" in fill.stdout and "cosmetic" not in fill.stdout
    reports = {method: json.loads(_defacer("--camera", short_clip, "--max-frames", "3", "--method", method, "--json").stdout)
               for method in ("blur", "fill")}
    assert reports["blur"]["de_identifying"] is False and reports["fill"]["de_identifying"] is True


def test_video_report_tells_the_frame_rate_from_the_processing_speed(short_clip, tmp_path):
    """`fps` in the JSON was frames processed a second (24.7 for this 29.97 fps clip, on 2 busy cores)."""
    run = _defacer(short_clip, "-o", tmp_path / "out.mp4", "--json")
    assert run.returncode == 0, run.stderr
    [report] = json.loads(run.stdout)["outputs"]
    assert "fps" not in report
    assert abs(report["video_fps"] - 29.97) < 0.01 and abs(report["video_fps"] - probe(tmp_path / "out.mp4").fps) < 0.01
    assert report["processing_fps"] > 0
    camera = json.loads(_defacer("--camera", short_clip, "--max-frames", "3", "--json").stdout)
    assert "fps" not in camera and camera["processing_fps"] > 0


def test_video_that_opencv_stops_reading_early_is_an_input_error(short_clip, tmp_path):
    """4000 zeroed bytes halfway into the short clip: ffmpeg still decodes 59 of its 60 frames, OpenCV
    stopped at the damage after 28, and the run wrote those 28 (0.9 s of picture with 2.85 s of
    sound) and exited 0. The count to compare with is ffmpeg's decode (probe), not the container's:
    OpenCV's CAP_PROP_FRAME_COUNT is an estimate outside MP4/MOV (85 for this clip as MKV, 60 read)."""
    import cv2

    fast = tmp_path / "fast.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(short_clip), "-c", "copy", "-movflags", "+faststart", str(fast)],
                   check=True)
    data = bytearray(fast.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = bytes(4000)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    assert probe(damaged).frames == 59
    with pytest.raises(InputError, match=r"damaged\.mp4: only 28 of its 59 frames could be read"):
        anonymize_video(damaged, tmp_path / "out.mp4", PhotoOptions())
    assert not (tmp_path / "out.mp4").exists()

    mkv = tmp_path / "clip.mkv"  # a healthy file whose container count is wrong still works
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(short_clip), "-c", "copy", str(mkv)], check=True)
    capture = open_video(str(mkv))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 85
    capture.release()
    assert anonymize_video(mkv, tmp_path / "mkv.mp4", PhotoOptions()).frames == probe(tmp_path / "mkv.mp4").frames == 60


def test_a_camera_source_that_gives_no_frame_is_an_input_error(short_clip, tmp_path):
    """The short clip cut to its first 20,000 bytes opens but yields no frame: the run printed
    "frames": 0, exit 0, and named a recording it never wrote."""
    source = tmp_path / "cut.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(short_clip), "-c", "copy", "-movflags", "+faststart",
                    str(tmp_path / "fast.mp4")], check=True)
    source.write_bytes((tmp_path / "fast.mp4").read_bytes()[:20_000])
    run = _defacer("--camera", source, "-o", tmp_path / "rec.mp4", "--json")
    assert run.returncode == 3 and run.stderr.count("\n") == 1, run.stderr
    assert "cut.mp4: the stream gave no frame; nothing recorded" in run.stderr and run.stdout == ""
    assert not (tmp_path / "rec.mp4").exists()



def test_a_url_given_as_input_is_not_echoed_with_its_password(tmp_path):
    """A stream URL given as INPUT (not --camera) was 'rtsp:/drsmith:PASSWORD@...: file not found'."""
    run = _defacer(f"rtsp://drsmith:{SECRET}@127.0.0.1:1/cam", "-o", tmp_path / "out.mp4")
    assert run.returncode == 3 and run.stderr.count("\n") == 1, run.stderr
    assert SECRET not in run.stdout + run.stderr
    assert "rtsp://drsmith:***@127.0.0.1:1/cam" in run.stderr and "--camera" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_before_the_first_frame_is_an_interruption(monkeypatch):
    """Ctrl-C while a camera has given no frame yet (a stream slow to start) ended as the input
    error 'the stream gave no frame' (exit 3); it is an interruption (KeyboardInterrupt: exit 130)."""
    import os
    import signal

    import DeFacerLib.photo.anonymize as anonymize

    class Stalled:
        def read(self):
            os.kill(os.getpid(), signal.SIGINT)  # the user gives up while the first read waits
            return False, None

        def get(self, _):
            return 0.0

        def release(self):
            pass

    monkeypatch.setattr(anonymize, "open_video", lambda source: Stalled())
    with pytest.raises(KeyboardInterrupt):
        anonymize_camera(0, PhotoOptions(), max_frames=5)


def test_video_over_a_file_size_limit_names_the_reason(short_clip, tmp_path):
    """ffmpeg, killed by SIGXFSZ at a file-size limit (`ulimit -f`, a quota), writes nothing on
    stderr: the error read "ffmpeg failed ()" (or "stopped ()"). It names the signal now; nothing is left."""
    import resource
    import sys

    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "photo", str(short_clip), "-o", str(out / "anon.mp4")],
                            capture_output=True, text=True, timeout=600,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000)))
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip() in (f"defacer: error: cannot write {out / 'anon.mp4'}: ffmpeg {how} (File size limit exceeded)"
                                     for how in ("stopped", "failed")), result.stderr  # mid-stream, or at its end
    assert list(out.iterdir()) == []
