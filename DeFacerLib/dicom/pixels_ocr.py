"""Clean Pixel Data: find text burned into the pixels with Tesseract OCR and black it out.

Text is searched on one 8-bit greyscale view of the image (the maximum over frames, so
static annotations of a cine loop are found once) and every word box, padded, is set to
the darkest stored value in every frame and sample. Compressed pixel data is decoded with
pydicom's handlers first and written back uncompressed (never re-encoded lossily); when it
cannot be decoded the file is refused rather than written with corrupt pixels.
"""
from __future__ import annotations

import shutil

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from DeFacerLib.errors import InputError
from DeFacerLib.io._dicom_common import decompress_in_place, pixel_bytes

MIN_CONFIDENCE = 30
PAD_PX = 3
MAX_PASSES = 2
# Cross-sectional images: CT, MR, PET and NM, with their enhanced and legacy-converted forms
CROSS_SECTIONAL_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2",
    "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4",
    "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.128.1", "1.2.840.10008.5.1.4.1.1.130",
    "1.2.840.10008.5.1.4.1.1.20",
})
ANATOMY_NOT_CLEANED = ("a primary or defaced CT/MR/PET/NM image that does not say Burned In Annotation YES: "
                       "anatomy, in which OCR reads words and blacks them out, so its pixels were left as they are")


def ocr_skip_reason(sop_class_uid, image_type, burned_in, face_removed: bool = False) -> str:
    """Why Clean Pixel Data leaves these pixels as they are ('' to clean them): a cross-sectional
    image of the anatomy, PRIMARY (as acquired) or whose header says its face was removed
    (``face_removed``: 113102, Clean Recognizable Visual Features, as a defaced series says: its
    classic slices are DERIVED\\SECONDARY, scrub.mark_derived), that does not say it carries
    burned-in text. Tesseract reads "words" into a head's slices: it blacked out 405,534 pixels in
    122 of the 176 slices of a Trio MPRAGE (426,390 on its defaced copy, 104,235 of them in the
    brain), exit 0. Screen captures, dose reports (Secondary Capture, or a SECONDARY image type),
    ultrasound and every file that says YES are cleaned."""
    if str(burned_in or "").strip().upper() == "YES" or str(sop_class_uid or "").strip() not in CROSS_SECTIONAL_SOP_CLASSES:
        return ""
    values = image_type.split("\\") if isinstance(image_type, str) else list(image_type or [])
    if not face_removed and (len(values) < 2 or str(values[1]).strip().upper() != "PRIMARY"):
        return ""
    return ANATOMY_NOT_CLEANED


def tesseract_available() -> bool:
    """Whether --clean-pixel-data can run: the tesseract program on PATH and pytesseract importable."""
    if shutil.which("tesseract") is None:
        return False
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return False
    return True


def require_tesseract() -> None:
    if shutil.which("tesseract") is None:
        raise InputError("Clean Pixel Data needs Tesseract OCR, which is not installed; install it (Debian/Ubuntu: apt-get install tesseract-ocr; from a source checkout: scripts/install_system_deps.sh)")
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        raise InputError("Clean Pixel Data needs the pytesseract package; pip install pytesseract") from None


def ocr_words(image_u8: np.ndarray) -> list[dict]:
    """Words Tesseract reads in an 8-bit image: text, confidence and box (x, y, w, h)."""
    import pytesseract
    from PIL import Image

    data = pytesseract.image_to_data(Image.fromarray(image_u8), output_type=pytesseract.Output.DICT, config="--psm 11")
    words = []
    for i, text in enumerate(data["text"]):
        text = text.strip()
        if text and any(ch.isalnum() for ch in text) and float(data["conf"][i]) >= MIN_CONFIDENCE:
            words.append({"text": text, "conf": float(data["conf"][i]),
                          "box": (int(data["left"][i]), int(data["top"][i]), int(data["width"][i]), int(data["height"][i]))})
    return words


def view_for_ocr(pixels: np.ndarray, samples: int) -> np.ndarray:
    """(frames, rows, cols[, samples]) -> one 8-bit greyscale image (max over frames)."""
    image = pixels.astype(np.float32)
    if samples > 1:
        image = image.mean(axis=-1)
    image = image.max(axis=0)
    low, high = float(image.min()), float(image.max())
    return ((image - low) / max(high - low, 1e-6) * 255).astype(np.uint8)


def read_text(ds: Dataset) -> list[dict]:
    """Words OCR finds in a dataset's pixels (for tests and reports)."""
    pixels, samples = pixel_frames(ds, "dataset")
    return ocr_words(view_for_ocr(pixels, samples))


def clean_burned_in_text(ds: Dataset, where: str) -> dict:
    """Black out every word OCR finds; returns {'words': [...], 'boxes': n, 'decompressed_from': ...}."""
    require_tesseract()
    if "PixelData" not in ds:
        return {"words": [], "boxes": 0, "decompressed_from": None}
    try:
        decompressed = decompress_in_place(ds, where)
    except InputError as error:
        raise InputError(f"{error}; Clean Pixel Data refuses to write it") from None
    pixels, samples = pixel_frames(ds, where)
    found, boxes = [], 0
    for _ in range(MAX_PASSES):
        words = ocr_words(view_for_ocr(pixels, samples))
        if not words:
            break
        fill = pixels.min()
        rows, cols = pixels.shape[1], pixels.shape[2]
        for word in words:
            x, y, w, h = word["box"]
            y0, y1 = max(0, y - PAD_PX), min(rows, y + h + PAD_PX)
            x0, x1 = max(0, x - PAD_PX), min(cols, x + w + PAD_PX)
            pixels[:, y0:y1, x0:x1, ...] = fill
            boxes += 1
        found += [w["text"] for w in words]
    store_pixels(ds, pixels, samples)
    return {"words": found, "boxes": boxes, "decompressed_from": decompressed}


def pixel_frames(ds: Dataset, where: str, option: str = "Clean Pixel Data") -> tuple[np.ndarray, int]:
    """((frames, rows, cols[, samples]) copy of the pixels, samples per pixel)."""
    try:
        pixels = np.array(ds.pixel_array, copy=True)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{where} has unreadable pixel data ({reason}); {option} cannot check it") from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        pixels = pixels[None]
    return pixels, samples


def store_pixels(ds: Dataset, pixels: np.ndarray, samples: int) -> None:
    """Write ``pixels`` (as pixel_frames gave them) back into ``ds``, uncompressed."""
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        pixels = pixels[0]
    if samples > 1:
        ds.PlanarConfiguration = 0  # pixel_array is (…, rows, cols, samples): colour-by-pixel
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            # pydicom 3's pixel_array gives YBR_FULL(_422) as RGB: written back, labelled YBR, the
            # colours of every pixel shifted
            ds.PhotometricInterpretation = "RGB"
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # in the byte order the file is written in: an Explicit VR Big Endian file kept its syntax,
    # and its 16-bit pixels written little-endian read back byte-swapped (every value wrong)
    ds.PixelData = pixel_bytes(np.ascontiguousarray(pixels), pixels.dtype, ds)
    if "PixelData" in ds and ds["PixelData"].VR == "OB" and ds.BitsAllocated > 8:
        ds["PixelData"].VR = "OW"
