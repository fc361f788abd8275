"""Training-time augmentation on the network grid (numpy/scipy, reproducible from a seed).

Spatial changes move the image and its labels together (one affine, linear for the image,
nearest for the labels, so label values such as 255 = unknown survive). Intensity changes
touch only the image and are wide on purpose: the training set is mostly T1, but DeFacer
must also see T2, FLAIR, CT and PET-like heads, so the contrast between tissues is remapped,
inverted, bent (gamma), shaded (bias field), noised and blurred (PET resolution is 4-8 mm).
Eyes and ears are single classes, so a left-right flip needs no label swap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.face.grid import GRID_SPACING_MM


@dataclass(frozen=True)
class AugmentSettings:
    rotation_deg: float = 15.0  # per axis, uniform +-
    shift_mm: float = 10.0  # per axis, uniform +-
    zoom_range: tuple[float, float] = (0.9, 1.1)  # per axis
    shear: float = 0.08  # off-diagonal terms, uniform +-
    flip_lr_p: float = 0.5
    orientation_p: float = 0.1  # random permutation + flips of all grid axes
    inversion_p: float = 0.25
    remap_p: float = 0.4  # random piecewise-linear tissue-contrast curve
    gamma_log_range: float = 0.6  # gamma = exp(U(-r, r))
    bias_p: float = 0.5
    bias_strength: float = 0.35
    noise_sd_max: float = 0.06
    blur_p: float = 0.25
    blur_fwhm_mm: tuple[float, float] = (3.0, 8.0)
    fov_cut_p: float = 0.3  # field of view cut off below a random level (see fov_cut)
    fov_cut_top_fraction: float = 0.72  # highest cut, as a fraction of the grid height (above the eyes)
    spacing_mm: float = GRID_SPACING_MM


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            settings: AugmentSettings = AugmentSettings()) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) -> augmented copies of the same shape; ``rng`` makes it reproducible."""
    image, labels = fov_cut(image, labels, rng, settings)
    image, labels = spatial(image, labels, rng, settings)
    return intensity(image, rng, settings), labels


def fov_cut(image, labels, rng, s: AugmentSettings = AugmentSettings()):
    """Scans often stop short of the chin, the mouth or the eyes (or show only the brain): air
    below a random axial level, with no feature there, teaches the network that a feature the
    scan does not show is absent. Without it, a crown cut above the eyes got "eyes" and a
    "nose" at its lower edge. Grid axis 2 points up (canonical L, P, S)."""
    if rng.random() >= s.fov_cut_p:
        return image, labels
    level = int(rng.integers(0, int(image.shape[2] * s.fov_cut_top_fraction) + 1))
    background = float(np.median(np.concatenate([image[0].ravel(), image[-1].ravel()])))
    image, labels = image.copy(), labels.copy()
    image[:, :, :level] = background
    labels[:, :, :level] = 0
    return image, labels


def random_affine(rng: np.random.Generator, s: AugmentSettings) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, shift in voxels) mapping output voxel offsets from the centre to input ones."""
    angles = np.deg2rad(rng.uniform(-s.rotation_deg, s.rotation_deg, 3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        r = np.eye(3)
        r[a, a] = r[b, b] = np.cos(angle)
        r[a, b], r[b, a] = -np.sin(angle), np.sin(angle)
        rotation = rotation @ r
    shear = np.eye(3) + np.triu(rng.uniform(-s.shear, s.shear, (3, 3)), 1)
    zoom = np.diag(1.0 / rng.uniform(*s.zoom_range, 3))  # output->input: 1/zoom
    shift = rng.uniform(-s.shift_mm, s.shift_mm, 3) / s.spacing_mm
    return rotation @ shear @ zoom, shift


def spatial(image, labels, rng, s: AugmentSettings = AugmentSettings()):
    matrix, shift = random_affine(rng, s)
    centre = (np.asarray(image.shape) - 1) / 2.0
    offset = centre - matrix @ centre + shift
    background = float(np.median(np.concatenate([image[0].ravel(), image[-1].ravel()])))
    image = ndi.affine_transform(image, matrix, offset=offset, order=1, mode="constant", cval=background,
                                 output=np.float32)
    labels = ndi.affine_transform(labels, matrix, offset=offset, order=0, mode="constant", cval=0)
    if rng.random() < s.flip_lr_p:
        image, labels = image[::-1], labels[::-1]
    if rng.random() < s.orientation_p:
        order = rng.permutation(3)
        image, labels = np.transpose(image, order), np.transpose(labels, order)
        for axis in range(3):
            if rng.random() < 0.5:
                image, labels = np.flip(image, axis), np.flip(labels, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def intensity(image: np.ndarray, rng: np.random.Generator, s: AugmentSettings = AugmentSettings()) -> np.ndarray:
    x = np.clip(image, 0.0, None).astype(np.float32)
    tissue = ndi.gaussian_filter(x, 1.0) > 0.08  # rough head, keeps air dark under remapping
    if rng.random() < s.remap_p:
        knots_in = np.array([0.0, 0.08, 0.3, 0.5, 0.7, 1.0, 2.0])
        knots_out = np.concatenate([[0.0, rng.uniform(0.0, 0.3)], rng.uniform(0.05, 1.0, 4), [rng.uniform(0.6, 2.0)]])
        x = np.where(tissue, np.interp(x, knots_in, knots_out), x).astype(np.float32)
    if rng.random() < s.inversion_p:
        x = np.where(tissue, np.clip(1.1 - x, 0.02, None), x).astype(np.float32)
    x = np.power(x, np.exp(rng.uniform(-s.gamma_log_range, s.gamma_log_range))).astype(np.float32)
    if rng.random() < s.bias_p:
        x = x * _bias_field(x.shape, rng, s.bias_strength)
    if rng.random() < s.blur_p:
        fwhm = rng.uniform(*s.blur_fwhm_mm)
        x = ndi.gaussian_filter(x, fwhm / 2.3548 / s.spacing_mm)
    x = x + rng.normal(0.0, rng.uniform(0.0, s.noise_sd_max), x.shape).astype(np.float32)
    top = np.percentile(x[tissue], 99) if tissue.any() else 1.0
    return (x / max(float(top), 1e-3)).astype(np.float32)


def _bias_field(shape, rng, strength: float) -> np.ndarray:
    """exp of a random second-order polynomial over [-1, 1]^3: a smooth multiplicative shading."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    field = sum(np.float32(c) * t for c, t in zip(rng.uniform(-strength, strength, len(terms)), terms))
    return np.exp(field).astype(np.float32)
