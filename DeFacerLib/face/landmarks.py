"""Facial landmarks from skin geometry and intensity, alone or snapped from the U-Net's regions.

    from DeFacerLib.face.landmarks import locate_landmarks, refine_landmarks
    found = locate_landmarks(volume, vitreous_bright=False)      # geometry alone (training proposals)
    points = refine_landmarks(volume, labels, head)               # the U-Net's regions, snapped

Two users share the same anatomical cues, so there is one copy of them:
- scripts/training/propose_landmarks.py proposes the training landmarks with
  ``locate_landmarks`` (every proposal was then checked by eye and moved by hand where off);
- the deface pipeline turns the U-Net's regions into landmarks with ``refine_landmarks``: the
  region centroids, less their measured offset from the landmark (the 3.75 mm grid puts them
  5-12 mm off), give each search a window, and the cue snaps to the anatomy inside it.

Cues, in the canonical frame (array axes L, P, S; all distances in mm):
- nose tip: the most protruding point of the mid-face (the anterior outline's prominence over
  itself 15 mm to either side), then the most anterior voxel within 8 mm of that peak; searched
  100-185 mm below the vertex, or near the model's nose;
- eyes: the vitreous is a round blob (dark on T1, bright on T2 and CT) ~12 mm in radius: a
  difference of Gaussians (5 mm centre, 12 mm surround) in a box 22-44 mm above and 0-65 mm
  behind the nose tip, 22-45 mm either side of it, scored as a mirror-symmetric pair; sinus
  air (T1) is made bright first; on CT the image is first turned into closeness to soft tissue;
  each blob's peak is then moved to the globe's centre (``globe_centre``): the point within
  GLOBE_SEARCH_MM whose 8 mm ball is most uniform and most unlike the 12.5-15 mm shell around
  it (sclera, fat, muscle), on MR (on CT the blob's peak stands). The fit's centres were
  checked by eye on every MR head (scripts/training/refine_eye_landmarks.py);
- mouth: on the mid-sagittal anterior outline below the nose: the subnasale (deepest notch
  5-25 mm below the tip), then the notch (stomion) between the upper and lower lip's bulges,
  placed 5 mm inside the skin;
- ears (geometry alone, the training proposals): head tissue standing laterally proud of the
  smoothed (grey-opened, 70 mm) side outline, 75-150 mm behind the nose tip at eye-to-mouth
  level. It lands in front of or above the pinna on 14 of 33 heads (moved by hand), and near
  the model's ears it is no better than the model (median 9-11 mm off);
- ears near the model's: the concha, the deepest bowl of the skin seen from the side
  (face.concha): 2.8 mm (median) from the readers' consensus on the held-out ears, where the
  model's estimate alone is 6.3 mm.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.pinna import lateral_extent
from DeFacerLib.errors import OutputError
from DeFacerLib.face.concha import find_conchae
from DeFacerLib.face.labels import LANDMARK_FEATURE, feature_centres
from DeFacerLib.intensity import non_finite_as_background
from DeFacerLib.orientation import canonical_reorientation
from DeFacerLib.volume import Volume

# The ears' proposals look for the pinna as what stands proud of the side view grey-opened by a
# flat window this wide: everything near the widest part of the head stands proud of it, and the
# pinna most (deface.pinna.head_outline, a rolling ball that keeps the head's curve, is what the
# cut uses; the proposals were made, and checked by hand, with this one).
PROPOSAL_OUTLINE_OPENING_MM = 70.0
DEFAULT_NOSE_WINDOW_MM = (100.0, 185.0)  # below the top of the head (the chin is lower)

# Mean of (U-Net region centroid - verified landmark) over the 24 training heads, world LPS mm,
# for the paired features with x made lateral-positive (scripts/evaluate_defacing.py --offsets,
# shipped model, 2026-12-05). The nose region sits above and behind its tip by design (the
# label is the whole external nose); the ear region above the concha, the ears' landmark (the
# readers' consensus, scripts/training/ear_consensus.json), since its label is centred on the
# looser "pinna centre" of landmarks.json; the eye region 4 mm in front of the globe's centre,
# as its label (measured again after the eyes were moved to the globe fit: it was
# (-0.9, -2.8, 0.3) with the eye points 2-11 mm off the centre); the others are near zero.
MODEL_CENTROID_OFFSET_MM = {
    "eyes": (1.1, -4.2, -0.6),
    "nose": (4.8, 15.0, 8.6),
    "mouth": (4.8, 2.6, 0.6),
    "ears": (-2.7, -4.3, 7.9),
}
# How far the cue may move a landmark from the model's estimate (whose own error is a median of
# 4-6 mm and up to ~10 mm on the training heads; the ears' up to ~12 mm), and the search radius
# around it. Farther than this the cue has found something else (another blob; the lips or the
# brow for the nose tip) and the model's estimate stands.
SNAP_MM = {"eyes": 10.0, "nose": 12.0, "mouth": 12.0, "ears": 12.0}
# A fit at the edge of its own search (the globe's GLOBE_SEARCH_MM is the eyes' SNAP_MM) lies
# 10 mm plus rounding from its start: 10.000000112 mm lost a right globe fit on an oblique IXI255,
# and the model's eye, 10 mm too high, was cut at any depth into the frontal lobe.
SNAP_TOLERANCE_MM = 1e-3
SEARCH_RADIUS_MM = 20.0
# The globe fit (globe_centre): vitreous ball, the shell around the globe, how far it may move.
GLOBE_BALL_MM = 8.0
GLOBE_SHELL_MM = (12.5, 15.0)
GLOBE_SEARCH_MM = 10.0
# The fit's score (contrast over the ball's spread) at the 66 verified eyes of the 33 heads:
# 3.2-13 (median 6.4); a uniform region scores 0. Below this nothing globe-like was found.
GLOBE_MIN_SCORE = 2.0


@dataclass
class LandmarkSearch:
    """World LPS landmarks (mm) by name, the names the field of view lacks, and what was seen."""

    landmarks: dict[str, np.ndarray]
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def vitreous_is_bright(volume: Volume, name: str = "") -> bool:
    """T1: dark vitreous; T2 and CT (soft tissue denser than orbital fat): bright (by header/name)."""
    return volume.modality == "CT" or "T2" in name


def locate_landmarks(volume: Volume, *, vitreous_bright: bool, head: np.ndarray | None = None,
                     nose_window_mm: tuple[float, float] = DEFAULT_NOSE_WINDOW_MM,
                     near: dict[str, np.ndarray] | None = None, ears: bool = True,
                     eyes: bool = True) -> LandmarkSearch:
    """The six landmarks of ``volume`` from its geometry and intensity (see the module docstring).

    ``near``: world points (landmark name -> LPS mm) that restrict each search to within
    SEARCH_RADIUS_MM of them (the nose replaces the vertical window; the eyes keep their box
    relative to the nose tip). ``head``: the head mask on the volume's grid, if computed.
    ``ears``/``eyes`` False: those searches are not run (a caller that finds them otherwise).
    """
    from DeFacerLib.deface import head_mask

    reorientation = canonical_reorientation(volume)
    if head is None:
        head = head_mask(volume)
    array_c = reorientation.apply(volume.reference_array())  # views
    head_c = reorientation.apply(head)
    spacing = np.asarray(volume.spacing_mm, float)[list(reorientation.permutation)]

    near_canonical = {k: reorientation.apply_index(volume.world_to_index(np.asarray(v, float)[None, :]))[0]
                      for k, v in (near or {}).items()}
    # With windows from the model only the face's part of the head is searched: every voxel
    # from the front of the array back to 70 mm behind the deepest window, and 70 mm above and
    # below them, at every width (the head's mid-line needs both sides).
    crop_lo = np.zeros(3, int)
    crop_hi = np.asarray(array_c.shape)
    if near_canonical:
        points = np.array(list(near_canonical.values()))
        reach = np.ceil(70.0 / spacing).astype(int)
        crop_hi[1] = min(crop_hi[1], int(points[:, 1].max()) + reach[1] + 1)
        crop_lo[2] = max(0, int(points[:, 2].min()) - reach[2])
        crop_hi[2] = min(crop_hi[2], int(points[:, 2].max()) + reach[2] + 1)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(crop_lo, crop_hi))
    values = array_c[crop].astype(np.float32)
    if volume.slope != 1.0 or volume.intercept != 0.0:  # as Volume.physical()
        values = values * np.float32(volume.slope) + np.float32(volume.intercept)
    values = non_finite_as_background(values)  # a NaN would spread through every filter below
    head_c = np.ascontiguousarray(head_c[crop])
    near_index = {k: v - crop_lo for k, v in near_canonical.items()}
    face = _Face(spacing, values, head_c, stats_step_mm=2.0 if near_canonical else 0.0)
    found = LandmarkSearch({})
    nose, prominence_mm = face.nose_tip(nose_window_mm, near_index.get("nose_tip"))
    found.notes.append(f"nose prominence {prominence_mm:.0f} mm")
    points = {"nose_tip": nose}
    pair = face.eyes(nose, vitreous_bright, volume.modality == "CT",
                     [near_index[e] for e in ("eye_left", "eye_right") if e in near_index]) if eyes else ()
    if pair is None:
        found.missing += ["eye_left", "eye_right"]
    elif pair:
        if volume.modality != "CT":  # CT: the globe is too close to the fat and the lids (see globe_centre)
            fits = [globe_centre(values, spacing, eye, bright=vitreous_bright) for eye in pair]
            pair = tuple(eye if fit is None else fit for eye, fit in zip(pair, fits))
        points["eye_left"], points["eye_right"] = pair
    mouth = face.mouth(nose)
    if mouth is None:
        found.missing.append("mouth")
    else:
        points["mouth"] = mouth
    if ears:
        eye_k = np.mean([points[e][2] for e in ("eye_left", "eye_right") if e in points] or
                        [nose[2] + 35 / spacing[2]])
        for name, side in (("ear_left", 1.0), ("ear_right", -1.0)):
            point, note = face.ear(nose, eye_k, side)
            if point is None:
                found.missing.append(name)
            else:
                points[name] = point
            if note:
                found.notes.append(f"{name}: {note}")
    for name, point in points.items():
        original = reorientation.undo_index(np.asarray(point, float) + crop_lo)
        found.landmarks[name] = volume.index_to_world(original)[0]
    found.missing.sort()
    return found


def model_landmarks(volume: Volume, labels: np.ndarray, offsets_mm: dict | None = None) -> dict[str, np.ndarray]:
    """World LPS landmark estimates from the U-Net's label map: each region's centroid less
    its offset (default MODEL_CENTROID_OFFSET_MM); the two largest eye (ear) regions are left
    and right by x."""
    offsets_mm = MODEL_CENTROID_OFFSET_MM if offsets_mm is None else offsets_mm
    centres = feature_centres(volume, labels)
    points = {}
    for name, feature in LANDMARK_FEATURE.items():
        offset = np.asarray(offsets_mm[feature], float)
        found = centres.get(feature, [])
        if name in ("nose_tip", "mouth"):
            if found:
                points[name] = found[0] - offset
            continue
        pair = sorted(found[:2], key=lambda c: c[0])  # LPS: +x is the patient's left
        if len(pair) < 2:
            continue
        centre = pair[1] if name.endswith("left") else pair[0]
        lateral = offset * (np.array([1.0, 1.0, 1.0]) if name.endswith("left") else np.array([-1.0, 1.0, 1.0]))
        points[name] = centre - lateral
    return points


def refine_landmarks(volume: Volume, labels: np.ndarray, head: np.ndarray | None = None) -> dict[str, dict]:
    """{landmark: {"mm": [x, y, z] world LPS, "by": "anatomy" | "model"}} for what the U-Net found.

    The model's estimates (model_landmarks) window the anatomical cues; a cue's answer farther
    than SNAP_MM from the model's estimate is dropped for the estimate, and so is every answer
    when a search cannot run (a window the head does not fill). The ears snap to the concha.
    """
    coarse = model_landmarks(volume, labels)
    if "nose_tip" not in coarse:
        return {name: {"mm": _rounded(point), "by": "model"} for name, point in coarse.items()}
    bright = _vitreous_looks_bright(volume, coarse, head)
    try:
        # MR: the globe fit straight from the model's eyes (a few mm off), not the blob search
        search = locate_landmarks(volume, vitreous_bright=bright, head=head, near=coarse, ears=False,
                                  eyes=volume.modality == "CT")
    except (ValueError, IndexError):  # a search window the head does not fill: the model's estimates stand
        search = LandmarkSearch({})
    if volume.modality != "CT":
        search.landmarks.update(_globes_near(volume, coarse, bright))
    try:
        search.landmarks.update(find_conchae(volume, head, coarse))
    except (ValueError, IndexError, OutputError):  # no skin surface to read the ears from: the model's stand
        pass
    result = {}
    for name, estimate in coarse.items():
        snapped = search.landmarks.get(name)
        limit = SNAP_MM.get(LANDMARK_FEATURE[name])
        if snapped is not None and limit is not None and np.linalg.norm(snapped - estimate) <= limit + SNAP_TOLERANCE_MM:
            result[name] = {"mm": _rounded(snapped), "by": "anatomy"}
        else:
            result[name] = {"mm": _rounded(estimate), "by": "model"}
    return result


def globe_centre(values: np.ndarray, spacing_mm, start, *, bright: bool,
                 search_mm: float = GLOBE_SEARCH_MM) -> np.ndarray | None:
    """The eye's centre near ``start`` (an index on ``values``' grid, spacing_mm per axis; the
    axes need not be canonical): the point within ``search_mm`` whose GLOBE_BALL_MM ball is
    darker (``bright``: brighter) than the shell around the globe by most of the ball's own
    spread. The vitreous is the one uniform, round thing of its size in the orbit; the score
    is read on a 1 mm grid resampled around ``start``, so anisotropic voxels weigh the same.
    Not for CT: there the globe is barely denser than the fat, the lids in front are as dense
    as the vitreous, and the air beyond them pulled the fit 4-5 mm forward."""
    spacing_mm = np.asarray(spacing_mm, float)
    start = np.asarray(start, float)
    outer = GLOBE_SHELL_MM[1]
    reach = int(np.ceil(search_mm + outer))
    offsets_mm = np.arange(-reach, reach + 1, dtype=float)
    grid = np.stack(np.meshgrid(offsets_mm, offsets_mm, offsets_mm, indexing="ij"))
    index = start[:, None, None, None] + grid / spacing_mm[:, None, None, None]
    cube = ndi.map_coordinates(values, index.reshape(3, -1), order=1, mode="nearest",
                               output=np.float64).reshape(grid.shape[1:])
    r = np.arange(-int(np.ceil(outer)), int(np.ceil(outer)) + 1)
    radius = np.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
    ball = (radius <= GLOBE_BALL_MM) / np.count_nonzero(radius <= GLOBE_BALL_MM)
    shell_in = (radius >= GLOBE_SHELL_MM[0]) & (radius <= outer)
    shell = shell_in / np.count_nonzero(shell_in)
    mean, mean_of_square, shell_mean = _averages(cube, ball, shell)
    spread = np.sqrt(np.maximum(mean_of_square - mean * mean, 0.0))
    contrast = (mean - shell_mean) * (1.0 if bright else -1.0)
    score = contrast / (spread + 0.05 * float(np.abs(cube).mean()) + 1e-9)
    score[np.linalg.norm(grid, axis=0) > search_mm] = -np.inf
    best = np.unravel_index(int(np.argmax(score)), score.shape)
    if not np.isfinite(score[best]) or score[best] < GLOBE_MIN_SCORE:  # nothing globe-like
        return None
    return start + grid[(slice(None),) + best] / spacing_mm


def _averages(cube: np.ndarray, ball: np.ndarray, shell: np.ndarray) -> tuple[np.ndarray, ...]:
    """The ball's mean of the cube and of its square, and the shell's mean, at every voxel (the
    kernels are symmetric; "same" size, zero beyond the cube), by FFT: scipy.fft, as
    scipy.signal would take 0.4 s to import."""
    from scipy import fft

    size = [n + k - 1 for n, k in zip(cube.shape, ball.shape)]
    shape = [fft.next_fast_len(n, real=True) for n in size]
    start = [(k - 1) // 2 for k in ball.shape]
    crop = tuple(slice(a, a + n) for a, n in zip(start, cube.shape))
    ball_f, shell_f = (fft.rfftn(kernel, shape) for kernel in (ball, shell))
    cube_f, square_f = (fft.rfftn(values, shape) for values in (cube, cube * cube))
    return tuple(fft.irfftn(a * b, shape)[crop] for a, b in ((cube_f, ball_f), (square_f, ball_f), (cube_f, shell_f)))


def _globes_near(volume: Volume, coarse: dict, bright: bool) -> dict[str, np.ndarray]:
    """The globe's centre (globe_centre) near each of the model's eyes, world LPS mm.

    The model's eyes are 3 mm (median) from the verified centres on the held-out heads; the
    blob search, which looks for a pair across the whole orbit box, went 20-26 mm astray on
    three of their eyes (the maxillary sinus, the brow) and left them at the model's estimate."""
    values = non_finite_as_background(volume.reference_array())
    found = {}
    for name in ("eye_left", "eye_right"):
        if name in coarse:
            start = volume.world_to_index(np.asarray(coarse[name], float)[None, :])[0]
            fit = globe_centre(values, volume.spacing_mm, start, bright=bright)
            if fit is not None:
                found[name] = volume.index_to_world(fit[None, :])[0]
    return found


def _rounded(point) -> list[float]:
    return [round(float(c), 1) for c in point]


def _vitreous_looks_bright(volume: Volume, coarse: dict, head: np.ndarray | None) -> bool:
    """CT: bright (soft tissue). MR: the mean within 5 mm of the model's eye centres against the
    head's median (fluid is dark on T1, bright on T2)."""
    if volume.modality == "CT":
        return True
    eyes = [coarse[e] for e in ("eye_left", "eye_right") if e in coarse]
    if not eyes or head is None:
        return False
    values = non_finite_as_background(volume.reference_array())
    inner = []
    for point in eyes:
        centre = volume.world_to_index(np.asarray(point, float)[None, :])[0]
        reach = np.ceil(5.0 / volume.spacing_mm).astype(int)
        lo = np.maximum(np.round(centre).astype(int) - reach, 0)
        hi = np.minimum(np.round(centre).astype(int) + reach + 1, volume.shape3)
        if np.any(hi <= lo):
            continue
        grid = np.indices(tuple(hi - lo)).transpose(1, 2, 3, 0) + lo
        ball = np.linalg.norm((grid - centre) * volume.spacing_mm, axis=-1) <= 5.0
        inner.append(values[tuple(slice(a, b) for a, b in zip(lo, hi))][ball])
    if not inner:
        return False
    step = tuple(slice(None, None, 2) for _ in range(3))
    return float(np.mean(np.concatenate(inner))) > float(np.median(values[step][head[step]]))


class _Face:
    """The head in the canonical frame: its anterior outline and the searches that use it."""

    def __init__(self, spacing: np.ndarray, values: np.ndarray, head: np.ndarray, stats_step_mm: float = 0.0):
        self.spacing, self.values, self.head = np.asarray(spacing, float), values, head
        # the head's intensity statistics: every voxel, or a ~stats_step_mm subsample (as fine as needed)
        step = tuple(slice(None, None, int(max(1, round(stats_step_mm / s)))) for s in self.spacing)
        self.head_values = values[step][head[step]]
        self.shape = np.array(head.shape)
        self.any_j = head.any(axis=1)
        # anterior outline: first head voxel along +P for each (i, k); small = anterior
        self.front_j = np.where(self.any_j, np.argmax(head, axis=1), self.shape[1] + 1000).astype(float)
        self.front_mm = self.front_j * self.spacing[1]
        xs = head.any(axis=(1, 2))
        self.mid_i = 0.5 * (np.flatnonzero(xs)[0] + np.flatnonzero(xs)[-1])

    def nose_tip(self, window_mm, near) -> tuple[np.ndarray, float]:
        spacing, shape, front_mm = self.spacing, self.shape, self.front_mm
        offset = int(round(15.0 / spacing[0]))
        prom = np.full(front_mm.shape, -np.inf)
        for i in range(offset, shape[0] - offset):
            sides = np.maximum(front_mm[i - offset], front_mm[i + offset])  # the less anterior side
            prom[i] = sides - front_mm[i]
        prom[~self.any_j] = -np.inf
        near_mid = np.abs(np.arange(shape[0]) - self.mid_i) * spacing[0] < 32.0  # heads sit off-centre up to ~25 mm
        prom[~near_mid] = -np.inf
        if near is not None:
            ii, kk = np.meshgrid(np.arange(shape[0]), np.arange(shape[2]), indexing="ij")
            prom[np.hypot((ii - near[0]) * spacing[0], (kk - near[2]) * spacing[2]) > SEARCH_RADIUS_MM] = -np.inf
        else:
            top_k = np.flatnonzero(self.head.any(axis=(0, 1)))[-1]
            prom[:, top_k - int(window_mm[0] / spacing[2]):] = -np.inf
            prom[:, : max(top_k - int(window_mm[1] / spacing[2]), 0)] = -np.inf
        pi, pk = np.unravel_index(np.argmax(prom), prom.shape)
        # the most anterior voxel within 8 mm
        r_i, r_k = int(8 / spacing[0]), int(8 / spacing[2])
        box = front_mm[max(pi - r_i, 0):pi + r_i + 1, max(pk - r_k, 0):pk + r_k + 1]
        bi, bk = np.unravel_index(np.argmin(box), box.shape)
        ni, nk = max(pi - r_i, 0) + bi, max(pk - r_k, 0) + bk
        return np.array([ni, self.front_j[ni, nk], nk], float), float(prom[pi, pk])

    def eyes(self, nose, bright: bool, is_ct: bool, near: list) -> tuple[np.ndarray, np.ndarray] | None:
        spacing, shape, values = self.spacing, self.shape, self.values
        sign = 1.0 if bright else -1.0
        lo = np.floor(nose + np.array([-55, 0, 22]) / spacing).astype(int)
        hi = np.ceil(nose + np.array([55, 65, 44]) / spacing).astype(int)
        if hi[2] > shape[2] + 20 / spacing[2]:
            return None
        lo_c, hi_c = np.maximum(lo, 0), np.minimum(hi, shape)
        if np.any(hi_c <= lo_c):
            return None
        sub = values[lo_c[0]:hi_c[0], lo_c[1]:hi_c[1], lo_c[2]:hi_c[2]]
        if is_ct:  # vitreous ~ soft tissue; fat darker, bone brighter: closeness to soft tissue
            sub = -np.abs(sub - float(np.median(self.head_values)))
        elif sign < 0:  # T1: sinus air is darker than the vitreous; make it bright so only the globe is a dark blob
            p60, p95 = np.percentile(self.head_values, [60, 95])
            sub = np.where(sub < 0.08 * p95, p60, sub)
        centre = ndi.gaussian_filter(sub, 5.0 / spacing)
        surround = ndi.gaussian_filter(sub, 12.0 / spacing)
        dog = sign * (centre - surround) / (np.percentile(np.abs(sub), 95) + 1e-6)
        # at least 8 mm behind the face's anterior outline (the head mask may have holes in the orbit)
        jj = np.arange(lo_c[1], hi_c[1])[None, :, None]
        dog[~((jj - self.front_j[lo_c[0]:hi_c[0], None, lo_c[2]:hi_c[2]]) * spacing[1] > 8.0)] = -1e9
        grid = np.indices(sub.shape).reshape(3, -1).T + lo_c
        if near:
            close = np.zeros(len(grid), bool)
            for point in near:
                close |= np.linalg.norm((grid - point) * spacing, axis=1) <= SEARCH_RADIUS_MM
            dog.ravel()[~close] = -1e9
        # pair score: a globe on the left and one near its mirror image across the nose's sagittal plane
        nearby = ndi.maximum_filter(dog, size=np.maximum(3, np.round(10.0 / spacing)).astype(int))
        dx = (grid[:, 0] - nose[0]) * spacing[0]
        mirror = grid.copy()
        mirror[:, 0] = np.round(2 * nose[0] - grid[:, 0]).astype(int)
        inside = (mirror[:, 0] >= lo_c[0]) & (mirror[:, 0] < hi_c[0])
        pair = np.full(len(grid), -np.inf)
        m = inside & (dx > 22.0) & (dx < 45.0)
        pair[m] = dog.ravel()[m] + nearby[tuple((mirror[m] - lo_c).T)]
        best = int(np.argmax(pair))
        if not np.isfinite(pair[best]) or pair[best] < -1e8:
            return None
        mj = mirror[best] - lo_c
        r = np.maximum(1, np.round(5.0 / spacing)).astype(int)
        box = dog[max(mj[0] - r[0], 0):mj[0] + r[0] + 1, max(mj[1] - r[1], 0):mj[1] + r[1] + 1,
                  max(mj[2] - r[2], 0):mj[2] + r[2] + 1]
        off = np.array(np.unravel_index(np.argmax(box), box.shape))
        return grid[best].astype(float), (np.maximum(mj - r, 0) + off + lo_c).astype(float)

    def mouth(self, nose) -> np.ndarray | None:
        spacing, shape = self.spacing, self.shape
        ni, nk = nose[0], int(nose[2])
        band = slice(max(int(ni - 3 / spacing[0]), 0), int(ni + 3 / spacing[0]) + 1)
        profile = self.front_mm[band].min(axis=0)  # per k; small = anterior
        k_lo = int(nk - 32 / spacing[2])  # the lips must be in the field of view
        if k_lo < 0 or not np.all(profile[max(k_lo, 0):nk] < shape[1] * spacing[1]):
            return None
        prot = -ndi.gaussian_filter1d(profile.astype(float), 1.0 / spacing[2])
        kk = np.arange(len(prot))
        z = (kk - nk) * spacing[2]
        sub_rng = (z <= -5) & (z >= -25)  # subnasale: the deepest notch below the tip
        ksn = kk[sub_rng][np.argmin(prot[sub_rng])]
        upper_rng = (kk <= ksn - 2 / spacing[2]) & (kk >= ksn - 18 / spacing[2])
        ku = kk[upper_rng][np.argmax(prot[upper_rng])]
        lower_rng = (z <= (ku - nk) * spacing[2] - 6) & (z >= (ku - nk) * spacing[2] - 25)
        kl = kk[lower_rng][np.argmax(prot[lower_rng])] if lower_rng.any() else max(int(ku - 12 / spacing[2]), 0)
        between = kk[(kk > kl) & (kk < ku)]
        ks = between[np.argmin(prot[between])] if len(between) else (kl + ku) // 2
        return np.array([ni, profile[ks] / spacing[1] + 5.0 / spacing[1], ks], float)

    def ear(self, nose, eye_k: float, side: float) -> tuple[np.ndarray | None, str]:
        spacing, shape, head = self.spacing, self.shape, self.head
        nj, nk = nose[1], nose[2]
        j0, j1 = int(nj + 75 / spacing[1]), int(nj + 150 / spacing[1])
        k0, k1 = int(nk - 25 / spacing[2]), int(eye_k + 10 / spacing[2])
        lat = lateral_extent(head, side, int(self.mid_i))
        opened = ndi.grey_opening(lat, size=tuple(max(3, int(PROPOSAL_OUTLINE_OPENING_MM / s)) for s in spacing[1:]))
        window = np.zeros_like(lat, bool)
        window[max(j0, 0):min(j1, shape[1]), max(k0, 0):min(k1, shape[2])] = True
        proud = ((lat - opened) * spacing[0] > 3.0) & window & (lat >= 0)
        if k0 < 0 and not proud.any() or j1 > shape[1] + 30 / spacing[1]:
            return None, ""
        if not proud.any():  # flattened pinna: the lateral-most point of the window
            score = np.where(window & (lat >= 0), lat, -np.inf)
            j, k = np.unravel_index(np.argmax(score), score.shape)
            i = lat[j, k] if side > 0 else shape[0] - 1 - lat[j, k]
            return np.array([i - side * 3.0 / spacing[0], j, k], float), "no pinna protrusion, lateral-most point"
        pieces, count = ndi.label(proud)
        sizes = ndi.sum(proud, pieces, range(1, count + 1))
        piece = pieces == (1 + int(np.argmax(sizes)))
        # the pinna is the most proud part of that piece (cheek and scalp bulges are shallower)
        excess = np.where(piece, lat - opened, 0.0)
        piece &= excess >= np.percentile(excess[piece], 70)
        points = []
        for j, k in zip(*np.nonzero(piece)):  # pinna voxels: head voxels beyond the opened outline
            for step in np.arange(opened[j, k], lat[j, k] + 1):
                i = step if side > 0 else shape[0] - 1 - step
                if head[int(i), j, k]:
                    points.append((i, j, k))
        points = np.array(points, float)
        return points.mean(axis=0), f"pinna {len(points) * np.prod(spacing) / 1000:.1f} cm3 proud"
