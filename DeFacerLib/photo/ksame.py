"""k-Same surrogate faces (Newton, Sweeney & Malin 2005): every face becomes an average of k.

The faces anonymized together (a folder of photos) are split into groups of at least k faces
that look alike to a recogniser (SFace); each face is replaced by its group's average face. A
surrogate is shared by >= k originals, so a recogniser that matches it to one of them is right
at most 1/k of the time, however strong it is. Averaging needs faces in register: each face is
similarity-aligned on its 5 points into a canonical canvas, then warped triangle by triangle so
that its landmarks land on one shape (5 points: a fixed template; dlib's 68: the group's mean).
The average is warped back onto each original's place over a fixed head region of the canvas,
with a feathered edge (or Poisson blending, which carries each photo's skin tone into the face).

What it needs: at least k faces in the set (the face itself and k - 1 others; k >= 2). There is
no built-in gallery, because a gallery of real people would itself be identifiable data; with
fewer faces k-Same refuses (InputError) and another method must be chosen.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from DeFacerLib.errors import InputError, check_choice
from DeFacerLib.photo.detect import Face
from DeFacerLib.photo.identity import SFACE_COSINE_MATCH, distance, same_person, sface_descriptor
from DeFacerLib.photo.landmarks import JAW, LEFT_BROW, RIGHT_BROW, five_points
from DeFacerLib.photo.obscure import obscure_face

DEFAULT_K = 3
CANVAS_PX = 320  # room for the whole head around a template face with eyes 40 px apart
KSAME_REGIONS = ("head", "face")
MIN_FACE_PX = 32  # smaller faces carry too little to average: they are filled (the default method) instead
# ArcFace's 112 px 5-point template, scaled and centred in the canvas (room for forehead and jaw)
_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])
TEMPLATE = (_TEMPLATE_112 - 56.0) * 1.15 + np.array([CANVAS_PX / 2, CANVAS_PX / 2 + 8])


def _superellipse(centre, half_width, half_height, power: float = 4.0, points: int = 72) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    return centre + np.c_[np.sign(c) * np.abs(c) ** (2 / power) * half_width, np.sign(s) * np.abs(s) ** (2 / power) * half_height]


# The head region in canvas pixels, the same for every face: it holds the whole crop a recogniser
# aligns (hairline to chin, ear to ear, with margin), so every member of a group shows a
# recogniser exactly the same pixels (a per-face outline would leave each photo's own hair and
# background in the crop's corners, and recognisers use them: measured).
_EYE_DISTANCE = float(TEMPLATE[1, 0] - TEMPLATE[0, 0])
HEAD_OUTLINE = _superellipse(TEMPLATE[:2].mean(axis=0) + [0.0, 0.3 * _EYE_DISTANCE], 2.4 * _EYE_DISTANCE, 2.8 * _EYE_DISTANCE)


@dataclass
class KSameResult:
    images: list[np.ndarray]  # anonymized copies, one per input image
    groups: list[list[tuple[int, int]]]  # (image index, face index) of the faces averaged together
    k: int
    # faces filled instead, their group's average still being one of them (REVEAL_MARGIN)
    filled: list[tuple[int, int]] = field(default_factory=list)


def _similarity(points: np.ndarray) -> np.ndarray:
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), TEMPLATE.astype(np.float32), method=cv2.LMEDS)
    if matrix is None:
        raise InputError("k-Same: a face's landmarks are degenerate; cannot align it")
    return matrix


def _transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


_BORDER = np.array([[0, 0], [CANVAS_PX / 2, 0], [CANVAS_PX - 1, 0], [CANVAS_PX - 1, CANVAS_PX / 2],
                    [CANVAS_PX - 1, CANVAS_PX - 1], [CANVAS_PX / 2, CANVAS_PX - 1], [0, CANVAS_PX - 1], [0, CANVAS_PX / 2]],
                   dtype=float)


def _warp_piecewise(image: np.ndarray, source: np.ndarray, target: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Warp a canvas image so that points ``source`` land on ``target`` (affine per triangle)."""
    import cv2

    out = np.zeros_like(image)
    for tri in triangles:
        src, dst = source[tri].astype(np.float32), target[tri].astype(np.float32)
        x, y, w, h = cv2.boundingRect(dst)
        if w <= 0 or h <= 0:
            continue
        matrix = cv2.getAffineTransform(src, dst - np.array([x, y], dtype=np.float32))
        patch = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.fillConvexPoly(mask, np.round(dst - [x, y]).astype(np.int32), 1)
        x1, y1 = min(x + w, CANVAS_PX), min(y + h, CANVAS_PX)
        x0, y0 = max(x, 0), max(y, 0)
        sub = mask[y0 - y:y1 - y, x0 - x:x1 - x].astype(bool)
        out[y0:y1, x0:x1][sub] = patch[y0 - y:y1 - y, x0 - x:x1 - x][sub]
    return out


def _group_average(members: list[dict]) -> tuple[np.ndarray, np.ndarray | None]:
    """The group's surrogate in the canvas, and its 68-point mean shape (None with 5 points).

    Every member is warped triangle by triangle so that its landmarks land on one target shape,
    then the warped faces are averaged: eyes, nose and mouth coincide, so the average is a sharp
    face, and a recogniser that finds landmarks on the pixels itself (dlib) finds them alike on
    every member's copy (with similarity alignment only it found them differently and named one
    group's members apart: rank-1 0.43, dlib, adaptive). With 68 points the target is the group's
    mean shape (its outline bounds region "face"); with 5 points it is the fixed TEMPLATE, so no
    member's face proportions survive in the surrogate's geometry.

    Every member enters at the detail of the group's smallest face (_at_detail): a 331 px face
    averaged with two of 35 px gave all of the average's fine detail alone, and the surrogate
    was its own person again (SFace 0.74 to its original, rank-1 among the set's 7 faces;
    Tom Cruise's 425 px face with two of 56 and 37 px: rank-1 among 70).
    """
    from scipy.spatial import Delaunay

    use68 = all(m["p68"] is not None for m in members)
    key = "p68" if use68 else "p5"
    shape = np.mean([m[key] for m in members], axis=0) if use68 else TEMPLATE
    target = np.vstack([shape, _BORDER])
    triangles = Delaunay(target).simplices
    coarsest = max(_canvas_px_per_pixel(m["matrix"]) for m in members)
    warped = [_warp_piecewise(_at_detail(m["aligned"], coarsest), np.vstack([m[key], _BORDER]), target, triangles)
              for m in members]
    surrogate = np.round(np.mean(np.asarray(warped, dtype=np.float32), axis=0)).astype(np.uint8)
    return surrogate, (shape if use68 else None)


def _canvas_px_per_pixel(matrix: np.ndarray) -> float:
    """How many canvas pixels one pixel of the photo spans (the alignment's scale)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, float)[:, :2]))))


def _at_detail(aligned: np.ndarray, canvas_px_per_pixel: float) -> np.ndarray:
    """``aligned`` with no finer detail than a photo pixel spanning ``canvas_px_per_pixel``
    canvas pixels carries: resampled down to that pixel size and back up."""
    import cv2

    if canvas_px_per_pixel <= 1.0:
        return aligned
    coarse_px = max(1, int(round(CANVAS_PX / canvas_px_per_pixel)))
    coarse = cv2.resize(aligned, (coarse_px, coarse_px), interpolation=cv2.INTER_AREA)
    return cv2.resize(coarse, (CANVAS_PX, CANVAS_PX), interpolation=cv2.INTER_LINEAR)


def _face_outline(points68: np.ndarray | None, points5: np.ndarray) -> np.ndarray:
    """Canvas polygon of the face to replace: jaw and a forehead above the brows (or an ellipse)."""
    if points68 is not None:
        brows = points68[RIGHT_BROW + LEFT_BROW]
        eye_y, mouth_y = points5[:2, 1].mean(), points5[3:, 1].mean()
        forehead = brows - np.array([0.0, 0.8 * (mouth_y - eye_y)])
        return np.vstack([points68[JAW], forehead])
    centre = np.array([CANVAS_PX / 2, TEMPLATE[:, 1].mean() - 2])
    t = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    eye_distance = TEMPLATE[1, 0] - TEMPLATE[0, 0]
    return centre + np.c_[np.cos(t) * 1.3 * eye_distance, np.sin(t) * 1.9 * eye_distance]


def _groups(descriptors: list[np.ndarray], k: int) -> list[list[int]]:
    """k-Same grouping: repeatedly take the first remaining face and its k-1 nearest remaining ones.

    A candidate the recogniser calls the same person as a member already in the group is passed
    over while others remain (several photos of one patient must not fill a group, or the
    surrogate would still be that patient). The fewer than k faces left over join the smallest
    group that holds nobody the recogniser takes for the same person, so every group has at
    least k members, all different people. When that is impossible (fewer than k people among
    the faces left) k-Same refuses with InputError: a group of one person's photos averages to
    that person.
    """
    remaining = list(range(len(descriptors)))
    groups: list[list[int]] = []
    while len(remaining) >= k:
        # the face with the most look-alikes left goes first: its person needs the most partners, and
        # another seed could take the only ones it has (a valid split was refused)
        seed = max(remaining, key=lambda i: (sum(same_person(descriptors[i], descriptors[j]) for j in remaining), -i))
        ranked = sorted((j for j in remaining if j != seed), key=lambda j: (distance(descriptors[seed], descriptors[j]), j))
        group = [seed]
        for j in ranked:
            if len(group) == k:
                break
            if not any(same_person(descriptors[j], descriptors[m]) for m in group):
                group.append(j)
        if len(group) < k:  # the faces left are fewer than k people: a surrogate would show one of them
            raise InputError(
                f"k-Same with k={k}: the faces cannot be split into groups of {k} different people (a recogniser "
                f"takes several faces for the same person: photos of one patient are no gallery); add photos of "
                f"other people or choose another method (fill)")
        groups.append(group)
        remaining = [j for j in remaining if j not in group]
    for j in remaining:  # leftovers join a group holding nobody the recogniser takes for the same person
        def cost(group):
            clash = any(same_person(descriptors[j], descriptors[m]) for m in group)
            return (clash, len(group), min(distance(descriptors[j], descriptors[m]) for m in group))

        best = min(groups, key=cost)
        if cost(best)[0]:  # every group holds someone the recogniser takes for this face's person
            raise InputError(
                f"k-Same with k={k}: a face is the same person as someone in every group; add photos of other "
                f"people or choose another method (fill)")
        best.append(j)
    return groups


def _seamless(image: np.ndarray, surrogate: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson-blend ``surrogate`` into ``image`` where ``mask``; padded so masks may touch the border."""
    import cv2

    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return image
    pad = 4
    big = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    src = cv2.copyMakeBorder(surrogate, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    big_mask = np.zeros(big.shape[:2], dtype=np.uint8)
    big_mask[pad:-pad, pad:-pad] = mask.astype(np.uint8) * 255
    big_mask[:pad + 1, :] = big_mask[-pad - 1:, :] = 0
    big_mask[:, :pad + 1] = big_mask[:, -pad - 1:] = 0
    ys, xs = np.nonzero(big_mask)
    if len(xs) == 0:
        return image
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    centre = (int((x0 + x1 + 1) // 2), int((y0 + y1 + 1) // 2))
    try:
        blended = cv2.seamlessClone(np.ascontiguousarray(src), np.ascontiguousarray(big), big_mask, centre, cv2.NORMAL_CLONE)
    except cv2.error:  # a degenerate mask: plain paste is still anonymous
        blended = big.copy()
        blended[big_mask > 0] = src[big_mask > 0]
    out = blended[pad:-pad, pad:-pad]
    # Poisson blending may not reach exactly into the mask's rim: the surrogate must, for safety
    return out


BLENDS = ("feather", "poisson", "none")


def _feather(image: np.ndarray, surrogate: np.ndarray, mask: np.ndarray, width_px: float) -> np.ndarray:
    """Paste ``surrogate`` where ``mask``, fading out over ``width_px`` just inside the mask's edge.

    Inside, the pixels are the surrogate's own, identical for every member of a group (Poisson
    blending would carry each photo's skin tone and light into the face, and recognisers use them).
    """
    import cv2

    width = max(1, int(round(width_px)))
    inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1)))
    alpha = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), width / 2.0) * mask
    alpha = np.maximum(alpha, inner)[..., None]
    return np.round(alpha * surrogate + (1 - alpha) * image).astype(np.uint8)


def k_same(images: list[np.ndarray], faces: list[list[Face]], k: int = DEFAULT_K, blend: str = "feather",
           region: str = "head") -> KSameResult:
    """Replace every face of every image by the average of its k-Same group (see module doc).

    ``faces[i]`` are the faces of ``images[i]`` (uint8 RGB), with landmarks (landmarks.add_landmarks).
    ``region``: "head" replaces hair, ears and outline too (recognisers use them: measured in
    docs/benchmarks.md, photo section); "face" replaces jaw line to forehead only. ``blend``: "feather"
    (default: the surrogate's own pixels inside, a soft edge), "poisson" (cv2.seamlessClone:
    smoother, but it carries each photo's skin tone into the face) or "none".
    """
    import cv2

    check_choice("blend", blend, BLENDS)
    check_choice("k-Same region", region, KSAME_REGIONS)
    if k < 2:
        raise InputError(f"k-Same needs k >= 2 (got k={k}); k=1 would leave every face as it is")
    index = [(i, j) for i, image_faces in enumerate(faces) for j in range(len(image_faces))
             if image_faces[j].size_px >= MIN_FACE_PX]
    small = [(i, j) for i, image_faces in enumerate(faces) for j in range(len(image_faces))
             if image_faces[j].size_px < MIN_FACE_PX]
    if len(index) < k:
        raise InputError(
            f"k-Same with k={k} needs at least {k} faces anonymized together (the face and {k - 1} others); "
            f"found {len(index)} of at least {MIN_FACE_PX} px: add photos to the set or choose another method (fill)"
        )
    items = []
    for i, j in index:
        face, image = faces[i][j], images[i]
        matrix = _similarity(five_points(face))
        aligned = cv2.warpAffine(image, matrix, (CANVAS_PX, CANVAS_PX), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        p68 = None if face.landmarks68 is None else _transform(face.landmarks68, matrix)
        items.append(dict(matrix=matrix, aligned=aligned, p68=p68, p5=_transform(five_points(face), matrix),
                          descriptor=sface_descriptor(image, face)))
    descriptors = [item["descriptor"] for item in items]
    out = [np.array(image, dtype=np.uint8, copy=True) for image in images]
    for i, j in small:
        obscure_face(out[i], faces[i][j], "fill", "head")

    def surrogate_of(group):
        members = [items[m] for m in group]
        surrogate, mean_shape = _group_average(members)
        return surrogate, _face_outline(mean_shape, np.mean([m["p5"] for m in members], axis=0))

    def place(image, member_index, surrogate, outline_mean):
        member, (i, j) = items[member_index], index[member_index]
        outlines = [HEAD_OUTLINE] if region == "head" else [outline_mean, _face_outline(member["p68"], member["p5"])]
        return _placed(image, surrogate, member["matrix"], outlines, blend, faces[i][j].size_px)

    def reveals(group, surrogate, outline_mean):
        where = [faces[index[m][0]][index[m][1]] for m in group]
        originals = [descriptors[m] for m in group]
        baselines = [float(descriptors[m] @ _filled_descriptor(images[index[m][0]], face)) for m, face in zip(group, where)]
        return any(_reveals_one(sface_descriptor(place(images[index[m][0]], m, surrogate, outline_mean), face),
                                originals, baselines) for m, face in zip(group, where))

    # A group whose surrogate is still one of its members joins its nearest group (more faces,
    # more ambiguity: the surrogate of six); one that still reveals a member is filled instead.
    queue, kept, filled_groups = list(_groups(descriptors, k)), [], []
    while queue:
        group = queue.pop(0)
        surrogate, outline_mean = surrogate_of(group)
        if not reveals(group, surrogate, outline_mean):
            kept.append((group, surrogate, outline_mean))
            continue
        partners = [] if len(group) >= 2 * k else [  # joined once already: filled
            other for other in queue + [g for g, _, _ in kept]
            if not any(same_person(descriptors[a], descriptors[b]) for a in group for b in other)]
        if not partners:
            filled_groups.append(group)
            continue
        nearest = min(partners, key=lambda other: np.mean([distance(descriptors[a], descriptors[b])
                                                            for a in group for b in other]))
        queue = [g for g in queue if g is not nearest]
        kept = [entry for entry in kept if entry[0] is not nearest]
        queue.insert(0, group + nearest)
    filled = []
    for group in filled_groups:  # its surrogate is still one of them: the safe default instead
        for m in group:
            i, j = index[m]
            obscure_face(out[i], faces[i][j], "fill", "head")
            filled.append((i, j))
    for group, surrogate, outline_mean in kept:
        for m in group:
            out[index[m][0]] = place(out[index[m][0]], m, surrogate, outline_mean)
    groups = [g for g, _, _ in kept] + filled_groups
    return KSameResult(images=out, groups=[[index[m] for m in g] for g in groups], k=k, filled=filled)


# A group's surrogate reveals a member when the recogniser matches it to that member's original
# (SFACE_COSINE_MATCH) by this much more than to any other member, and than a plain fill at the
# member's place matches it (SFace puts a grey crop within its threshold of some people: 0.40 for
# Obama; docs/photo.md): a 331 px face averaged with two of 35 px (0.63 against 0.31 and 0.34), a
# face averaged with two dog faces the detector took for people (0.69 against 0.12 and 0.19). In
# the balanced groups of the dlib_faces set and of known_people the best member leads by 0.18 at
# most where it is a match at all (scripts/evaluate_ksame_groups.py).
REVEAL_MARGIN = 0.2


def _reveals_one(surrogate_descriptor: np.ndarray, originals: list[np.ndarray], baselines: list[float]) -> bool:
    """``baselines``: each member's similarity to a plain fill in its place."""
    similarities = [float(surrogate_descriptor @ original) for original in originals]
    best = int(np.argmax(similarities))
    runner_up = max((s for i, s in enumerate(similarities) if i != best), default=-1.0)
    return similarities[best] >= SFACE_COSINE_MATCH and \
        similarities[best] - max(runner_up, baselines[best]) >= REVEAL_MARGIN


def _filled_descriptor(image: np.ndarray, face: Face) -> np.ndarray:
    """SFace's descriptor of ``face``'s place with the default fill over it."""
    filled = np.array(image, dtype=np.uint8, copy=True)
    obscure_face(filled, face, "fill", "head")
    return sface_descriptor(filled, face)


def _placed(image: np.ndarray, surrogate: np.ndarray, matrix: np.ndarray, outlines: list[np.ndarray], blend: str,
            size_px: float) -> np.ndarray:
    """A copy of ``image`` with the canvas ``surrogate`` warped back through ``matrix`` inside
    ``outlines`` (canvas points), blended as asked."""
    import cv2

    h, w = image.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    placed = cv2.warpAffine(surrogate, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = np.zeros((h, w), dtype=np.uint8)
    for outline in outlines:
        hull = cv2.convexHull(_transform(outline, inverse).astype(np.float32)).reshape(-1, 2)
        cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1)
    mask = mask.astype(bool)
    if blend == "poisson":
        return _seamless(image, placed, mask)
    if blend == "feather":
        return _feather(image, placed, mask, 0.08 * size_px)
    return np.where(mask[..., None], placed, image)
