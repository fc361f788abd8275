"""Two eyes the U-Net joined count as two (deface.pieces), on the model's own eyes of a real head;
one eye, or an eye with a scrap beside it, stays one piece."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from DeFacerLib.deface.pieces import feature_pieces
from DeFacerLib.deface.pipeline import find_features
from DeFacerLib.io import read_volume


@pytest.fixture(scope="module")
def eyes(data_dir):
    volume = read_volume(next((data_dir / "heads" / "ixi" / "t1").glob("IXI546*_T1.nii.gz")))
    mask = find_features(volume).masks["eyes"]
    pieces, count = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    assert count == 2
    return volume.spacing_mm, pieces


def _centres_mm(pieces, spacing_mm) -> np.ndarray:
    sizes = np.bincount(pieces.ravel())[1:]
    order = np.argsort(-sizes)[:2] + 1
    return np.array(ndi.center_of_mass(pieces > 0, pieces, order)) * spacing_mm


def test_two_eyes_joined_by_a_bridge_are_split_where_they_were(eyes):
    spacing_mm, pieces = eyes
    truth = _centres_mm(pieces, spacing_mm)
    joined = pieces > 0
    ends = truth / spacing_mm
    for t in np.linspace(0, 1, 200):  # a 3-voxel bar from one eye's centre to the other's
        i, j, k = np.rint(ends[0] + t * (ends[1] - ends[0])).astype(int)
        joined[i - 1:i + 2, j - 1:j + 2, k - 1:k + 2] = True
    assert ndi.label(joined, structure=np.ones((3, 3, 3), bool))[1] == 1
    split, count = feature_pieces(joined, spacing_mm, "eyes")
    assert count == 2
    found = _centres_mm(split, spacing_mm)
    found = found[np.argsort(found[:, 0])]
    truth = truth[np.argsort(truth[:, 0])]
    assert np.abs(found - truth).max() < 3.0, (found, truth)  # the bar's half goes with each eye
    assert feature_pieces(joined, spacing_mm, "ears")[1] == 1  # only the eyes are split


def test_one_eye_and_one_eye_with_a_scrap_stay_whole(eyes):
    spacing_mm, pieces = eyes
    one = pieces == 1
    assert feature_pieces(one, spacing_mm, "eyes")[1] == 1
    shift = int(round(20 / spacing_mm[0]))  # a copy 20 mm aside, touching: not two eyes' distance
    doubled = one | np.roll(one, shift, axis=0)
    assert ndi.label(doubled, structure=np.ones((3, 3, 3), bool))[1] == 1
    assert feature_pieces(doubled, spacing_mm, "eyes")[1] == 1
