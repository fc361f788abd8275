"""Real-time anonymization of a frame stream: a webcam (``defacer photo --camera 0``), a URL or a file.

The loop takes any cv2.VideoCapture source, so it is tested on a video file where no camera
exists. Frames are scaled down to fit within the requested size (640x480 by default), their
aspect ratio kept: a 16:9 webcam gives 640x360 (stretched to 4:3, faces were distorted and fewer
found), a smaller camera is not enlarged (that adds no detail). Faces are found with YuNet on
every frame, and faces seen in the last few frames but missed now are still obscured (a
detector's one-frame miss must not show the face).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from DeFacerLib.photo.detect import Face


HOLD_FRAMES = 3  # a face missed for up to this many frames stays obscured where it was last seen


def fit_size(width: int, height: int, bound: tuple[int, int]) -> tuple[int, int]:
    """(width, height) scaled down to fit within ``bound`` (w, h), aspect ratio kept, never enlarged."""
    scale = min(bound[0] / width, bound[1] / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class StreamStats:
    frames: int
    seconds: float
    fps: float
    faces: int  # face boxes obscured, summed over frames
    width: int
    height: int


class FaceMemory:
    """Faces of the last ``hold`` frames, to bridge one-frame detector misses in video."""

    def __init__(self, hold: int = HOLD_FRAMES):
        self.hold = hold
        self._recent: list[list[Face]] = []

    def update(self, faces: list[Face]) -> list[Face]:
        merged = list(faces)
        for old_faces in self._recent:
            for old in old_faces:
                if all(old.iou(face) < 0.3 for face in merged):
                    merged.append(old)
        self._recent = ([list(faces)] + self._recent)[: self.hold]
        return merged


def run_stream(
    capture,
    process: Callable[[np.ndarray], tuple[np.ndarray, int]],
    max_frames: int | None = None,
    size: tuple[int, int] | None = (640, 480),
    sink: Callable[[np.ndarray], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> StreamStats:
    """Read frames from ``capture`` until it ends, ``max_frames`` or ``stop()``; ``process(rgb) -> (rgb, faces)``.

    ``capture`` is anything with ``read() -> (ok, bgr)`` (a cv2.VideoCapture). With ``size``, frames
    are scaled to fit within it (``fit_size`` of the first frame; every frame gets that size, as a
    recording needs one). ``sink`` receives each anonymized RGB frame (a VideoWriter's ``write``, a
    display). The measured fps covers reading, resizing, detection and obscuring (not the sink). ``stop`` is
    asked before each frame (``stop_on_ctrl_c``), so a live stream ends between frames.
    """
    import cv2

    frames = faces = 0
    width = height = 0
    busy = 0.0
    target = None
    while (max_frames is None or frames < max_frames) and not (stop is not None and stop()):
        started = time.perf_counter()
        ok, bgr = capture.read()
        if not ok:
            break
        if size is not None:
            target = target or fit_size(bgr.shape[1], bgr.shape[0], size)
            if (bgr.shape[1], bgr.shape[0]) != target:
                bgr = cv2.resize(bgr, target, interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        out, count = process(rgb)
        busy += time.perf_counter() - started
        if sink is not None:
            sink(out)
        frames += 1
        faces += count
        height, width = out.shape[:2]
    return StreamStats(frames=frames, seconds=round(busy, 3), fps=round(frames / busy, 2) if busy > 0 else 0.0,
                       faces=faces, width=width, height=height)


@contextlib.contextmanager
def stop_on_ctrl_c():
    """A ``stop`` function for ``run_stream`` that turns the first Ctrl-C into the end of a live
    stream (the recording is finished and kept: a webcam has no other end than Ctrl-C or
    ``--max-frames``); a second Ctrl-C interrupts as usual. Outside the main thread: never stops."""
    import signal
    import threading

    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed.is_set
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        pressed.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield pressed.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
