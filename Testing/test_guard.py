"""The frontal guard added to a predicted brain: it spares the features and covers the deep forehead."""
from __future__ import annotations

import numpy as np
import pytest

from DeFacerLib.deface import head_mask, skin_depth_mm
from DeFacerLib.deface.guard import ABOVE_EYE_CENTRES_MM, SKIN_LAYER_MM, frontal_guard
from DeFacerLib.features import LABEL_VALUES
from DeFacerLib.phantom import make_phantom


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "PSR", "ILA"])
def test_guard_spares_features_and_covers_the_deep_forehead(orientation):
    volume, labels = make_phantom(orientation=orientation)
    head = head_mask(volume)
    eyes = labels == LABEL_VALUES["eyes"]
    guard = frontal_guard(volume, head, eyes)
    for name in ("nose", "mouth"):
        assert not guard[labels == LABEL_VALUES[name]].any(), name
    assert guard[eyes].mean() < 0.10, guard[eyes].mean()
    # every guarded voxel is deeper than the skin layer and above the eye centres
    depth = skin_depth_mm(head, volume.spacing_mm)
    assert depth[guard].min() > SKIN_LAYER_MM
    z = volume.index_to_world(np.argwhere(guard))[:, 2]
    eye_z = volume.index_to_world(np.argwhere(eyes))[:, 2].mean()
    assert z.min() > eye_z + ABOVE_EYE_CENTRES_MM
    # the brain above eye level is covered
    brain = labels == LABEL_VALUES["brain"]
    brain_z = np.zeros(volume.shape3, np.float32)
    brain_z[tuple(np.argwhere(brain).T)] = volume.index_to_world(np.argwhere(brain))[:, 2]
    high_brain = brain & (brain_z > eye_z + ABOVE_EYE_CENTRES_MM) & (depth > SKIN_LAYER_MM)
    assert guard[high_brain].all()


def test_guard_from_nose_when_no_eyes_and_nothing_without_either():
    volume, labels = make_phantom()
    head = head_mask(volume)
    nose = labels == LABEL_VALUES["nose"]
    from_nose = frontal_guard(volume, head, None, nose)
    from_eyes = frontal_guard(volume, head, labels == LABEL_VALUES["eyes"])
    overlap = (from_nose & from_eyes).sum() / max(from_eyes.sum(), 1)
    assert overlap > 0.8, overlap
    assert not frontal_guard(volume, head, None, None).any()
