"""Anonymize photographs, folders, DICOM photos and videos: detect, obscure, write pixels only.

One options object drives every input kind. A photo without faces is written back with
identical pixels (and without its metadata) and reported as such. k-Same works on the set of
faces of all images given together (a folder), never on one face alone.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from DeFacerLib.errors import InputError, OutputError, UsageError, check_choice
from DeFacerLib.photo.camera import FaceMemory, run_stream, stop_on_ctrl_c
from DeFacerLib.photo.detect import DEFAULT_DETECTOR, DETECTORS, MIN_FACE_PX, Face, detect_faces
from DeFacerLib.photo.ksame import DEFAULT_K, k_same
from DeFacerLib.photo.landmarks import LANDMARK_MODES, add_landmarks
from DeFacerLib.photo.media import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    VideoWriter,
    check_output_suffix,
    is_url,
    kind_of,
    open_video,
    native_output,
    probe,
    read_dicom_image,
    read_image_native,
    shown_source,
    write_dicom_image,
    write_image,
    write_unchanged,
)
from DeFacerLib.photo.obscure import DEFAULT_METHOD, METHODS, obscure_faces
from DeFacerLib.photo.regions import REGIONS

ROTATIONS = {"none": (0.0,), "upright": (0.0, -30.0, 30.0), "all": (0.0, 90.0, -90.0, 180.0, -30.0, 30.0)}
# (method, region, landmarks) that passed the recognition test (scripts/evaluate_photo.py,
# docs/benchmarks.md, photo section): rank-1 <= 2/N (k-Same: <= 1/k) for naive and adaptive attackers,
# SFace and dlib. Every other choice is cosmetic and reported as such.
DE_IDENTIFYING = {("fill", "head", "5"), ("fill", "head", "68"), ("ksame", "head", "5"), ("ksame", "head", "68")}
DETECT_SIDE_VIDEO_PX = 640  # video frames are searched at most this size
# camera frames (within 640x480: 640x360 from a 16:9 camera) are searched 480 px wide: 21 ms of CPU a frame
# instead of 32, so the loop keeps real time on 2 busy cores; faces from about 27 px of the 640 px frame (a
# patient at a webcam is 150+)
DETECT_SIDE_CAMERA_PX = 480


def is_de_identifying(method: str, region: str | None, landmarks: str = "5") -> bool:
    """Whether this choice passed the recognition test (DE_IDENTIFYING: fill or ksame over the whole
    head); every other one is cosmetic. ``region`` None is the method's own; ``landmarks`` "auto"
    counts as "68" where dlib is installed."""
    from DeFacerLib.photo.models import dlib_available
    from DeFacerLib.photo.obscure import METHOD_REGION
    from DeFacerLib.photo.regions import DEFAULT_REGION

    if method == "ksame":
        region = "head"
    if landmarks == "auto":
        landmarks = "68" if dlib_available() else "5"
    return (method, METHOD_REGION.get(method, region or DEFAULT_REGION), landmarks) in DE_IDENTIFYING


@dataclass
class PhotoOptions:
    """How ``anonymize_*`` find and hide faces; the fields are ``defacer photo``'s options
    (``score_threshold`` is ``--score``; None: the detector's recall-first DEFAULT_SCORE). A name
    that is not one of the choices is refused here (UsageError), before any photo is read."""

    method: str = DEFAULT_METHOD
    region: str | None = None  # None: the method's own region (face for most, eyes for bar)
    detector: str = DEFAULT_DETECTOR
    landmarks: str = "5"  # "5" (YuNet, permissive) or "68"/"auto" (dlib, NON-COMMERCIAL model)
    k: int = DEFAULT_K
    rotations: str = "none"
    score_threshold: float | None = None
    min_face_px: float = MIN_FACE_PX

    def __post_init__(self):  # options a user chose: a bad one is a usage error (exit 2)
        # else an error from deep in the first photo's regions, after detection had run
        for what, value, choices in (("method", self.method, METHODS), ("detector", self.detector, DETECTORS),
                                     ("landmarks", self.landmarks, LANDMARK_MODES),
                                     ("rotations", self.rotations, ROTATIONS)):
            check_choice(what, value, choices)
        if self.region is not None:
            check_choice("region", self.region, REGIONS)
        score = self.score_threshold
        if score is not None and not (np.isfinite(score) and (self.detector != "yunet" or 0 <= score < 1)):
            # YuNet's scores lie in [0, 1]: a threshold of 1 or more finds no face, and writes every photo as it was
            raise UsageError(f"score threshold {score} cannot work for {self.detector}"
                             + ("; YuNet scores lie in 0-1" if self.detector == "yunet" else "; give a finite number"))


# Photos no one looks at while they are anonymized (batch's BIDS photos, the faces of a DICOM
# archive): every orientation is searched, since nobody is there to say how the camera was held
UNATTENDED = PhotoOptions(rotations="all")


@dataclass
class PhotoReport:
    """What ``anonymize_path``/``anonymize_video`` did to one input: faces hidden (``boxes``: x0, y0,
    x1, y1 in pixels), the method and whether it is de-identifying; for video, frames, the video's
    own ``video_fps``, the speed ``processing_fps`` and whether audio was kept; ``note``: what to
    look at (no face found, pixels unchanged; a video without audio)."""

    input: str
    output: str
    kind: str
    faces: int
    method: str
    de_identifying: bool
    frames: int | None = None
    video_fps: float | None = None  # the video's own frame rate (kept in the output)
    processing_fps: float | None = None  # frames anonymized a second: a speed, not a frame rate
    audio: bool | None = None
    note: str = ""
    boxes: list = field(default_factory=list)
    # k-Same: faces filled instead, their group's average being still one of them (ksame.REVEAL_MARGIN)
    ksame_filled: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def find_faces(rgb: np.ndarray, options: PhotoOptions, max_side_px: int | None = None) -> list[Face]:
    """Detected faces with landmarks, as the options ask (huge images are searched downscaled)."""
    kwargs = {} if max_side_px is None else {"max_side_px": max_side_px}
    faces = detect_faces(rgb, options.detector, options.score_threshold, options.min_face_px,
                         ROTATIONS[options.rotations], **kwargs)
    return add_landmarks(rgb, faces, options.landmarks)


def anonymize_array(rgb: np.ndarray, options: PhotoOptions, faces: list[Face] | None = None):
    """(anonymized copy, faces) of one uint8 RGB image (not k-Same: that needs a set)."""
    if options.method == "ksame":
        raise InputError("k-Same needs a set of faces: give a folder of photos (see docs/photo.md)")
    if faces is None:
        faces = find_faces(rgb, options)
    return obscure_faces(rgb, faces, options.method, options.region), faces


# ---- files and folders ----------------------------------------------------------------------------
def folder_contents(folder: Path) -> tuple[list[Path], list[str]]:
    """(the photos a folder run anonymizes, the names of what it leaves out: videos, other
    formats such as .heic, subfolders; hidden entries are neither)."""
    photos, others = [], []
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and (entry.suffix.lower() in IMAGE_SUFFIXES or entry.suffix.lower() in DICOM_SUFFIXES):
            photos.append(entry)
        else:
            others.append(entry.name + ("/" if entry.is_dir() else ""))
    return photos, others


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files, others = folder_contents(path)
        if not files:
            found = f" (it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''})" if others else ""
            raise InputError(f"{path}: no photos (.jpg .png .tif .dcm) in this folder{found}")
        return files
    if not path.exists():
        raise InputError(f"{path}: file not found")
    return [path]


def _read_still(path: Path):
    """(kind, the DICOM dataset or the image in its own mode, uint8 RGB for detection)."""
    if kind_of(path) == "dicom":
        dataset, rgb = read_dicom_image(path)
        return "dicom", dataset, rgb
    rgb, native = read_image_native(path)
    return "image", native, rgb


def _write_still(source: Path, path: Path, kind: str, original, rgb: np.ndarray, out: np.ndarray, obscured: bool) -> None:
    if kind == "dicom" and not obscured:  # nothing to hide in the pixels: the file as it was
        from DeFacerLib.io.atomic import atomic_path

        try:
            with atomic_path(path) as temporary:
                temporary.write_bytes(source.read_bytes())
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    elif kind == "dicom":
        write_dicom_image(path, original, out, obscured)
    elif obscured:
        write_image(path, native_output(original, rgb, out))
    else:
        write_unchanged(source, path, original)


def check_target(source, target, overwrite: bool) -> None:
    """Before anything is read: an output at the input's own path would replace the input, refused
    with --overwrite too (``source`` None: a camera, no file to protect); one that exists needs
    --overwrite. Photos, videos and camera recordings alike."""
    target = Path(target)
    if source is not None and target.resolve() == Path(source).resolve():
        raise OutputError(f"{target}: would overwrite the input; choose another output")
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists; pass --overwrite or choose another output")


def _write_all(jobs, destination: Path, folder: bool) -> None:
    """Write every output, or none: a failed write removes the outputs of this run (and the
    output folder when this run made it), so no half-done folder is left behind."""
    made = folder and not destination.exists()
    written: list[Path] = []
    try:
        if folder:
            from DeFacerLib.io.atomic import make_folder

            make_folder(destination)  # a read-only place: one line (exit 4), not an internal error
        for job in jobs:
            _write_still(*job)
            written.append(job[1])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if made:
            shutil.rmtree(destination, ignore_errors=True)
        raise


def anonymize_path(source, destination, options: PhotoOptions, overwrite: bool = False) -> list[PhotoReport]:
    """Anonymize a photo, a DICOM photo, a video, or a folder of photos into ``destination``.

    Everything is read and anonymized before the first write, and a failure removes what this
    run wrote: a bad photo in a folder leaves no output folder behind.
    """
    from DeFacerLib.io.atomic import check_name_fits

    if is_url(source) and not Path(source).exists():  # a stream, not a file: its password is not echoed
        raise InputError(f"{shown_source(source)}: a URL is not a file; read a stream with --camera SOURCE")
    source, destination = Path(source), Path(destination)
    check_name_fits(destination, "output")
    if source.is_file() and kind_of(source) == "video":
        return [anonymize_video(source, destination, options, overwrite=overwrite)]
    files = _inputs(source)
    if source.is_dir():
        if destination.exists() and not destination.is_dir():
            raise OutputError(f"{destination}: the input is a folder, so the output must be a folder")
        from DeFacerLib.io.atomic import check_output_folder, is_within

        check_output_folder(destination)  # before the photos are read and anonymized
        if is_within(destination, source):  # it added a folder to the input, which the next run lists too
            raise OutputError(f"{destination} is inside the input folder {source}; choose a folder outside it "
                              "(inputs are never modified)")
        targets = [destination / f.name for f in files]
    else:
        targets = [destination]
        check_output_suffix(kind_of(source), destination)
    for file, target in zip(files, targets):
        check_target(file, target, overwrite)

    read = [_read_still(f) for f in files]  # read everything first: a bad file stops before any write
    faces = [find_faces(rgb, options) for _, _, rgb in read]
    filled_instead = [0] * len(read)
    if options.method == "ksame":
        result = k_same([rgb for _, _, rgb in read], faces, options.k)
        outputs = result.images
        for i, _ in result.filled:
            filled_instead[i] += 1
    else:
        outputs = [obscure_faces(rgb, f, options.method, options.region) for (_, _, rgb), f in zip(read, faces)]
    jobs = [(file, target, kind, original, rgb, out, bool(found))
            for file, target, (kind, original, rgb), out, found in zip(files, targets, read, outputs, faces)]
    _write_all(jobs, destination, source.is_dir())
    reports = []
    for file, target, (kind, _, _), found, filled in zip(files, targets, read, faces, filled_instead):
        reports.append(PhotoReport(
            input=str(file), output=str(target), kind=kind, faces=len(found), method=options.method,
            de_identifying=is_de_identifying(options.method, options.region, options.landmarks),
            note="" if found else ("no face found: file copied unchanged (scrub its header with defacer scrub)"
                                   if kind == "dicom" else "no face found: pixels written unchanged (metadata removed)"),
            boxes=[[round(float(v), 1) for v in f.xyxy] for f in found],
            ksame_filled=filled,
        ))
    return reports


def summarize(reports: list[PhotoReport], source=None) -> dict:
    """What the CLI prints as JSON and the Slicer module shows: every output, faces in all, and
    what a folder ``source`` held that was left out (sharing_warnings names it; the module's
    folder run named none, as if the folder were done)."""
    left_out = folder_contents(Path(source))[1] if source is not None and Path(source).is_dir() else []
    return {"outputs": [report.as_dict() for report in reports], "faces": sum(report.faces for report in reports),
            "left_out": left_out}


# ---- video ------------------------------------------------------------------------------------------
def frame_processor(options: PhotoOptions, memory: FaceMemory | None = None, max_side_px: int = DETECT_SIDE_VIDEO_PX):
    """A function rgb -> (anonymized rgb, faces obscured) for video and camera frames.

    Detection runs on a copy no larger than ``max_side_px`` (fast), faces from the last frames
    are held (FaceMemory). Landmarks are the options' own, as for photos, so that the report's
    ``de_identifying`` (from ``options.landmarks``) describes what was done: dlib's 68 points
    cost about 1.5 ms a face (the clip: 4.4 ms a frame on top of 17.6 for detection).
    """
    memory = memory or FaceMemory()

    def process(rgb: np.ndarray):
        faces = find_faces(rgb, options, max_side_px=max_side_px)
        faces = memory.update(faces)
        return obscure_faces(rgb, faces, options.method, options.region), len(faces)

    return process


def anonymize_video(source, destination, options: PhotoOptions, overwrite: bool = False,
                    max_frames: int | None = None) -> PhotoReport:
    """Anonymize every frame of a video; the audio stream is copied unchanged; metadata dropped."""
    source, destination = Path(source), Path(destination)
    if options.method == "ksame":  # a usage error, as on a camera stream: no frame is read
        raise UsageError(f"{source}: k-Same is for sets of photos, not video; choose fill, blur or pixelate")
    check_output_suffix("video", destination)
    check_target(source, destination, overwrite)
    info = probe(source)
    capture = open_video(str(source))
    try:
        import cv2

        fps = info.fps or capture.get(cv2.CAP_PROP_FPS) or 25.0
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width <= 0 or height <= 0:
            raise InputError(f"{source}: the video has no readable frames")
        writer = VideoWriter(destination, width, height, fps, audio_from=source if info.has_audio else None,
                             video_start_s=info.video_start_s - info.audio_start_s if info.has_audio else 0.0)
        ok = False
        try:
            stats = run_stream(capture, frame_processor(options), max_frames=max_frames, size=None, sink=writer.write)
            if stats.frames == 0:
                raise InputError(f"{source}: the video has no readable frames")
            # OpenCV stops at the first packet it cannot decode, so a damaged file gave a short output
            # (its audio whole) and exit 0; ffmpeg's decode count is exact in every container, the
            # container's own count is not (an estimate from the duration outside MP4/MOV)
            if max_frames is None and info.frames and stats.frames < info.frames:
                raise InputError(f"{source}: only {stats.frames} of its {info.frames} frames could be read (the file is "
                                 "damaged); re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4) and anonymize that")
            ok = True
        finally:
            writer.close(ok)
    finally:
        capture.release()
    return PhotoReport(
        input=str(source), output=str(destination), kind="video", faces=stats.faces, method=options.method,
        de_identifying=is_de_identifying(options.method, options.region, options.landmarks), frames=stats.frames,
        video_fps=round(fps, 3), processing_fps=stats.fps, audio=info.has_audio,
        note="" if info.has_audio else "the input has no audio stream",
    )


def anonymize_camera(source, options: PhotoOptions, max_frames: int | None = None, destination=None,
                     size=(640, 480), overwrite: bool = False):
    """Anonymize a live stream (camera index, URL or file) in real time; optionally record it.

    Frames are scaled down to fit within ``size`` with their aspect ratio kept (camera.fit_size);
    the recording takes the size of the first frame, known only once it is read.
    """
    if options.method == "ksame":  # before the camera is opened: obscure_faces cannot average one stream
        raise UsageError("k-Same is for sets of photos, not a camera stream; choose fill, blur or pixelate")
    if destination is not None:  # before the camera is opened
        destination = Path(destination)
        check_output_suffix("video", destination)
        check_target(None if isinstance(source, int) else source, destination, overwrite)  # a file played as a stream
    capture = open_video(source)
    writer = None
    try:
        if destination is not None:
            import cv2

            fps = capture.get(cv2.CAP_PROP_FPS) or 30.0

        def record(rgb: np.ndarray) -> None:
            nonlocal writer
            if writer is None:
                writer = VideoWriter(destination, rgb.shape[1], rgb.shape[0], fps)
            writer.write(rgb)

        started = time.perf_counter()
        with stop_on_ctrl_c() as stop:  # Ctrl-C ends a live stream; the recording is kept
            stats = run_stream(capture, frame_processor(options, max_side_px=DETECT_SIDE_CAMERA_PX), max_frames=max_frames,
                               size=size, sink=None if destination is None else record, stop=stop)
            interrupted = stop()
        if stats.frames == 0 and interrupted:  # Ctrl-C before the first frame came: interrupted (130), not bad input
            raise KeyboardInterrupt
        if stats.frames == 0:  # opened, but not one frame came: no recording, and not a "0 faces" success
            raise InputError(f"{shown_source(source)}: the stream gave no frame; nothing "
                             + ("recorded" if destination is not None else "shown"))
        if writer is not None:
            writer.close(True)
            writer = None
        return stats, time.perf_counter() - started
    finally:
        if writer is not None:
            writer.close(False)
        capture.release()
