"""A procedural head with a face, and its ground-truth labels, in any orientation.

Tests, the demo and the Slicer self-test need a head that ships with the project (real
heads may not be redistributed) and whose eyes, nose, mouth, ears and brain are known
exactly. The phantom is built from ellipsoids in canonical LPS millimetres (centre of the
volume at the world origin), then its array is permuted/flipped to the requested
orientation code and, optionally, its direction matrix rotated a little (oblique
acquisition: world geometry only, the voxels are not resampled).

Anatomy (adult-sized, mm): scalp (skin over subcutaneous fat), skull shell, CSF, brain
(grey rim over white), an anterior cranial fossa floor between the frontal lobes and two
eye globes (radius 12 mm, centres 13 mm under the lid skin, lids bulging 2 mm), a nose
protruding ~22 mm, lips with a mouth slit, two pinnae on the sides, facial bone, and a neck
with an airway and a spine running out of the bottom of the volume (cut off, as in most
head scans). The labelled features sit at the surface like the real ones.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.features import LABEL_VALUES
from DeFacerLib.volume import Volume

_AXIS_OF_LETTER = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}

# Tissue classes -> (MR T1-like magnitude as a fraction of 1000, CT in HU)
_TISSUES = {
    "air": (0.0, -1000.0),
    "skin": (0.60, 40.0),
    "fat": (1.00, -100.0),
    "muscle": (0.45, 45.0),
    "bone": (0.08, 1000.0),
    "csf": (0.12, 8.0),
    "grey": (0.50, 38.0),
    "white": (0.75, 28.0),
    "vitreous": (0.10, 10.0),
    "cartilage": (0.55, 60.0),
}
_CLASS_INDEX = {name: i for i, name in enumerate(_TISSUES)}


def valid_orientation(code: str) -> bool:
    code = code.upper()
    return len(code) == 3 and all(c in _AXIS_OF_LETTER for c in code) and \
        sorted(_AXIS_OF_LETTER[c][0] for c in code) == [0, 1, 2]


def make_phantom(
    shape: tuple[int, int, int] = (96, 112, 96),
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0),
    orientation: str = "LPS",
    modality: str = "MR",
    oblique_deg: float = 0.0,
    noise: float = 0.02,
    seed: int = 0,
) -> tuple[Volume, np.ndarray]:
    """(Volume, uint8 label map on the same grid) for a synthetic head.

    ``shape`` and ``spacing_mm`` are given in canonical order (left-right, anterior-posterior,
    inferior-superior); the returned array has them permuted like ``orientation``, a
    three-letter code of where each array axis points ("LPS", "RAS", "PSR", ...). The default
    field of view is 192 x 224 x 192 mm; the head needs about 160 x 210 x 185 mm.
    ``modality`` "MR": int16 magnitude with Rician background noise (sd = noise x 1000);
    "CT": int16 stored = HU + 1024 (slope 1, intercept -1024), Gaussian noise noise x 1000 HU.
    """
    code = orientation.upper()
    if not valid_orientation(code):
        raise ValueError(f"orientation must be 3 letters, one of L/R, P/A, S/I each, got {orientation!r}")
    if modality not in ("MR", "CT"):
        raise ValueError(f"the phantom is MR or CT, not {modality!r}")
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing_mm, dtype=float).reshape(3)
    rng = np.random.default_rng(seed)

    tissue, labels = _build_canonical(shape, spacing)
    column = 0 if modality == "MR" else 1
    table = np.array([values[column] for values in _TISSUES.values()], dtype=np.float32)
    image = table[tissue]
    image = ndi.gaussian_filter(image, sigma=0.6 * 2.0 / spacing, mode="nearest")  # partial volume
    if modality == "MR":
        sigma = noise * 1000.0
        signal = image * 1000.0
        image = np.sqrt((signal + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
        stored = np.clip(np.rint(image), 0, 32767).astype(np.int16)
        slope, intercept = 1.0, 0.0
    else:
        image = image + rng.normal(0, noise * 1000.0, shape)
        stored = np.clip(np.rint(image + 1024.0), -32768, 32767).astype(np.int16)
        slope, intercept = 1.0, -1024.0

    # Canonical geometry: identity direction, the array's centre at the world origin.
    origin = -(np.asarray(shape) - 1) / 2.0 * spacing
    stored, labels, direction, spacing_out, origin = _reorient(stored, labels, spacing, origin, code)
    if oblique_deg:
        rotation = _rotation(np.array([1.0, 0.5, 0.25]), np.deg2rad(oblique_deg))
        direction = rotation @ direction
        origin = rotation @ origin
    volume = Volume(
        array=np.ascontiguousarray(stored),
        spacing_mm=spacing_out,
        origin_mm=origin,
        direction=direction,
        modality=modality,
        slope=slope,
        intercept=intercept,
        source=None,  # a new volume: the writer takes the format from the output's extension
    )
    return volume, np.ascontiguousarray(labels)


# ---- anatomy in canonical LPS mm ---------------------------------------------------------

def _ellipsoid(x, y, z, centre, semi) -> np.ndarray:
    return ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 + ((z - centre[2]) / semi[2]) ** 2 <= 1.0


def _build_canonical(shape, spacing):
    coords = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*coords, indexing="ij", sparse=True)

    cranium_c, cranium_s = (0.0, 15.0, 22.0), np.array([75.0, 90.0, 68.0])
    face_c, face_s = (0.0, -5.0, -28.0), (60.0, 78.0, 55.0)
    brain_c, brain_s = (0.0, 15.0, 22.0), (60.0, 75.0, 54.0)
    eye_centres = [(-32.0, -54.0, -12.0), (32.0, -54.0, -12.0)]
    eye_radius = 12.0

    cranium = _ellipsoid(x, y, z, cranium_c, cranium_s)
    face = _ellipsoid(x, y, z, face_c, face_s)
    neck = (((x / 45.0) ** 2 + ((y - 20.0) / 48.0) ** 2) <= 1.0) & (z <= -30.0)

    def face_front(zz):  # y of the face's surface on the midline at height zz
        t = np.clip(1.0 - ((zz - face_c[2]) / face_s[2]) ** 2, 0.0, 1.0)
        return face_c[1] - face_s[1] * np.sqrt(t)

    # Nose: triangular cross-section, apex forward, growing from the root to the base.
    root, base = -14.0, -44.0
    t = np.clip((root - z) / (root - base), 0.0, 1.0)
    protrusion = 6.0 + 16.0 * t
    tip_y = face_front(z) - protrusion
    half_width = 7.0 + 8.0 * t
    nose = (z <= root) & (z >= base - 4.0) & (y >= tip_y) & (y <= face_front(z) + 5.0) \
        & (np.abs(x) <= half_width * np.clip((y - tip_y) / protrusion, 0.0, 1.0))
    nose &= ~((z < base) & (y < face_front(base) - 4.0 - (base - z) * 2.0))  # rounded underside
    # Lips around a mouth slit.
    mouth_z = -56.0
    lips = _ellipsoid(x, y, z, (0.0, float(face_front(mouth_z)) - 1.0, mouth_z), (24.0, 9.0, 8.0))
    slit = (np.abs(x) <= 18.0) & (np.abs(z - mouth_z) <= 1.5) & (y <= float(face_front(mouth_z)) + 6.0)
    # Eyes and lids.
    globes = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), bool)
    lids = globes.copy()
    orbits = globes.copy()
    for centre in eye_centres:
        globes |= _ellipsoid(x, y, z, centre, (eye_radius,) * 3)
        lids |= _ellipsoid(x, y, z, centre, (eye_radius + 3.0,) * 3) & (y < centre[1])
        orbits |= _ellipsoid(x, y, z, centre, (eye_radius + 4.0,) * 3)
    # Pinnae on the cranium's sides at ear level.
    pinnae = np.zeros_like(globes)
    ear_y, ear_z = 20.0, -8.0
    half = cranium_s[0] * np.sqrt(1 - ((ear_y - cranium_c[1]) / cranium_s[1]) ** 2 - ((ear_z - cranium_c[2]) / cranium_s[2]) ** 2)
    for side in (-1.0, 1.0):
        pinnae |= _ellipsoid(x, y, z, (side * (half + 5.0), ear_y, ear_z), (6.0, 14.0, 26.0))

    head = cranium | face | neck | nose | lips | lids | pinnae
    head &= ~slit
    depth = ndi.distance_transform_edt(np.pad(head, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]

    tissue = np.full(head.shape, _CLASS_INDEX["air"], dtype=np.uint8)
    tissue[head] = _CLASS_INDEX["muscle"]
    tissue[head & (depth <= 5.0)] = _CLASS_INDEX["fat"]  # subcutaneous fat
    tissue[head & (depth <= 1.6)] = _CLASS_INDEX["skin"]
    tissue[(nose | pinnae) & (depth > 1.6)] = _CLASS_INDEX["cartilage"]

    def inner(offset):
        return _ellipsoid(x, y, z, cranium_c, cranium_s - offset)

    brain = _ellipsoid(x, y, z, brain_c, brain_s)
    fossa = (y < -25.0) & (z < 8.0)
    brain &= ~fossa
    vault = inner(6.0) & (z > -25.0)
    skull = vault & ~inner(13.0)
    tissue[skull & ~orbits] = _CLASS_INDEX["bone"]
    tissue[inner(13.0) & (z > -25.0) & ~brain] = _CLASS_INDEX["csf"]
    tissue[inner(13.0) & fossa & ~brain & ~orbits] = _CLASS_INDEX["bone"]
    tissue[brain] = _CLASS_INDEX["white"]
    tissue[brain & ~ndi.binary_erosion(brain, iterations=max(1, int(round(3.0 / spacing.min()))))] = _CLASS_INDEX["grey"]
    facial_bone = _ellipsoid(x, y, z, face_c, np.asarray(face_s) - 10.0) & ~_ellipsoid(x, y, z, face_c, np.asarray(face_s) - 15.0)
    facial_bone &= (z < 5.0) & ~orbits & ~brain & ~(np.abs(z - mouth_z) < 6.0)
    tissue[facial_bone & head] = _CLASS_INDEX["bone"]
    tissue[globes] = _CLASS_INDEX["vitreous"]
    airway = ((x / 6.0) ** 2 + ((y + 5.0) / 6.0) ** 2 <= 1.0) & (z <= -34.0)
    tissue[airway] = _CLASS_INDEX["air"]
    spine = ((x / 10.0) ** 2 + ((y - 35.0) / 10.0) ** 2 <= 1.0) & (z <= -28.0)
    tissue[spine] = _CLASS_INDEX["bone"]

    labels = np.zeros(head.shape, dtype=np.uint8)
    labels[brain] = LABEL_VALUES["brain"]
    labels[pinnae & ~cranium & head] = LABEL_VALUES["ears"]
    labels[lips & ~slit] = LABEL_VALUES["mouth"]
    labels[nose & ~face] = LABEL_VALUES["nose"]
    labels[globes] = LABEL_VALUES["eyes"]
    return tissue, labels


# ---- geometry ----------------------------------------------------------------------------

def _reorient(stored, labels, spacing, origin, code):
    """Canonical LPS arrays -> arrays whose axes point as ``code`` says, with matching geometry."""
    world_axes = [_AXIS_OF_LETTER[c][0] for c in code]
    signs = [_AXIS_OF_LETTER[c][1] for c in code]
    shape = stored.shape
    new_origin = origin.copy()
    for w, sign in zip(world_axes, signs):
        if sign < 0:  # index 0 now sits at the canonical axis' far end
            new_origin[w] = origin[w] + (shape[w] - 1) * spacing[w]
    stored = np.transpose(stored, world_axes)
    labels = np.transpose(labels, world_axes)
    for axis, sign in enumerate(signs):
        if sign < 0:
            stored = np.flip(stored, axis)
            labels = np.flip(labels, axis)
    direction = np.zeros((3, 3))
    for axis, (w, sign) in enumerate(zip(world_axes, signs)):
        direction[w, axis] = sign
    return stored, labels, direction, spacing[world_axes], new_origin


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
