"""The face shield (``--shield``, shield.SHIELD_*) on a real held-out head: a featureless, hollow
block over the front, made only of what was air or cut, never of the kept head or the brain."""
from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from DeFacerLib.deface import changed_region_mask, head_mask
from DeFacerLib.deface.pipeline import DefaceParameters, deface_volume, find_features
from DeFacerLib.deface.shield import SHIELD_AHEAD_OF_EYES_MM
from DeFacerLib.errors import UsageError
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
    assert filled > 40_000  # the walls (6 mm) of a 180 x 240 x 95 mm block at 2 mm: the front alone is 32,000

    before, after = np.asarray(volume.array), np.asarray(shielded.volume.array)
    changed = after != before
    brain = np.asanyarray(nib.load(str(data_dir / BRAIN)).dataobj) > 0
    assert not (changed & brain).any()
    assert not (changed & head & ~shielded.removed).any()  # the shield adds; it never takes what the cut kept
    # only the shield tells the two outputs apart outside the cut, and only by tissue added
    added = (np.asarray(plain.volume.array) != after) & ~shielded.removed
    assert added.sum() > 0.5 * filled and np.all(after[added] == shielded.report["seal_value_stored"])
    # every change lies inside the boxes the report records (what a registration can mask out)
    for result in (plain, shielded):
        region = changed_region_mask(result.report, volume.shape3)
        assert not ((np.asarray(result.volume.array) != before) & ~region).any()
        assert 0.15 < region.mean() < (0.6 if result is shielded else 0.35), region.mean()  # 24 % and 48 % here
    where_added = np.argwhere(added)
    lo, hi = shielded.report["shield_box_index"]
    assert (where_added >= lo).all() and (where_added <= hi).all() and plain.report["shield_box_index"] is None

    # straight ahead of the eyes (LPS: anterior is -y), 1 mm steps: the block's front wall about
    # SHIELD_AHEAD_OF_EYES_MM out (the block is placed from the eye regions, the landmarks are
    # snapped: a few mm apart), air in front of it, and air again behind the wall (hollow)
    eyes = (np.asarray(found.landmarks["eye_left"]["mm"]) + np.asarray(found.landmarks["eye_right"]["mm"])) / 2
    ahead_mm = np.arange(0.0, 70.0)
    ijk = np.round(volume.world_to_index(eyes[None, :] + ahead_mm[:, None] * [0.0, -1.0, 0.0])).astype(int)
    profile = after[tuple(ijk.T)]
    tissue = profile == shielded.report["seal_value_stored"]
    front_mm = ahead_mm[np.flatnonzero(tissue)[-1]]
    assert abs(front_mm - SHIELD_AHEAD_OF_EYES_MM) <= 5.0, front_mm
    beyond = ahead_mm > front_mm  # untouched air in front of the block
    assert np.array_equal(profile[beyond], np.asarray(plain.volume.array)[tuple(ijk[beyond].T)])
    assert np.all(profile[beyond] < 0.5 * shielded.report["seal_value_stored"])
    wall = (ahead_mm > front_mm - 12.0) & (ahead_mm <= front_mm)
    assert 4 <= tissue[wall].sum() <= 9  # a 6 mm wall, at 1 mm steps on a 2 mm grid

    face = face_direction(volume)
    render = render_views(shielded.volume, views=("front",), size=(400, 400), face=face)["front"]
    assert detect_faces_dlib(render) == []
    assert getattr(best_face(render), "score", 0.0) < FACE_PRESENT_SCORE

    with pytest.raises(UsageError, match="--no-whole-face"):  # the shield stands on the whole face's frame
        DefaceParameters(shield=True, whole_face=False)


@pytest.mark.slow
def test_shield_from_the_command_line(data_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(data_dir / HEAD),
                             str(tmp_path / "out.nii.gz"), "--shield", "--json"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["report"]["parameters"]["shield"] is True and outcome["report"]["shield_voxels"] > 40_000
    sidecar = json.loads((tmp_path / "out.defacer.json").read_text())
    assert sidecar["parameters"]["shield"] is True  # the provenance says the block was added


@pytest.mark.slow
def test_shield_is_the_same_in_any_voxel_order(data_dir, tmp_path):
    """The block is a box of the voxel grid, with its axes chosen from the face's directions: the
    same head stored in another axis order gets the same block in the world. (Not to the voxel:
    the cut itself differs by ~50 voxels between these two orders on IXI206, from the U-Net's
    resampling; a block on the wrong axes would differ by tens of thousands.)"""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    original = nib.load(str(data_dir / HEAD))
    outputs, filled = {}, {}
    for codes in (("L", "I", "A"), ("R", "A", "S")):
        name = "".join(codes)
        moved = original.as_reoriented(ornt_transform(io_orientation(original.affine), axcodes2ornt(codes)))
        nib.save(moved, str(tmp_path / f"{name}.nii.gz"))
        result = subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(tmp_path / f"{name}.nii.gz"),
                                 str(tmp_path / f"{name}_out.nii.gz"), "--shield", "--json"],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        filled[name] = json.loads(result.stdout)["report"]["shield_voxels"]
        out = nib.load(str(tmp_path / f"{name}_out.nii.gz"))
        back = out.as_reoriented(ornt_transform(io_orientation(out.affine), io_orientation(original.affine)))
        assert np.allclose(back.affine, original.affine)
        outputs[name] = np.asanyarray(back.dataobj)
    assert filled["LIA"] > 40_000 and abs(filled["LIA"] - filled["RAS"]) < 0.001 * filled["LIA"]
    assert np.count_nonzero(outputs["LIA"] != outputs["RAS"]) < 200
