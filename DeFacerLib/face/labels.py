"""Per-voxel training labels for the face-feature U-Net, made from hand-checked landmarks.

    table = load_landmarks("scripts/training/landmarks.json")
    labels = training_labels(volume, table[rel]["landmarks"], brain=brain_mask)

Each feature is the tissue around its landmark(s): an axis-aligned ellipsoid in world LPS mm
(the heads are upright after to_canonical; IXI and our other heads are tilted < ~15 deg),
clipped to the head mask and to a maximum depth below the skin, like the face masks of
published feature-removal defacers (e.g. pydeface/mri_deface remove a shell of face tissue
1-3 cm deep). Sizes are adult anatomy with a few mm of margin:

| feature | centre                         | semi-axes L, P, S (mm) | max depth | why |
|---------|--------------------------------|------------------------|-----------|-----|
| eyes    | globe centre, 4 mm anterior    | 16, 17, 14             | 40 mm     | globe r ~12 mm + lids/lashes in front, fat rim |
| nose    | tip + 12 mm post., 18 mm sup.  | 18, 16, 30             | 15 mm     | external nose: nasion (~45 mm above the tip) to base, alae ~35 mm wide |
| mouth   | lip midpoint                   | 27, 13, 16             | 15 mm     | lips ~50 mm wide, upper + lower lip ~30 mm tall |
| ears    | pinna centre                   | 14, 18, 30             | 10 mm     | pinna ~60-65 mm tall, ~35 mm wide, standing ~20 mm off the head |

Where two ellipsoids meet (nose and eyes at the nasion) a voxel goes to the feature whose
ellipsoid it is deepest inside (smallest normalised radius). The brain always wins over a
feature. Without a reference brain, head voxels deeper than UNKNOWN_DEPTH_MM that are not
a feature are UNKNOWN (255): they may be brain, and the loss must not learn "not brain"
there; with ``brain="estimate"`` brain_estimate's mask is used instead where it is reliable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from DeFacerLib.deface.head_mask import head_mask as compute_head_mask
from DeFacerLib.deface.pieces import feature_pieces
from DeFacerLib.deface.skin_depth import bounding_box, skin_depth_mm
from DeFacerLib.errors import InputError
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.volume import Volume

UNKNOWN = 255
UNKNOWN_DEPTH_MM = 10.0  # scalp + skull are >= ~10 mm: shallower voxels are never brain

LANDMARK_FEATURE = {
    "eye_left": "eyes", "eye_right": "eyes", "nose_tip": "nose", "mouth": "mouth",
    "ear_left": "ears", "ear_right": "ears",
}
LANDMARK_NAMES = tuple(LANDMARK_FEATURE)


@dataclass(frozen=True)
class FeatureShape:
    """An ellipsoid around a landmark: centre offset and semi-axes in world LPS mm."""

    offset_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    max_depth_mm: float


# LPS: -y is anterior, +z superior
SHAPES = {
    "eyes": FeatureShape((0.0, -4.0, 0.0), (16.0, 17.0, 14.0), 40.0),
    "nose": FeatureShape((0.0, 12.0, 18.0), (18.0, 16.0, 30.0), 15.0),
    "mouth": FeatureShape((0.0, 0.0, 0.0), (27.0, 13.0, 16.0), 15.0),
    "ears": FeatureShape((0.0, 0.0, 0.0), (14.0, 18.0, 30.0), 10.0),
}


def default_landmarks_path() -> Path:
    """scripts/training/landmarks.json of a source checkout (absent from an installed package)."""
    return Path(__file__).resolve().parents[2] / "scripts" / "training" / "landmarks.json"


def load_landmarks(path: str | Path | None = None) -> dict:
    """{data-relative path: {"landmarks": {name: [x, y, z]}, "missing": [...], ...}} from the table."""
    path = Path(path) if path is not None else default_landmarks_path()
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: landmark table not found; pass the path to scripts/training/landmarks.json") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); fix the file") from None
    if table.get("version") != 1 or table.get("frame") != "LPS mm" or not isinstance(table.get("heads"), dict):
        raise InputError(f"{path}: not a version-1 landmark table in 'LPS mm'; regenerate it with propose_landmarks.py")
    for rel, entry in table["heads"].items():
        unknown = set(entry.get("landmarks", {})) - set(LANDMARK_NAMES)
        if unknown:
            raise InputError(f"{path}: head {rel} has unknown landmark(s) {sorted(unknown)}; use {list(LANDMARK_NAMES)}")
    return table["heads"]


def _ellipsoid_radius(volume: Volume, centre_mm: np.ndarray, semi_mm: np.ndarray):
    """(index box slices, normalised radius in that box) of an axis-aligned world ellipsoid."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * semi_mm + centre_mm
    ijk = volume.world_to_index(corners)
    shape = np.array(volume.shape3)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, shape)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, shape)
    if np.any(hi <= lo):
        return None, None
    grid = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij"), axis=-1)
    world = volume.index_to_world(grid.reshape(-1, 3)).reshape(grid.shape)
    radius = np.sqrt((((world - centre_mm) / semi_mm) ** 2).sum(axis=-1))
    return tuple(slice(a, b) for a, b in zip(lo, hi)), radius


def landmark_ellipsoid(volume: Volume, name: str, point_mm) -> np.ndarray:
    """Boolean mask of the ellipsoid SHAPES gives the landmark ``name`` at ``point_mm`` (world LPS),
    neither clipped to the head nor limited in depth: where the labelled tissue can lie."""
    spec = SHAPES[LANDMARK_FEATURE[name]]
    box, radius = _ellipsoid_radius(volume, np.asarray(point_mm, float) + np.asarray(spec.offset_mm),
                                    np.asarray(spec.semi_axes_mm))
    inside = np.zeros(volume.shape3, dtype=bool)
    if box is not None:
        inside[box] = radius <= 1.0
    return inside


def eye_tissue(volume: Volume, eye_points_mm: dict) -> np.ndarray | None:
    """The eye tissue's ellipsoids around the eyes' landmarks ({"eye_left": [x, y, z], ...},
    world LPS), unclipped: what the guard keeps clear of and the eyes' cut takes at any depth."""
    points = {name: point for name, point in eye_points_mm.items() if LANDMARK_FEATURE.get(name) == "eyes"}
    if not points:
        return None
    tissue = np.zeros(volume.shape3, dtype=bool)
    for name, point in points.items():
        tissue |= landmark_ellipsoid(volume, name, point)
    return tissue


def feature_masks(volume: Volume, landmarks: dict, head: np.ndarray, depth_mm: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Boolean mask per present feature (before the brain is subtracted), overlaps resolved."""
    if depth_mm is None:
        depth_mm = skin_depth_mm(head, volume.spacing_mm)
    shape = volume.shape3
    best_radius = np.full(shape, np.inf, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.uint8)
    for name, point in landmarks.items():
        feature = LANDMARK_FEATURE[name]
        spec = SHAPES[feature]
        centre = np.asarray(point, float) + np.asarray(spec.offset_mm)
        box, radius = _ellipsoid_radius(volume, centre, np.asarray(spec.semi_axes_mm))
        if box is None:
            continue
        inside = (radius <= 1.0) & head[box] & (depth_mm[box] <= spec.max_depth_mm)
        better = inside & (radius < best_radius[box])
        best_radius[box] = np.where(better, radius, best_radius[box])
        owner[box] = np.where(better, LABEL_VALUES[feature], owner[box])
    return {f: owner == LABEL_VALUES[f] for f in FEATURES if np.any(owner == LABEL_VALUES[f])}


def training_labels(
    volume: Volume,
    landmarks: dict[str, list[float]],
    brain: np.ndarray | None = None,
    head: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 labels on ``volume``'s grid: features (LABEL_VALUES), brain 5, 0 background, 255 unknown.

    ``brain``: a boolean reference mask (wins over every feature), or None: then head voxels
    deeper than UNKNOWN_DEPTH_MM that are no feature are 255 (maybe brain; not learned).
    """
    if head is None:
        head = compute_head_mask(volume)
    head = np.asarray(head, dtype=bool)
    depth = skin_depth_mm(head, volume.spacing_mm)
    labels = np.zeros(volume.shape3, dtype=np.uint8)
    for feature, mask in feature_masks(volume, landmarks, head, depth).items():
        labels[mask] = LABEL_VALUES[feature]
    if brain is not None:
        brain = np.asarray(brain, dtype=bool)
        labels[brain] = LABEL_VALUES["brain"]
    else:
        labels[(labels == 0) & head & (depth > UNKNOWN_DEPTH_MM)] = UNKNOWN
    return labels


def feature_centres(volume: Volume, labels: np.ndarray, min_volume_mm3: float = 200.0) -> dict[str, list[np.ndarray]]:
    """World LPS centroids of each connected component of each feature, largest first.

    Components smaller than ``min_volume_mm3`` (speckle in a prediction) are left out.
    """
    voxel_mm3 = float(np.prod(volume.spacing_mm))
    centres: dict[str, list[np.ndarray]] = {}
    for feature in FEATURES:
        mask = np.asarray(labels) == LABEL_VALUES[feature]
        box = bounding_box(mask)  # label and sum on the feature's own box: a whole 1 mm grid is 3 s
        centres[feature] = []
        if box is None:
            continue
        pieces, count = feature_pieces(mask[box], volume.spacing_mm, feature)
        flat = pieces.ravel()
        sizes = np.bincount(flat, minlength=count + 1)[1:].astype(float)
        coords = np.indices(pieces.shape).reshape(3, -1)
        means = np.stack([np.bincount(flat, weights=c, minlength=count + 1)[1:] for c in coords], axis=1)
        means = means / sizes[:, None] + np.array([s.start for s in box], float)
        for i in np.argsort(sizes, kind="stable")[::-1]:
            if sizes[i] * voxel_mm3 >= min_volume_mm3:
                centres[feature].append(volume.index_to_world(means[i]))
    return centres


def feature_volumes_cm3(volume: Volume, labels: np.ndarray) -> dict[str, float]:
    """Labelled volume per feature and brain, in cm^3 (for reports and tests)."""
    voxel_cm3 = float(np.prod(volume.spacing_mm)) / 1000.0
    return {name: float(np.count_nonzero(labels == value)) * voxel_cm3 for name, value in LABEL_VALUES.items()}
