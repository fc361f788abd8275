"""Clean Recognizable Visual Features (PS3.15 113102) in images that are not head volumes: the
faces in a clinical photograph, a secondary capture or a video's frames are filled.

Each frame is searched as ``defacer photo`` searches a photo (YuNet, upright, turned 90 or 180
degrees and tilted 30: a clinical photo is taken at any angle), on an 8-bit RGB view of it, and
each face's head region, hair and ears included (what face recognition still matches behind a
face-only box, docs/photo.md), is set to the frame's darkest stored value in every sample.
Compressed pixels are decoded first and written back uncompressed, as Clean Pixel Data does.
Cross-sectional images (CT, MR, PET, NM) are not photographs: a head series' face is removed from
the volume by ``defacer deface``, and no single slice shows a face a photo detector could find;
they are left as they are and listed.
"""
from __future__ import annotations

from pydicom.dataset import Dataset

from DeFacerLib.dicom.pixels_ocr import CROSS_SECTIONAL_SOP_CLASSES, pixel_frames, store_pixels
from DeFacerLib.errors import InputError, require_extra
from DeFacerLib.io._dicom_common import decompress_in_place

OPTION = "Clean Recognizable Visual Features"
SLICES_NOT_CHECKED = ("a CT/MR/PET/NM image: a head's face is removed from its volume by `defacer deface`, "
                      "not from single slices, so its pixels were left as they are")


def faces_skip_reason(sop_class_uid) -> str:
    """Why the option leaves these pixels as they are ('' to search them for faces)."""
    return SLICES_NOT_CHECKED if str(sop_class_uid or "").strip() in CROSS_SECTIONAL_SOP_CLASSES else ""


def fill_faces(ds: Dataset, where: str) -> dict:
    """Fill every face found in every frame; returns {'faces': n, 'frames': n, 'decompressed_from': ...}."""
    require_extra("cv2", "photo", "--clean-recognizable-visual-features")
    from DeFacerLib.photo.anonymize import UNATTENDED, find_faces
    from DeFacerLib.photo.media import rgb_for_detection
    from DeFacerLib.photo.regions import region_mask

    if "PixelData" not in ds:
        return {"faces": 0, "frames": 0, "decompressed_from": None}
    try:
        decompressed = decompress_in_place(ds, where)
    except InputError as error:
        raise InputError(f"{error}; {OPTION} refuses to write it") from None
    pixels, samples = pixel_frames(ds, where, OPTION)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    found = 0
    for frame in pixels:  # views into ``pixels``: filled in place
        faces = find_faces(rgb_for_detection(frame, photometric), UNATTENDED)
        if not faces:
            continue
        mask = region_mask(frame.shape, faces, "head")
        flat = frame.reshape(-1, samples) if samples > 1 else frame.reshape(-1)
        darkest = flat.max(axis=0) if photometric == "MONOCHROME1" else flat.min(axis=0)
        frame[mask] = darkest
        found += len(faces)
    if found:
        store_pixels(ds, pixels, samples)
    ds.RecognizableVisualFeatures = "NO"
    return {"faces": found, "frames": int(pixels.shape[0]), "decompressed_from": decompressed}
