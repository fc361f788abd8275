"""The heads the re-identification study makes for itself, on a real IXI head: the simulated second
session (reid_study.simulate_rescan) and the brain-shell floor (scripts/reid_brain_shell.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
HEAD = "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
BRAIN = "heads/ixi/brain_labels/IXI132-HH-1415_T1_DLMUSE.nii.gz"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rescan_moves_the_head_and_its_brain_together_and_keeps_the_file(data_dir, tmp_path):
    study = _script("reid_study")
    original = nib.load(str(data_dir / HEAD))
    rescan_path = study.simulate_rescan(data_dir / HEAD, data_dir / BRAIN, tmp_path, seed=7)
    rescan = nib.load(str(rescan_path))
    assert rescan.shape == original.shape and np.allclose(rescan.affine, original.affine)
    assert rescan.get_data_dtype() == original.get_data_dtype()
    assert rescan.dataobj.slope == original.dataobj.slope  # IXI's stored scaling (~7) is kept
    before, after = np.asanyarray(original.dataobj), np.asanyarray(rescan.dataobj)
    assert 0.8 < np.percentile(after, 99) / np.percentile(before, 99) < 1.2  # same contrast, another gain
    assert np.mean(before != after) > 0.5  # moved and noisy, not a copy
    brain_before = np.asanyarray(nib.load(str(data_dir / BRAIN)).dataobj) > 0
    brain_after = np.asanyarray(nib.load(str(tmp_path / "brain_labels" / Path(BRAIN).name)).dataobj) > 0
    assert abs(int(brain_after.sum()) - int(brain_before.sum())) < 0.03 * brain_before.sum()  # rigid: volume kept
    shift_vox = np.subtract(ndi.center_of_mass(brain_after), ndi.center_of_mass(brain_before))
    assert 0.2 < np.linalg.norm(shift_vox) * 2.0 < 15.0  # moved by a few mm, as a second session would
    # the head moved with its brain: the image's bright centre of mass moved alike
    head_shift = np.subtract(ndi.center_of_mass(after > 0.3 * after.max()), ndi.center_of_mass(before > 0.3 * before.max()))
    assert np.linalg.norm(head_shift - shift_vox) * 2.0 < 6.0
    again = study.simulate_rescan(data_dir / HEAD, None, tmp_path / "again", seed=7)
    assert np.array_equal(np.asanyarray(nib.load(str(again)).dataobj), after)  # seeded: the study is repeatable


def test_brain_shell_removes_the_whole_front_and_never_the_brain(data_dir, tmp_path):
    shell = _script("reid_brain_shell")
    out = tmp_path / Path(HEAD).name
    changed = shell.brain_shell(data_dir / HEAD, data_dir / BRAIN, out, shell_mm=10.0, seal_from_mm=4.0)
    original, shelled = nib.load(str(data_dir / HEAD)), nib.load(str(out))
    assert shelled.dataobj.slope == original.dataobj.slope and shelled.get_data_dtype() == original.get_data_dtype()
    before, after = np.asanyarray(original.dataobj), np.asanyarray(shelled.dataobj)
    brain = np.asanyarray(nib.load(str(data_dir / BRAIN)).dataobj) > 0
    assert changed == int(np.count_nonzero(before != after)) and changed > 100_000
    assert np.array_equal(before[brain], after[brain])
    # the nose tip (the most anterior bright voxel of the original, world RAS +y) is gone
    world_y = nib.affines.apply_affine(original.affine, np.indices(before.shape).reshape(3, -1).T)[:, 1].reshape(before.shape)
    bright = before > 0.3 * before.max()
    nose = np.unravel_index(np.argmax(np.where(bright, world_y, -np.inf)), before.shape)
    assert after[nose] < 0.1 * before[nose]


def test_cohort_crop_sits_where_the_faces_sit_and_still_sees_an_undefaced_face(data_dir):
    """The cohort-crop attacker's fixed crop (reid_study.cohort_faces): the mean of the originals'
    detected faces per view, which on an undefaced render still describes that person's face."""
    study = _script("reid_study")
    names = ("IXI132-HH-1415_T1.nii.gz", "IXI162-HH-1548_T1.nii.gz")
    originals = [study.descriptors(study.render_head(data_dir / "heads/ixi/t1" / name)[0], None) for name in names]
    faces = study.cohort_faces(originals)
    for view in study.VIEWS:
        found = [o[view]["face"] for o in originals]
        assert all(f is not None for f in found)
        assert np.allclose(faces[view].landmarks, (found[0].landmarks + found[1].landmarks) / 2)
        assert min(f.x for f in found) <= faces[view].x <= max(f.x for f in found)
    study.add_cohort_crops(originals, faces)
    assert all("image" not in o[view] for o in originals for view in study.VIEWS)  # freed once cut
    front = [(o[study.GALLERY_VIEW]["cohort"]["sface"], o[study.GALLERY_VIEW]["detected"]["sface"]) for o in originals]
    for mine, other in ((0, 1), (1, 0)):
        same = study.similarity(front[mine][0], front[mine][1])  # measured 0.97 on both
        assert same > 0.4687  # the study's calibrated match threshold
        assert same > study.similarity(front[mine][0], front[other][1]) + 0.2  # and not the other person (0.44)
