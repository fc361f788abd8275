"""The face shield (``--shield``, removal.SHIELD_*) on a real held-out head: a featureless block
over the front, made only of what was air or cut, never of the kept head or the brain."""
from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from DeFacerLib.deface import head_mask
from DeFacerLib.deface.pipeline import DefaceParameters, deface_volume, find_features
from DeFacerLib.deface.removal import SHIELD_AHEAD_OF_EYES_MM
from DeFacerLib.io import read_volume

HEAD = "heads/ixi/t1/IXI206-HH-1650_T1.nii.gz"  # held out from training
BRAIN = "heads/ixi/brain_labels/IXI206-HH-1650_T1_DLMUSE.nii.gz"


@pytest.mark.slow
def test_shield_fills_the_front_to_a_plane_and_keeps_head_and_brain(data_dir, tmp_path):
    from DeFacerLib.qa import face_direction, render_views
    from DeFacerLib.qa.recognize import FACE_PRESENT_SCORE, best_face, detect_faces_dlib

    volume = read_volume(data_dir / HEAD)
    head = head_mask(volume)
    found = find_features(volume, head=head)
    plain = deface_volume(volume, found.masks, guard=found.guard, head=head)
    shielded = deface_volume(volume, found.masks, guard=found.guard, head=head,
                             parameters=DefaceParameters(shield=True))
    assert plain.report["shield_voxels"] is None
    filled = shielded.report["shield_voxels"]
    assert filled > 100_000  # a 180 x 240 x 75 mm block at 2 mm, less the head in it

    before, after = np.asarray(volume.array), np.asarray(shielded.volume.array)
    changed = after != before
    brain = np.asanyarray(nib.load(str(data_dir / BRAIN)).dataobj) > 0
    assert not (changed & brain).any()
    assert not (changed & head & ~shielded.removed).any()  # the shield adds; it never takes what the cut kept
    # only the shield tells the two outputs apart outside the cut, and only by tissue added
    added = (np.asarray(plain.volume.array) != after) & ~shielded.removed
    assert added.sum() > 0.5 * filled and np.all(after[added] == shielded.report["seal_value_stored"])

    # in front of the eyes: tissue up to the plane, air beyond it (LPS: anterior is -y)
    eyes = (np.asarray(found.landmarks["eye_left"]["mm"]) + np.asarray(found.landmarks["eye_right"]["mm"])) / 2
    def value_ahead(mm):
        ijk = np.round(volume.world_to_index((eyes + [0.0, -mm, 0.0])[None, :])[0]).astype(int)
        return after[tuple(ijk)]
    assert value_ahead(SHIELD_AHEAD_OF_EYES_MM - 4) == shielded.report["seal_value_stored"]
    assert value_ahead(SHIELD_AHEAD_OF_EYES_MM + 4) == shielded.report["fill_value_stored"]

    face = face_direction(volume)
    render = render_views(shielded.volume, views=("front",), size=(400, 400), face=face)["front"]
    assert detect_faces_dlib(render) == []
    assert getattr(best_face(render), "score", 0.0) < FACE_PRESENT_SCORE

    no_span = deface_volume(volume, found.masks, guard=found.guard, head=head,
                            parameters=DefaceParameters(shield=True, whole_face=False))
    assert no_span.report["shield_voxels"] is None  # the shield stands on the whole face's frame


@pytest.mark.slow
def test_shield_from_the_command_line(data_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(data_dir / HEAD),
                             str(tmp_path / "out.nii.gz"), "--shield", "--json"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["report"]["parameters"]["shield"] is True and outcome["report"]["shield_voxels"] > 100_000
    sidecar = json.loads((tmp_path / "out.defacer.json").read_text())
    assert sidecar["parameters"]["shield"] is True  # the provenance says the block was added
