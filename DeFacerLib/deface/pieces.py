"""A feature mask's connected pieces, where two eyes the U-Net joined count as two.

On IXI546 turned 20 degrees about each axis the model's two eye regions touched between the
eyes: one 26-connected piece, so the eyes had one box and no landmarks, and the face's frame
(face_cut.face_frame) fell back to the header's axes, 20-28 degrees off the face's own. One
1 mm erosion already parts them. A joined piece is split only when it erodes into two cores of
comparable size whose centres lie as far apart as two eyes do (the globes' centres are 55-70 mm
apart; one eye's region is under 35 mm wide), so a single eye, or an eye beside a scrap, stays
whole.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# A second piece counts (both eyes, both ears) when it is at least this share of the largest.
SECOND_PIECE_MIN_FRACTION = 0.1
# Only the eyes are split: the ears cannot touch across the head.
SPLIT_APART_MM = {"eyes": 40.0}
SPLIT_MAX_ERODE_MM = 4.0
SPLIT_MIN_SHARE = 0.3  # the smaller core against the larger

_CONNECTED = np.ones((3, 3, 3), dtype=bool)


def feature_pieces(mask: np.ndarray, spacing_mm, feature: str) -> tuple[np.ndarray, int]:
    """(labels, count) as ndi.label gives them (26-connected), with a joined pair of eyes
    split into two labels, every voxel to the nearer of the two eroded cores."""
    labels, count = ndi.label(mask, structure=_CONNECTED)
    apart_mm = SPLIT_APART_MM.get(feature)
    if apart_mm is None or count == 0:
        return labels, count
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes)
    if count > 1 and sizes[order[1]] >= SECOND_PIECE_MIN_FRACTION * sizes[order[0]]:
        return labels, count  # two pieces already
    largest = int(order[0]) + 1
    box = ndi.find_objects(labels)[largest - 1]
    halves = split_joined(labels[box] == largest, np.asarray(spacing_mm, float), apart_mm)
    if halves is None:
        return labels, count
    labels[box][halves == 2] = count + 1
    return labels, count + 1


def split_joined(piece: np.ndarray, spacing_mm: np.ndarray, apart_mm: float) -> np.ndarray | None:
    """``piece`` (one connected piece) as labels 1 and 2 (0 outside) where eroding it by up to
    SPLIT_MAX_ERODE_MM parts it into two cores of comparable size (SPLIT_MIN_SHARE) whose
    centres are at least ``apart_mm`` apart; else None."""
    most = max(1, int(np.ceil(SPLIT_MAX_ERODE_MM / float(spacing_mm.min()))))
    core = piece
    for _ in range(most):
        core = ndi.binary_erosion(core)
        if not core.any():
            return None
        cores, count = ndi.label(core, structure=_CONNECTED)
        if count < 2:
            continue
        sizes = np.bincount(cores.ravel())[1:]
        first, second = (int(i) + 1 for i in np.argsort(-sizes)[:2])
        if sizes[second - 1] < SPLIT_MIN_SHARE * sizes[first - 1]:
            continue
        centres = np.array(ndi.center_of_mass(core, cores, [first, second])) * spacing_mm
        if np.linalg.norm(centres[0] - centres[1]) < apart_mm:
            return None
        seeds = np.where(cores == first, 1, np.where(cores == second, 2, 0))
        nearest = ndi.distance_transform_edt(seeds == 0, sampling=spacing_mm, return_distances=False,
                                             return_indices=True)
        return np.where(piece, seeds[tuple(nearest)], 0)
    return None
