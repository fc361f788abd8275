"""Photo and video in and out: JPEG/PNG/TIFF, DICOM visible-light photos, video with its audio.

Outputs carry pixels only: no EXIF, XMP, IPTC, ICC or comments (GPS, names, dates and device
serials live there). The EXIF orientation is applied to the pixels before it is dropped, so the
output stands the right way up. Video is decoded with OpenCV and encoded by the ffmpeg binary of
the imageio-ffmpeg wheel, which also copies the original audio stream across and drops the
container's metadata, every stream's tags and the chapters. Every unreadable input is a one-line
InputError.
"""
from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from DeFacerLib.errors import InputError, OutputError, require_extra
from DeFacerLib.io.atomic import atomic_path
from DeFacerLib.io.formats import has_dicom_magic

IMAGE_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm"}
JPEG_QUALITY = 95
MAX_PIXELS = 400_000_000  # Pillow's decompression-bomb guard, raised for big clinical scans


WRITTEN_SUFFIXES = {"image": tuple(IMAGE_SUFFIXES), "dicom": tuple(DICOM_SUFFIXES) + ("",),
                    "video": (".mp4", ".m4v", ".mov")}


def check_output_suffix(kind: str, path: Path) -> None:
    """The output's name must say what is written into it: a photo as JPEG/PNG/TIFF (from its
    suffix), a DICOM photo as DICOM, a video as H.264 MP4; else a usage error before any work."""
    allowed = WRITTEN_SUFFIXES[kind]
    if Path(path).suffix.lower() not in allowed:
        from DeFacerLib.errors import UsageError

        what = {"image": "a photo is written as JPEG, PNG or TIFF", "dicom": "a DICOM photo is written as DICOM",
                "video": "a video is written as H.264 MP4"}[kind]
        names = " ".join(suffix or "(no suffix)" for suffix in allowed)
        raise UsageError(f"{path}: {what}; name the output {names}")


def kind_of(path: Path) -> str:
    """'image', 'dicom' or 'video' from the file name (DICOM also by its DICM preamble)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in DICOM_SUFFIXES or has_dicom_magic(path):
        return "dicom"
    raise InputError(f"{path}: not a photo, DICOM or video file we know (.jpg .png .tif .dcm .mp4 .mov .avi .mkv)")


# ---- still images -------------------------------------------------------------------------------
def read_image(path) -> np.ndarray:
    """Pixels of a JPEG/PNG/TIFF as uint8 RGB, upright (EXIF orientation applied)."""
    return read_image_native(path)[0]


def read_image_native(path):
    """(uint8 RGB for detection, the upright pixels in the file's own mode) of a JPEG/PNG/TIFF.

    The second is what outputs are written from (``native_output``), so that a grey, 16-bit or
    transparent photo keeps its mode, depth and alpha, and unchanged pixels stay identical.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():  # over MAX_PIXELS (Pillow only warns below twice that): refused
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            # a multi-page TIFF, an animated PNG: only the first page would be seen, the rest lost. (A
            # camera's MPO JPEG holds its photo first, then previews or a depth map: the photo is
            # anonymized and written as one JPEG, the rest not at all, as before.)
            if image.format in ("TIFF", "PNG") and getattr(image, "n_frames", 1) > 1:
                full = _full_resolution_page(image)
                if full is None:
                    raise InputError(f"{path}: holds {image.n_frames} pages or frames; only single-image files are "
                                     "supported: save each page as its own file")
                image.seek(full)
            if _deep_colour(image):  # Pillow would give 8 bits per channel: "unchanged" pixels would not be
                raise InputError(f"{path}: 16 bits per colour channel is not supported (only grey is kept at 16 "
                                 "bits); convert it to 8-bit colour or to 16-bit grey")
            image.load()  # truncated files fail here, not later
            native = _kept_mode(ImageOps.exif_transpose(image))
            native.info.clear()  # metadata never reaches an output
            return _as_rgb(native), native
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{path}: the image is too large ({error}); split or downscale it") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{path}: cannot read the image ({error}); is it complete and a JPEG, PNG or TIFF?") from None


TIFF_NEW_SUBFILE_TYPE, TIFF_REDUCED_RESOLUTION = 254, 0x1


def _full_resolution_page(image) -> int | None:
    """The one full-resolution page of a TIFF whose other pages are reduced-resolution copies
    of it (NewSubfileType bit 0: a thumbnail or preview a scanner or camera adds), else None.
    Such a photo is read from its full page and written as that page alone: the thumbnails,
    the old face in small, never reach the output."""
    if image.format != "TIFF":
        return None
    full = []
    for page in range(image.n_frames):
        image.seek(page)
        if not int(image.tag_v2.get(TIFF_NEW_SUBFILE_TYPE, 0)) & TIFF_REDUCED_RESOLUTION:
            full.append(page)
    image.seek(0)
    return full[0] if len(full) == 1 else None


def _deep_colour(image) -> bool:
    """A colour image with more than 8 bits per channel (48/64-bit PNG, 16-bit RGB TIFF), which
    Pillow opens, without a word, as 8-bit RGB(A); looked at before the pixels are loaded."""
    if image.mode not in ("RGB", "RGBA"):
        return False
    if image.format == "PNG":
        return any("16" in str(tile[3]) for tile in image.tile)
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_KEPT_MODES = ("L", "LA", "RGB", "RGBA") + _DEEP_MODES


def _kept_mode(image):
    """The image in a mode outputs keep: grey, grey+alpha, RGB(A) and deep grey as they are;
    palette images as RGB(A), other modes (CMYK, YCbCr, bilevel) as RGB or grey."""
    if image.mode in _KEPT_MODES:
        return image.copy()
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    return image.convert("L" if image.mode == "1" else "RGB")


def _deep_range(array: np.ndarray) -> tuple[float, float]:
    """(low, span) of a deep grey image: its values are stretched onto 0-255 for detection."""
    low = float(array.min())
    return low, max(float(array.max()) - low, 1e-9)


def _as_rgb(native) -> np.ndarray:
    if native.mode in _DEEP_MODES:
        array = np.asarray(native, dtype=np.float64)
        low, span = _deep_range(array)
        grey = np.round((array - low) / span * 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(native.convert("RGB"), dtype=np.uint8).copy()


def native_output(native, rgb_in: np.ndarray, rgb_out: np.ndarray):
    """``native`` with the pixels that obscuring changed (``rgb_in`` -> ``rgb_out``) replaced, in
    its own mode: alpha and untouched pixels stay exactly as they were; grey outputs take the
    replacement's luminance, 16-bit ones its value mapped back onto the image's range."""
    from PIL import Image

    if native.mode == "RGB":
        return Image.fromarray(np.asarray(rgb_out, dtype=np.uint8), "RGB")
    changed = np.any(rgb_out != rgb_in, axis=-1)
    if native.mode == "RGBA":
        array = np.array(native)
        array[..., :3] = rgb_out
        return Image.fromarray(array, "RGBA")
    weights = np.array([0.299, 0.587, 0.114])
    grey = np.asarray(rgb_out, dtype=np.float64) @ weights
    array = np.array(native)
    if native.mode in _DEEP_MODES:
        low, span = _deep_range(array.astype(np.float64))
        values = low + grey / 255.0 * span
        if np.issubdtype(array.dtype, np.integer):
            values = np.clip(np.round(values), np.iinfo(array.dtype).min, np.iinfo(array.dtype).max)
        array[changed] = values[changed].astype(array.dtype)
        return Image.fromarray(array, native.mode) if native.mode in ("I", "F") else Image.fromarray(array)
    channel = array[..., 0] if native.mode == "LA" else array
    channel[changed] = np.round(grey[changed]).astype(np.uint8)
    return Image.fromarray(array, native.mode)


# What each output format can hold; anything else is written as 8-bit RGB.
_FORMAT_MODES = {"JPEG": ("L", "RGB"), "PNG": ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B"),
                 "TIFF": ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "F")}


def write_image(path, rgb, format: str | None = None) -> Path:
    """Write pixels only (no metadata at all), atomically; format from the suffix.

    ``rgb`` is uint8 RGB or a Pillow image (``native_output``), kept in its mode where the
    format can hold it (JPEG cannot hold alpha or 16 bits: those are written as 8-bit RGB).
    """
    from PIL import Image

    path = Path(path)
    format = format or IMAGE_SUFFIXES.get(path.suffix.lower(), "PNG")
    if isinstance(rgb, Image.Image):
        image = rgb if rgb.mode in _FORMAT_MODES[format] else Image.fromarray(_as_rgb(rgb), "RGB")
        if image.info:  # Pillow writes the comment, XMP and ICC profile it finds there (an opened file's)
            image = image.copy()
            image.info.clear()
    else:
        image = Image.fromarray(np.asarray(rgb, dtype=np.uint8), "RGB")
    options = {"quality": JPEG_QUALITY, "subsampling": 0} if format == "JPEG" else {}
    try:
        with atomic_path(path) as temporary:
            image.save(temporary, format=format, exif=b"", **options)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    return path


# ---- DICOM visible-light photographs ------------------------------------------------------------
def read_dicom_image(path):
    """(dataset, uint8 RGB pixels) of a single-frame colour or grey DICOM photograph."""
    import pydicom

    from DeFacerLib.io._dicom_common import require_decoder

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
        require_decoder(dataset, path)
        pixels = dataset.pixel_array
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as error:  # pydicom raises many types for broken files
        raise InputError(f"{path}: cannot read the DICOM pixels ({type(error).__name__}: {error})") from None
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{path}: multi-frame DICOM (video) is not supported; export the frames or use a video file")
    return dataset, rgb_for_detection(pixels, str(dataset.get("PhotometricInterpretation", "MONOCHROME2")))


def rgb_for_detection(pixels: np.ndarray, photometric: str) -> np.ndarray:
    """uint8 RGB of one DICOM frame, as the face detectors take it: a grey frame stretched to
    0-255 (MONOCHROME1 inverted) in all three channels, a colour one as it is (pydicom 3 returns
    YBR_FULL(_422) pixels already converted to RGB), scaled down when stored wider than 8 bits."""
    if pixels.ndim == 2:
        values = pixels.astype(np.float64)
        span = max(float(values.max() - values.min()), 1e-9)
        grey = np.round((values - values.min()) / span * 255).astype(np.uint8)
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        return np.repeat(grey[..., None], 3, axis=-1)
    if pixels.dtype != np.uint8 and pixels.size and float(pixels.max()) > 255:
        return np.round(pixels.astype(np.float64) * (255.0 / float(pixels.max()))).astype(np.uint8)
    return np.asarray(pixels, dtype=np.uint8)


def write_dicom_image(path, dataset, rgb: np.ndarray, faces_obscured: bool) -> Path:
    """Write ``dataset`` with its pixels replaced by uncompressed RGB, as a new instance.

    The header is otherwise kept (scrub it with ``defacer scrub``) but for the Icon Image
    Sequence, a thumbnail of the old pixels, face included; a new SOPInstanceUID marks the
    changed pixels, and Recognizable Visual Features is set to NO when faces were obscured.
    The new UID is a hash of the old one and the new pixels, not a random one, so that a rerun
    writes the same file (a random UID changed every rerun's bytes); it tells no more than the
    study and series UIDs the header keeps.
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    rgb = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    dataset = dataset.copy()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Rows, dataset.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    dataset.SamplesPerPixel = 3
    dataset.PhotometricInterpretation = "RGB"
    dataset.PlanarConfiguration = 0
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if keyword in dataset and keyword != "LossyImageCompression":
            del dataset[keyword]
    dataset.PixelData = rgb.tobytes()
    dataset["PixelData"].VR = "OB"
    old_uid = str(dataset.get("SOPInstanceUID", "") or "")
    uid = generate_uid(entropy_srcs=[old_uid, hashlib.sha256(dataset.PixelData).hexdigest()])
    dataset.SOPInstanceUID = uid
    dataset.file_meta.MediaStorageSOPInstanceUID = uid
    if "IconImageSequence" in dataset:  # a thumbnail of the old pixels: the face the new ones hide
        del dataset.IconImageSequence
    if faces_obscured:
        dataset.RecognizableVisualFeatures = "NO"
    try:
        with atomic_path(path) as temporary:
            # dcmwrite, not save_as: a big-endian source is re-encoded little-endian, as the new
            # transfer syntax says (save_as refuses to convert, an internal error)
            pydicom.dcmwrite(temporary, dataset, enforce_file_format=True)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    return path


# ---- video -----------------------------------------------------------------------------------
def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped in the imageio-ffmpeg wheel (no system ffmpeg needed)."""
    require_extra("imageio_ffmpeg", "photo", "video")
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class StreamInfo:
    """What ``ffmpeg -i`` says about a media file (no ffprobe in the wheel)."""

    frames: int | None
    fps: float | None
    width: int | None
    height: int | None
    has_audio: bool
    audio_codec: str | None
    video_start_s: float
    audio_start_s: float
    text: str
    declared_frames: int | None = None  # the container's frame count (OpenCV's CAP_PROP_FRAME_COUNT)
    declared_s: float | None = None  # the video stream's end the container declares (MKV tag, else Duration)
    end_s: float | None = None  # where ffmpeg's decode of the video stream ended


# a decode may fall this short of what the container declares and still be the whole video: a few
# frames or 2 %, whichever is larger (a declared count or duration rounded, an estimate)
_FEW_FRAMES = 3
_SHARE = 0.02


def _seconds(match) -> float | None:
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3)) if match else None


def _declared_frames(path: Path) -> int | None:
    """The frame count OpenCV reads from the container: the stored sample count in MP4/MOV (exact
    but for frames an edit list drops) and AVI (with its empty frames), elsewhere the container's
    duration times the frame rate (an estimate: 300 for the 275-frame clip as MKV, whose picture
    starts 0.84 s after its sound); None where it declares none (a live recording, a stream)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else 0
    finally:
        capture.release()
    return int(round(count)) if count == count and count > 0 else None  # NaN and -1 too


def _cut_short(path: Path, info: StreamInfo) -> str | None:
    """Why ``info``'s decode ends clearly before the video the container declares, or None.

    Short of both its declared frame count and its declared duration: a file cut at its end (a
    copy or download interrupted) keeps the header that declares the whole video. Either alone
    can be short of a whole video: the count of an MP4 trimmed by an edit list (215 stored, 201
    shown), an AVI's empty frames or an MKV's estimate (its duration includes a picture that starts
    late); the duration of an MP4 whose sound outlasts its picture."""
    declared, decoded = info.declared_frames, info.frames
    if not declared or decoded is None or decoded >= declared - max(_FEW_FRAMES, _SHARE * declared):
        return None
    if info.declared_s and info.end_s is not None:
        fps = info.fps or 25.0
        if info.end_s >= info.declared_s - max(_FEW_FRAMES / fps, _SHARE * info.declared_s):
            return None
        seconds = f", {info.end_s:.1f} of {info.declared_s:.1f} s"
    else:
        seconds = ""
    return f"{path}: the video ends after {decoded} of {declared} frames{seconds} (cut short?); nothing written"


def probe(path) -> StreamInfo:
    """Parse ``ffmpeg -i`` (streams) and a null decode (exact frame count) of a video.

    InputError for a file whose decode ends clearly before the frame count and the duration its
    container declares (a file cut short): OpenCV and ffmpeg alike just stop there, and the run
    wrote the first half of the picture, exit 0."""
    path = Path(path)
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                            capture_output=True, text=True)
    text = result.stderr
    video = re.search(r"Stream #\S+.*?: Video: .*?(\d{2,5})x(\d{2,5}).*?([\d.]+) fps.*?(?:start ([\d.]+))?", text)
    audio = re.search(r"Stream #\S+.*?: Audio: (\w+)", text)
    frames = re.findall(r"frame=\s*(\d+)", text)
    start = re.search(r"Video: .*start ([\d.]+)", text)
    audio_start = re.search(r"Audio: .*start ([\d.]+)", text)
    # what the container declares: the input's part of the text (the output's repeats its tags)
    header = re.split(r"^(?:Stream mapping:|Output #)", text, maxsplit=1, flags=re.MULTILINE)[0]
    declared_s = _seconds(re.search(r"Duration: (\d+):(\d+):([\d.]+)", header))
    picture = re.search(r"^\s*Stream #\S+.*?: Video: .*$((?:\n(?!\s*Stream #).*)*)", header, re.MULTILINE)
    tag = re.search(r"^\s*DURATION\s*: (\d+):(\d+):([\d.]+)", picture.group(1), re.MULTILINE) if picture else None
    if tag:  # Matroska's own duration of the video stream (ffmpeg and mkvmerge write it): the file's is the longest stream's
        declared_s = _seconds(tag)
    ends = list(re.finditer(r"time=\s*(\d+):(\d+):([\d.]+)", text))
    info = StreamInfo(
        frames=int(frames[-1]) if frames else None,
        fps=float(video.group(3)) if video else None,
        width=int(video.group(1)) if video else None,
        height=int(video.group(2)) if video else None,
        has_audio=audio is not None,
        audio_codec=audio.group(1) if audio else None,
        video_start_s=float(start.group(1)) if start else 0.0,
        audio_start_s=float(audio_start.group(1)) if audio_start else 0.0,
        text=text,
        declared_frames=_declared_frames(path) if frames else None,
        declared_s=declared_s,
        end_s=_seconds(ends[-1]) if ends else None,
    )
    cut = _cut_short(path, info)
    if cut:
        raise InputError(cut)
    return info


_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
# user:password@ up to the URL's last '@': a password typed with '/', '?' or '#' in it (not
# percent-encoded) was printed in full; more is hidden than the password when a later part of
# the URL holds an '@' too, never less
_URL_PASSWORD = re.compile(rf"^({_SCHEME}[^/?#:@]*):.*@")
_URL = re.compile(rf"^{_SCHEME}")


def is_url(source) -> bool:
    """Whether ``source`` is written as a URL (scheme://...), a stream rather than a file."""
    return isinstance(source, str) and _URL.match(source) is not None


def shown_source(source) -> str:
    """``source`` as DeFacer prints or writes it: a URL's password replaced by ***. An IP camera's
    rtsp://user:password@host/ would otherwise end up in terminals, logs and JSON reports."""
    return _URL_PASSWORD.sub(r"\1:***@", str(source), count=1)


def open_video(source):
    """cv2.VideoCapture on a file, a camera index or a stream URL; InputError when it cannot open."""
    import cv2

    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        if isinstance(source, int):
            raise InputError(f"camera {source} cannot be opened (no such camera, no permission, or in use)")
        raise InputError(f"{shown_source(source)}: cannot open the video (missing, unsupported or not a video)")
    return capture


def _fps_text(fps: float) -> str:
    for numerator, denominator in ((24000, 1001), (30000, 1001), (60000, 1001)):
        if abs(fps - numerator / denominator) < 0.01:
            return f"{numerator}/{denominator}"
    return f"{fps:.6g}"


class VideoWriter:
    """Frames in (uint8 RGB), H.264 MP4 out; the audio of ``audio_from`` copied across unchanged."""

    def __init__(self, path, width: int, height: int, fps: float, audio_from=None, crf: int = 18,
                 video_start_s: float = 0.0):
        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        temporary = self._atomic.__enter__()
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                   "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", _fps_text(fps)]
        command += ["-i", "-"]
        if audio_from is not None:
            command += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a?", "-c:a", "copy"]
        filters = []
        if width % 2 or height % 2:  # H.264 in yuv420p needs even sides: one black row/column added
            filters.append("pad=ceil(iw/2)*2:ceil(ih/2)*2")
        if video_start_s > 0:  # the picture starts this long after the sound: keep them in step
            filters.append(f"setpts=PTS+{video_start_s:.6f}/TB")
        if filters:
            command += ["-vf", ",".join(filters)]
        # no tags (global or per stream) and no chapters: titles, comments and chapter names can hold names
        command += ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
                    "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(temporary)]
        # its own session: a Ctrl-C at the terminal reaches Python, which decides (the camera
        # finishes its recording), not ffmpeg, which would stop with an error mid-file
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        try:
            self._process.stdin.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            raise OutputError(f"cannot write {self.path}: ffmpeg stopped ({self._error()})") from None
        self.frames += 1

    def _error(self) -> str:
        text = " ".join(self._process.stderr.read().decode(errors="replace").split())[-300:]
        if text:
            return text
        # a signal says nothing on stderr: a file-size limit (SIGXFSZ) gave "ffmpeg stopped ()"
        code = self._process.wait()
        return (signal.strsignal(-code) or f"signal {-code}") if code < 0 else f"exit status {code}"

    def close(self, ok: bool = True) -> None:
        self._process.stdin.close()
        code = self._process.wait()
        if ok and code != 0:
            message = self._error()
            self._atomic.__exit__(OutputError, OutputError(message), None)
            raise OutputError(f"cannot write {self.path}: ffmpeg failed ({message})")
        if ok:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)


# ---- lossless metadata removal (photos without faces) ---------------------------------------------
# the segments a JPEG is decoded from (SOF0-SOF15 frame headers, DHT, DAC, DQT, DNL, DRI, DHP, EXP,
# the scans; 0xC8 is the reserved JPG): every other segment goes, and APP0 and APP14 keep only their
# standard fields. Dropping only the known metadata markers kept APP14 whole, with whatever a
# writer put after its Adobe fields (a thumbnail of the face, names).
_CODING_MARKERS = (set(range(0xC0, 0xD0)) - {0xC8}) | {0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}
_ADOBE_FIELDS = 12  # APP14 "Adobe": the name, version, two flag words and the colour transform


def strip_jpeg_metadata(data: bytes) -> bytes:
    """The same JPEG without EXIF/XMP/IPTC/ICC/comment segments; the coded image is untouched.

    Keeps the coding segments, APP0 (JFIF, its thumbnail emptied; JFXX thumbnail extensions go)
    and APP14's 12 Adobe fields (the colour transform), which decoders need; nothing else.
    Metadata between the scans of a progressive JPEG goes too, and so does everything after the
    end of the image: an MPO's second picture, an Ultra HDR gain map, a phone's motion-photo
    video, which may show the face the photo itself does not. Raises ValueError on a malformed
    stream.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    out = bytearray(b"\xff\xd8")
    position = 2
    while position < len(data):
        if data[position] != 0xFF:
            raise ValueError(f"bad marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:  # end of image: whatever follows is not this picture
            out += b"\xff\xd9"
            return bytes(out)
        if 0xD0 <= marker <= 0xD7:  # a restart marker outside entropy data: no length
            out += data[position:position + 2]
            position += 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        segment = data[position:position + 2 + length]
        if len(segment) < 2 + length:
            raise ValueError("truncated segment")
        position += 2 + length
        if marker == 0xE0:  # APP0: JFIF kept without its thumbnail, JFXX (thumbnails only) dropped
            if segment[4:9] == b"JFIF\x00" and length >= 16:
                out += b"\xff\xe0\x00\x10" + segment[4:16] + b"\x00\x00"
            continue
        if marker == 0xEE:  # APP14: the Adobe colour transform kept, anything written after it dropped
            if segment[4:9] == b"Adobe" and length >= 2 + _ADOBE_FIELDS:
                out += b"\xff\xee" + (2 + _ADOBE_FIELDS).to_bytes(2, "big") + segment[4:4 + _ADOBE_FIELDS]
            continue
        if marker not in _CODING_MARKERS:  # EXIF, XMP, IPTC, ICC, comments, any other APPn
            continue
        out += segment
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            scan = position
            while True:
                scan = data.find(b"\xff", scan)
                if scan < 0 or scan + 1 >= len(data):
                    raise ValueError("no end of image")
                following = data[scan + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart marker
                    scan += 2
                elif following == 0xFF:  # fill bytes before a marker
                    scan += 1
                else:
                    break
            out += data[position:scan]
            position = scan
    raise ValueError("no end of image")


def write_unchanged(source, target, rgb) -> Path:
    """Write a photo in which nothing was obscured: identical pixels, no metadata.

    JPEGs keep their coded data byte for byte (only metadata segments go), unless an EXIF
    orientation had to be applied to the pixels; other formats are rewritten losslessly
    (``rgb``: the pixels, best the file's own ``read_image_native`` image, so that mode,
    depth and alpha stay).
    """
    from PIL import Image

    source, target = Path(source), Path(target)
    if IMAGE_SUFFIXES.get(source.suffix.lower()) == "JPEG" and IMAGE_SUFFIXES.get(target.suffix.lower()) == "JPEG":
        with Image.open(source) as image:
            orientation = image.getexif().get(0x0112, 1)
        # only 2-8 turn the pixels (ImageOps.exif_transpose): an orientation of 0, written by some
        # phones and apps, re-encoded a photo whose pixels were read as they are (up to 14 levels off)
        if orientation not in range(2, 9):
            try:
                stripped = strip_jpeg_metadata(source.read_bytes())
            except ValueError:
                stripped = None
            if stripped is not None:
                try:
                    with atomic_path(target) as temporary:
                        temporary.write_bytes(stripped)
                except OSError as error:
                    raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
                return target
    return write_image(target, rgb)
