"""The frontal guard added to a predicted brain: it spares the features and covers the deep forehead."""
from __future__ import annotations

import numpy as np
import pytest

from DeFacerLib.deface import head_mask, skin_depth_mm
from DeFacerLib.deface.guard import (
    ABOVE_EYE_CENTRES_MM,
    EYE_CLEARANCE_MM,
    FRONTAL_REACH_BEHIND_EYES_MM,
    MEDIAL_BEHIND_EYES_MM,
    MEDIAL_HALF_WIDTH_MM,
    SKIN_LAYER_MM,
    frontal_guard,
)
from DeFacerLib.features import LABEL_VALUES
from DeFacerLib.phantom import make_phantom


def medial_region(volume, eye_centre) -> np.ndarray:
    """The medial strip's world box (any height), on the grid."""
    world = volume.index_to_world(np.argwhere(np.ones(volume.shape3, bool))).reshape(volume.shape3 + (3,))
    return ((np.abs(world[..., 0] - eye_centre[0]) <= MEDIAL_HALF_WIDTH_MM + 1e-3)
            & (world[..., 1] >= eye_centre[1] + MEDIAL_BEHIND_EYES_MM - 1e-3))


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "PSR", "ILA"])
def test_guard_spares_features_and_covers_the_deep_forehead(orientation):
    volume, labels = make_phantom(orientation=orientation)
    head = head_mask(volume)
    eyes = labels == LABEL_VALUES["eyes"]
    guard = frontal_guard(volume, head, eyes)
    for name in ("nose", "mouth"):
        assert not guard[labels == LABEL_VALUES[name]].any(), name
    assert guard[eyes].mean() < 0.10, guard[eyes].mean()
    # every guarded voxel is either deeper than the skin layer and above the eye centres, or
    # in the medial strip between the orbits: at or above the eye level, behind the eyes
    depth = skin_depth_mm(head, volume.spacing_mm)
    world = volume.index_to_world(np.argwhere(guard))
    eyes_mm = volume.index_to_world(np.argwhere(eyes))
    eye_centre = eyes_mm.mean(axis=0)
    forehead = ((depth[guard] > SKIN_LAYER_MM) & (world[:, 2] > eye_centre[2] + ABOVE_EYE_CENTRES_MM)
                & (world[:, 1] <= eye_centre[1] + FRONTAL_REACH_BEHIND_EYES_MM + 1e-3))
    medial = ((np.abs(world[:, 0] - eye_centre[0]) <= MEDIAL_HALF_WIDTH_MM + 1e-3)
              & (world[:, 1] >= eye_centre[1] + MEDIAL_BEHIND_EYES_MM - 1e-3) & (world[:, 2] >= eye_centre[2] - 1e-3))
    assert np.all(forehead | medial)
    assert medial[~forehead].sum() > 1000  # the strip adds voxels below the forehead guard
    # the brain above eye level is covered as far back as the guard reaches (the ears lie behind it)
    brain = labels == LABEL_VALUES["brain"]
    brain_mm = np.zeros(volume.shape3 + (3,), np.float32)
    brain_mm[tuple(np.argwhere(brain).T)] = volume.index_to_world(np.argwhere(brain))
    high_brain = brain & (brain_mm[..., 2] > eye_centre[2] + ABOVE_EYE_CENTRES_MM) & (depth > SKIN_LAYER_MM)
    frontal = high_brain & (brain_mm[..., 1] <= eye_centre[1] + FRONTAL_REACH_BEHIND_EYES_MM)
    assert frontal.sum() > 10_000 and guard[frontal].all()
    assert not guard[high_brain & ~frontal & ~medial_region(volume, eye_centre)].any()


def test_guard_from_nose_when_no_eyes_and_nothing_without_either():
    volume, labels = make_phantom()
    head = head_mask(volume)
    nose = labels == LABEL_VALUES["nose"]
    from_nose = frontal_guard(volume, head, None, nose)
    eyes = labels == LABEL_VALUES["eyes"]
    # the forehead part (the nose alone gives no medial strip: that needs both eyes)
    from_eyes = frontal_guard(volume, head, eyes) & ~medial_region(volume, volume.index_to_world(np.argwhere(eyes)).mean(axis=0))
    overlap = (from_nose & from_eyes).sum() / max(from_eyes.sum(), 1)
    assert overlap > 0.8, overlap
    assert not frontal_guard(volume, head, None, None).any()


def test_no_medial_strip_with_one_eye():
    volume, labels = make_phantom()
    head = head_mask(volume)
    eyes = labels == LABEL_VALUES["eyes"]
    world_x = np.zeros(volume.shape3, np.float32)
    world_x[eyes] = volume.index_to_world(np.argwhere(eyes))[:, 0]
    one_eye = eyes & (world_x > volume.index_to_world(np.argwhere(eyes))[:, 0].mean())
    guard = frontal_guard(volume, head, one_eye)
    z = volume.index_to_world(np.argwhere(guard))[:, 2]
    assert z.min() > volume.index_to_world(np.argwhere(one_eye))[:, 2].mean() + ABOVE_EYE_CENTRES_MM


def test_forehead_guard_keeps_clear_of_the_eyes():
    """Grown by the removal's protect margin, the forehead guard must stop at the eye region:
    no forehead-guard voxel lies within EYE_CLEARANCE_MM of it (the medial strip aside)."""
    from scipy import ndimage as ndi

    volume, labels = make_phantom()
    head = head_mask(volume)
    eyes = labels == LABEL_VALUES["eyes"]
    guard = frontal_guard(volume, head, eyes)
    world = volume.index_to_world(np.argwhere(guard))
    centre = volume.index_to_world(np.argwhere(eyes)).mean(axis=0)
    medial = (np.abs(world[:, 0] - centre[0]) <= MEDIAL_HALF_WIDTH_MM + 1e-3) & (world[:, 1] >= centre[1] + 9.999)
    distance = ndi.distance_transform_edt(~eyes, sampling=volume.spacing_mm)[guard]
    assert distance[~medial].min() > EYE_CLEARANCE_MM
    # without the clearance the forehead guard would reach that close: the test can fail
    without = ndi.distance_transform_edt(~eyes, sampling=volume.spacing_mm)
    above = volume.index_to_world(np.argwhere(head & (without <= EYE_CLEARANCE_MM)))[:, 2]
    assert (above > centre[2] + ABOVE_EYE_CENTRES_MM).any()


def test_forehead_guard_keeps_clear_of_the_eye_tissue_around_the_landmarks():
    """With the eyes' landmarks, the forehead guard also stays EYE_CLEARANCE_MM clear of the
    eye tissue's ellipsoid around each (face.labels.SHAPES), which reaches higher than the
    network's eye region; elsewhere it is the guard it was. Measured on the phantom: the
    ellipsoids free voxels the guard took before."""
    from scipy import ndimage as ndi

    from DeFacerLib.face.labels import landmark_ellipsoid

    volume, labels = make_phantom()
    head = head_mask(volume)
    eyes = labels == LABEL_VALUES["eyes"]
    components, count = ndi.label(eyes)
    assert count == 2
    points = {name: volume.index_to_world(np.argwhere(components == k).mean(axis=0)[None])[0]
              for name, k in (("eye_left", 1), ("eye_right", 2))}
    before = frontal_guard(volume, head, eyes)
    after = frontal_guard(volume, head, eyes, eye_points_mm=points)
    tissue = landmark_ellipsoid(volume, "eye_left", points["eye_left"]) | landmark_ellipsoid(volume, "eye_right", points["eye_right"])
    near = ndi.distance_transform_edt(~(tissue | eyes), sampling=volume.spacing_mm) <= EYE_CLEARANCE_MM
    assert not (after & ~before).any()  # it only ever guards less
    freed = before & ~after
    assert freed.sum() > 100 and near[freed].all()  # and only near the eye tissue


def test_eye_level_follows_a_rolled_head_when_the_eye_points_are_known():
    """The same voxels with the header rolled 25 degrees: with both eye landmarks the guard's
    height axis is square to the eye-to-eye line, so its forehead part is the same voxels as the
    upright head's (with the world's superior axis, the eye level is ~20 mm off at the orbits' rims)."""
    from scipy import ndimage as ndi

    from DeFacerLib.volume import Volume

    volume, labels = make_phantom()
    head = head_mask(volume)
    eyes = labels == LABEL_VALUES["eyes"]
    components, count = ndi.label(eyes)
    assert count == 2
    centres = [np.argwhere(components == c).mean(axis=0) for c in (1, 2)]
    t = np.deg2rad(25.0)
    roll = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    rolled = Volume(volume.array, volume.spacing_mm, roll @ volume.origin_mm, roll @ volume.direction,
                    modality=volume.modality)

    def points(v):
        world = v.index_to_world(np.array(centres))
        left = int(np.argmax(world[:, 0]))  # LPS: +x is the patient's left
        return {"eye_left": world[left], "eye_right": world[1 - left]}

    # the medial strip is laid out in world axes on purpose (it is narrow, at the midline): left out
    not_medial = ~medial_region(volume, volume.index_to_world(np.argwhere(eyes)).mean(axis=0))
    not_medial &= ~medial_region(rolled, rolled.index_to_world(np.argwhere(eyes)).mean(axis=0))
    upright = frontal_guard(volume, head, eyes, eye_points_mm=points(volume)) & not_medial
    followed = frontal_guard(rolled, head, eyes, eye_points_mm=points(rolled)) & not_medial
    world_up = frontal_guard(rolled, head, eyes) & not_medial

    def agreement(a, b):
        return (a & b).sum() / (a | b).sum()

    assert upright.sum() > 10_000
    assert agreement(upright, followed) > 0.97, agreement(upright, followed)
    assert agreement(upright, world_up) < 0.85, agreement(upright, world_up)
