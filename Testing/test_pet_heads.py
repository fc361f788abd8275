"""PET: the brain is kept and the face is seen, on PET-like copies of real IXI heads.

No real head PET with a reference brain is at hand, so each head is a PET-like copy of an
IXI T1 (scripts/evaluate_pet_like.py: soft tissue 1, reference brain 4, 6 mm FWHM, noise):
a synthetic contrast on a real head's anatomy, named as such.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import nibabel as nib
import pytest

from evaluate_pet_like import pet_like_copy
from DeFacerLib.deface import head_mask
from DeFacerLib.deface.uptake_brain import uptake_brain
from DeFacerLib.deface.workflow import deface_file
from DeFacerLib.io import read_volume
from DeFacerLib.io.modality import looks_like_uptake, stated_modality
from DeFacerLib.qa.check import check_pair
from DeFacerLib.qa.render import skin_threshold


@pytest.fixture(scope="module")
def pet_heads(ixi_pairs, tmp_path_factory):
    """{subject: (PET-like copy, reference brain)} for IXI211 and IXI255, the heads whose
    reference brain the cuts reached (6 and 62 voxels) when the U-Net's brain alone was kept."""
    folder = tmp_path_factory.mktemp("pet")
    chosen = {}
    for t1, brain in ixi_pairs:
        subject = t1.name.split("-")[0]
        if subject in ("IXI211", "IXI255"):
            chosen[subject] = (pet_like_copy(t1, brain, folder / f"{subject}_pet.nii.gz"), brain)
    return chosen


def test_the_brain_is_kept_and_the_face_removed(pet_heads, tmp_path):
    for subject, (pet, brain_path) in pet_heads.items():
        volume = read_volume(pet)
        assert volume.modality == "PT"  # from the file name, as BIDS names PET
        brain = np.asarray(nib.load(brain_path).dataobj) > 0
        # the uptake brain covers the reference brain but for its blurred edge (99.5 % on both)
        found = uptake_brain(volume, head_mask(volume))
        assert (found & brain).sum() / brain.sum() > 0.99, subject
        assert (found & ~brain).sum() / brain.sum() < 0.03, subject
        out = tmp_path / f"{subject}_pet_defaced.nii.gz"
        outcome = deface_file(pet, out)
        assert {"eyes", "nose", "mouth"} <= set(outcome["features_removed"]), outcome["features_removed"]
        changed = np.asarray(nib.load(pet).dataobj) != np.asarray(nib.load(out).dataobj)
        assert changed.sum() > 80_000, (subject, int(changed.sum()))  # 87,556 and 136,027 voxels
        assert int((changed & brain).sum()) == 0, subject  # it was 6 and 62 before the uptake brain


def test_the_face_is_rendered_and_checked(pet_heads, tmp_path):
    """The render's threshold was Otsu's single cut, between the face's soft tissue and the
    brain's uptake: the QA rendered the brain, found no face on the original, and would PASS
    any PET, defaced or not. It now cuts between the background and the soft tissue."""
    pet, _ = pet_heads["IXI211"]
    original = read_volume(pet)
    assert skin_threshold(original) < 0.5 * 1000.0  # under the soft tissue's uptake (1000), not 1413
    intact = check_pair(original, original)[0]
    front = next(v for v in intact.views if v.view == "front" and not v.variant)
    assert front.original_face_score >= 0.75 and intact.verdict == "FAIL"  # a face, and it is the person's
    out = tmp_path / "IXI211_pet_defaced.nii.gz"
    deface_file(pet, out)
    check = check_pair(original, read_volume(out))[0]
    assert check.verdict == "PASS", check.reasons
    assert not any(v.defaced_face_detected for v in check.views if v.view == "front")


@pytest.mark.parametrize("brain_uptake", [1.0, 1.3])
def test_a_brain_no_hotter_than_the_face_protects_no_face(ixi_pairs, tmp_path, brain_uptake):
    """A tracer the brain takes up little more of than the soft tissue: the head's high-uptake
    piece was the whole head (2.6 times the U-Net's brain), protected, and the face was left:
    34,000 voxels changed on IXI255 instead of 87,000, and `defacer qa` FAILed. It is now left
    out (uptake_brain.plausible_uptake_brain) and the face is removed as on the brain-hot copy."""
    t1, brain_path = next((t1, brain) for t1, brain in ixi_pairs if t1.name.startswith("IXI255"))
    pet = pet_like_copy(t1, brain_path, tmp_path / "IXI255_flat_pet.nii.gz", brain_uptake=brain_uptake)
    out = tmp_path / "IXI255_flat_pet_defaced.nii.gz"
    outcome = deface_file(pet, out)
    assert {"eyes", "nose", "mouth"} <= set(outcome["features_removed"]), outcome["features_removed"]
    changed = np.asarray(nib.load(pet).dataobj) != np.asarray(nib.load(out).dataobj)
    assert changed.sum() > 80_000, int(changed.sum())
    assert int((changed & (np.asarray(nib.load(brain_path).dataobj) > 0)).sum()) == 0


@pytest.fixture(scope="module")
def dynamic_pet(pet_heads, tmp_path_factory):
    """(dynamic copy, its frames, defaced copy, outcome): IXI211's PET-like copy as 4 frames at 0,
    5, 30 and 100 % of its uptake, the first blank as a dynamic PET's before the tracer comes."""
    folder = tmp_path_factory.mktemp("dynamic")
    pet, _ = pet_heads["IXI211"]
    static = nib.load(pet)
    uptake = np.asarray(static.dataobj, dtype=np.float32)
    frames = np.stack([uptake * weight for weight in (0.0, 0.05, 0.3, 1.0)], axis=-1)
    dynamic = folder / "IXI211_dynamic_pet.nii.gz"
    nib.save(nib.Nifti1Image(frames, static.affine), dynamic)
    out = folder / "IXI211_dynamic_pet_defaced.nii.gz"
    return dynamic, frames, out, deface_file(dynamic, out)


def test_a_dynamic_pet_whose_first_frame_is_blank(pet_heads, dynamic_pet):
    """A dynamic PET starts at the injection: its first frames come before the tracer does. The
    head, the face and the brain were found on the first frame alone, so a blank first frame
    stopped the run ("no head found", exit 3) and `defacer qa` could render no head. They are
    now found on the mean of the frames (Volume.reference_frame), and the same cut is made in
    every frame."""
    dynamic, frames, out, outcome = dynamic_pet
    _, brain_path = pet_heads["IXI211"]
    volume = read_volume(dynamic)
    assert volume.modality == "PT" and volume.reference_frame is None
    assert {"eyes", "nose", "mouth"} <= set(outcome["features_removed"]), outcome["features_removed"]
    defaced = np.asarray(nib.load(out).dataobj)
    changed = defaced != frames
    brain = np.asarray(nib.load(brain_path).dataobj) > 0
    for frame in range(1, 4):  # the same cut in every frame that holds activity
        assert changed[..., frame].sum() > 80_000, (frame, int(changed[..., frame].sum()))
        assert np.array_equal(changed[..., frame], changed[..., 3]), frame
    assert int((changed & brain[..., None]).sum()) == 0
    check = check_pair(volume, read_volume(out))[0]  # rendered from the mean, not the blank first frame
    assert check.verdict == "PASS", check.reasons
    front = next(v for v in check.views if v.view == "front" and not v.variant)
    assert front.original_face_score >= 0.75 and not front.defaced_face_detected


def test_a_frame_left_undefaced_behind_a_blank_one_is_found(dynamic_pet, tmp_path):
    """A tool that left the blank first frame as it was and the 5 % frame undefaced: the frame
    changed least was the blank one, which shows no face, so the frame with the face was never
    rendered, and its share of the mean (4 %) hid it: PASS. Blank frames are no longer candidates."""
    dynamic, frames, out, _ = dynamic_pet
    image = nib.load(out)
    tampered = np.asarray(image.dataobj).copy()
    tampered[..., :2] = frames[..., :2]
    path = tmp_path / "IXI211_dynamic_tampered.nii.gz"
    nib.save(nib.Nifti1Image(tampered, image.affine), path)
    check = check_pair(read_volume(dynamic), read_volume(path))[0]
    assert check.verdict == "FAIL", [v.label for v in check.views]
    assert any(v.variant == "frame 1" and v.match for v in check.views), [(v.label, v.match) for v in check.views]


def test_a_defaced_file_not_named_pet_is_still_checked_as_pet(pet_heads, tmp_path):
    """The modality of a NIfTI comes from its name: `defacer qa sub_pet.nii.gz defaced.nii.gz`
    read the defaced copy as MR and rendered it at Otsu's single cut, the brain's surface, so
    that even the original itself, copied under a name without `_pet`, PASSed (exit 0). The
    defaced copy is the same scan: it is rendered as the original's modality."""
    pet, _ = pet_heads["IXI211"]
    copy = tmp_path / "copy.nii.gz"  # not defaced at all
    shutil.copyfile(pet, copy)
    original, unchanged = read_volume(pet), read_volume(copy)
    # this copy's values say PT (looks_like_uptake); a PET whose brain is less hot than FDG's
    # makes them say nothing, and it is read as MR: stated here, as the reader would guess it
    unchanged.modality = "MR"
    assert original.modality == "PT"
    check = check_pair(original, unchanged)[0]
    assert check.verdict == "FAIL", check.reasons
    front = next(v for v in check.views if v.view == "front" and not v.variant)
    assert front.defaced_face_score >= 0.75 and front.match


def test_a_pet_named_without_pet_is_read_as_pet_from_its_sidecar(pet_heads, tmp_path):
    """dcm2niix names a conversion after the series or the patient and writes the DICOM Modality
    into a JSON sidecar beside it. The name was the only evidence read for a NIfTI, so a PET saved
    as `scan.nii.gz` was defaced as MR, exit 0: no uptake brain (IXI255's copy lost 62
    reference-brain voxels), the MR background as its air. Its sidecar now says PT."""
    pet, brain_path = pet_heads["IXI255"]
    source = tmp_path / "scan.nii.gz"
    shutil.copyfile(pet, source)
    assert stated_modality(None, source) is None  # the name says nothing (the values would: below)
    (tmp_path / "scan.json").write_text(json.dumps({"Modality": "PT", "ConversionSoftware": "dcm2niix"}))
    assert stated_modality(None, source) == "PT" and read_volume(source).modality == "PT"
    outcome = deface_file(source, tmp_path / "out.nii.gz")
    assert outcome["report"]["modality"] == "PT" and outcome["report"]["fill_value_physical"] == 0.0
    assert outcome["report"]["modality_from"] == "from its JSON sidecar"
    changed = np.asarray(nib.load(source).dataobj) != np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj)
    assert changed.sum() > 80_000
    assert int((changed & (np.asarray(nib.load(brain_path).dataobj) > 0)).sum()) == 0


def test_a_pet_that_nothing_names_is_read_as_pet_from_its_values(pet_heads, tmp_path):
    """Nothing about `head.nii.gz` says PET (no sidecar, no name, no HU air): `defacer deface`
    took it for MR and changed 62 reference-brain voxels of IXI255's PET-like copy (exit 0), and
    `defacer qa`, rendering the brain's surface, found no face on the original (exit 6, "rendered
    as MR"). Its core is 4.6 times as bright as its surface (MR heads: 2.2 at most): read as PT,
    its uptake brain is kept and its skin rendered as PET. `--modality` still overrides."""
    pet, brain_path = pet_heads["IXI255"]
    source, output = tmp_path / "head.nii.gz", tmp_path / "out.nii.gz"
    shutil.copyfile(pet, source)
    assert stated_modality(None, source) is None and looks_like_uptake(read_volume(source))
    command = [sys.executable, "-m", "DeFacerLib"]
    run = subprocess.run([*command, "deface", "--json", str(source), str(output)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)["report"]
    assert report["modality"] == "PT" and report["modality_from"].startswith("from its values: its core 4."), report
    changed = np.asarray(nib.load(source).dataobj) != np.asarray(nib.load(output).dataobj)
    assert changed.sum() > 80_000
    assert int((changed & (np.asarray(nib.load(brain_path).dataobj) > 0)).sum()) == 0
    qa = subprocess.run([*command, "qa", "--json", str(source), str(output), "--out", str(tmp_path / "qa")],
                        capture_output=True, text=True)
    assert qa.returncode == 0, qa.stdout[-2000:] + qa.stderr
    front = next(v for v in json.loads(qa.stdout)["check"]["views"] if v["view"] == "front" and not v["variant"])
    assert front["original_face_score"] >= 0.75 and front["defaced_face_score"] < 0.75
    # the report says what the renders took it for, and why
    assert json.loads(qa.stdout)["check"]["rendered_as"].startswith("PT (from its values: its core 4.")
    assert "rendered as PT (from its values" in (tmp_path / "qa" / "out_report.html").read_text()
    as_mr = subprocess.run([*command, "qa", "--json", "--modality", "MR", str(source), str(output), "--out",
                            str(tmp_path / "qa_mr")], capture_output=True, text=True)
    assert as_mr.returncode == 6, as_mr.stderr
    assert any("rendered as MR (stated by the caller: --modality)" in reason
               for reason in json.loads(as_mr.stdout)["reasons"]), as_mr.stdout[-2000:]
    stated = subprocess.run([*command, "deface", "--json", "--modality", "mr", "--overwrite", str(source), str(output)],
                            capture_output=True, text=True)
    assert stated.returncode == 0, stated.stderr
    assert json.loads(stated.stdout)["report"]["modality"] == "MR"
    assert json.loads(stated.stdout)["report"]["modality_from"] == "stated by the caller: --modality"


def test_no_mr_head_is_read_as_pet(data_dir, ixi_pairs):
    """The values' PET rule on the MR heads at hand, their names set aside: the IXI T1 with the
    hottest core (IXI255, 2.2 times its surface), T1 and T2 heads, an MGZ and a DICOM series."""
    heads = [t1 for t1, _ in ixi_pairs if t1.name.split("-")[0] in ("IXI255", "IXI546", "IXI577")]
    heads += [data_dir / "heads" / "single" / name for name in ("chris_t1.nii.gz", "niivue_T2w.nii.gz",
                                                                  "mne_sample_T1.mgz")]
    heads.append(data_dir / "dicom" / "siemens_trio_mprage_1mm")
    assert len(heads) == 7
    for head in heads:
        assert not looks_like_uptake(read_volume(head)), head.name


def test_a_bids_name_of_an_mr_image_is_evidence_before_the_values(pet_heads, tmp_path):
    """The values' PET rule looks at a head's core against its surface, which a 7 T image brighter
    at its centre or a T1 map might pass: every BIDS anatomical MR suffix (`UNIT1`, `MP2RAGE`,
    `T1map`, ...) now says MR first, as `T1w` did (they said nothing: the values decided)."""
    pet, _ = pet_heads["IXI211"]
    for name in ("sub-01_UNIT1.nii.gz", "sub-01_inv-2_MP2RAGE.nii.gz", "sub-01_T1map.nii.gz", "sub-01_R2starmap.nii.gz"):
        shutil.copyfile(pet, tmp_path / name)  # values that say PT, under a name that says MR
        assert stated_modality(None, tmp_path / name) == "MR" and read_volume(tmp_path / name).modality == "MR", name
    shutil.copyfile(pet, tmp_path / "sub-01_trc-FDG_pet.nii.gz")
    assert read_volume(tmp_path / "sub-01_trc-FDG_pet.nii.gz").modality == "PT"
