"""Obscure regions of faces: censor bar, pixelation, Gaussian blur, solid fill (k-Same: ksame.py).

Strengths are relative to the face's size, so a 40 px face in a group photo and a 900 px
close-up are hidden alike. Which methods actually de-identify is measured, not assumed
(scripts/evaluate_photo.py, docs/photo.md): the eye bar is kept because clinicians ask for it,
but it is cosmetic; recognition survives it.
"""
from __future__ import annotations

import numpy as np

from DeFacerLib.errors import UsageError, check_choice
from DeFacerLib.photo.detect import Face
from DeFacerLib.photo.regions import DEFAULT_REGION, region_polygons

METHODS = ("pixelate", "blur", "fill", "bar", "ksame")
DEFAULT_METHOD = "fill"
PIXELATE_BLOCKS_PER_FACE = 6  # blocks across the face's box side
BLUR_SIGMA_PER_FACE = 0.15  # Gaussian sigma as a fraction of the face's box side
METHOD_REGION = {"bar": "eyes", "ksame": "head"}  # methods that fix their region
BAR_RGB = (0, 0, 0)
FILL_RGB = (128, 128, 128)  # one constant colour: a region's mean colour would keep skin and hair tone


def _roi(shape, polygons, margin: int = 2):
    points = np.vstack(polygons)
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + margin
    h, w = shape[:2]
    return max(0, x0), max(0, y0), min(w, x1 + 1), min(h, y1 + 1)


def _mask(size_hw, polygons, offset) -> np.ndarray:
    import cv2

    mask = np.zeros(size_hw, dtype=np.uint8)
    for polygon in polygons:
        cv2.fillPoly(mask, [np.round(polygon - offset).astype(np.int32)], 1)
    return mask.astype(bool)


def _pixelate(patch: np.ndarray, block_px: int, origin) -> np.ndarray:
    """Mean colour per block on a grid anchored at the face box (stable from frame to frame)."""
    h, w = patch.shape[:2]
    oy, ox = int(origin[1]) % block_px, int(origin[0]) % block_px
    padded = np.pad(patch, ((oy, (-(h + oy)) % block_px), (ox, (-(w + ox)) % block_px), (0, 0)), mode="edge")
    ph, pw = padded.shape[:2]
    blocks = padded.reshape(ph // block_px, block_px, pw // block_px, block_px, -1).astype(np.float32).mean(axis=(1, 3))
    full = np.repeat(np.repeat(blocks, block_px, axis=0), block_px, axis=1)
    return np.round(full[oy:oy + h, ox:ox + w]).astype(np.uint8)


def _check_method(method: str) -> None:
    if method == "ksame":
        raise UsageError("obscure_face cannot do k-Same: it needs a gallery (ksame.k_same)")
    check_choice("method", method, METHODS)


def obscure_face(image: np.ndarray, face: Face, method: str = DEFAULT_METHOD, region: str | None = None) -> np.ndarray:
    """Obscure one face's ``region`` in place (uint8 RGB) with ``method``; returns the image."""
    import cv2

    _check_method(method)
    region = METHOD_REGION.get(method, region or DEFAULT_REGION)
    polygons = region_polygons(face, region)
    x0, y0, x1, y1 = _roi(image.shape, polygons)
    if x1 <= x0 or y1 <= y0:
        return image
    patch = image[y0:y1, x0:x1]
    mask = _mask(patch.shape[:2], polygons, np.array([x0, y0]))
    size = face.size_px
    if method == "bar":
        replacement = np.empty_like(patch)
        replacement[:] = BAR_RGB
    elif method == "fill":
        replacement = np.empty_like(patch)
        replacement[:] = FILL_RGB
    elif method == "pixelate":
        block = max(2, int(round(size / PIXELATE_BLOCKS_PER_FACE)))
        replacement = _pixelate(patch, block, (face.x - x0, face.y - y0))
    else:  # blur: a wide Gaussian, and the region's pixels blurred a second time so no edge survives
        sigma = max(1.0, BLUR_SIGMA_PER_FACE * size)
        replacement = cv2.GaussianBlur(patch, (0, 0), sigma)
        replacement = cv2.GaussianBlur(replacement, (0, 0), sigma)
    patch[mask] = replacement[mask]
    return image


def obscure_faces(image: np.ndarray, faces: list[Face], method: str = DEFAULT_METHOD,
                  region: str | None = None) -> np.ndarray:
    """A copy of a uint8 RGB image with every face obscured."""
    _check_method(method)  # also with no face: a script's typo was found only on its first face
    out = np.array(image, dtype=np.uint8, copy=True)
    for face in faces:
        obscure_face(out, face, method, region)
    return out
