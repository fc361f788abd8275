"""The Slicer module's Logic against REAL MRML nodes from the slicer-core wheel.

Real vtkMRMLScene, vtkMRMLScalarVolumeNode (IJKToRAS), vtkMRMLMarkupsROINode and Slicer's
own volume reader (vtkMRMLVolumeArchetypeStorageNode); real heads from the data folder and
the phantom. slicer-core pins vtk==9.6.2, so these tests run in the interpreter that has it
(see docs/slicer.md, "Tests"); elsewhere they are skipped with that reason.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _slicer_for_tests import slicer_core

slicer = slicer_core()

import vtk  # noqa: E402

from _nifti_for_tests import featureless_blob  # noqa: E402
from DeFacerLib import sharing_warnings  # noqa: E402
from DeFacerLib.deface.pipeline import DefaceParameters, deface_volume, masks_from_labels  # noqa: E402
from DeFacerLib.errors import InputError, OutputError, UsageError  # noqa: E402
from DeFacerLib.features import LABEL_VALUES  # noqa: E402
from DeFacerLib.io import read_volume, write_volume  # noqa: E402
from DeFacerLib.phantom import make_phantom  # noqa: E402
from DeFacerLogicLib.logic import DeFacerLogic, matrix_to_numpy  # noqa: E402

PHI_NAME = "DOE^JOHN"


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture()
def logic(scene):
    return DeFacerLogic(scene)


def kji(node) -> np.ndarray:
    return slicer.util.arrayFromVolume(node)


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix_to_numpy(matrix)


def phantom_nodes(logic, orientation="RAS", oblique_deg=0.0, modality="MR"):
    volume, labels = make_phantom(orientation=orientation, oblique_deg=oblique_deg, modality=modality)
    node = logic.node_from_volume(volume, "Phantom head")
    labels_node = logic.node_from_volume(volume.label_map(labels), "Phantom labels", nodeClass="vtkMRMLLabelMapVolumeNode")
    return volume, labels, node, labels_node


# ---- node <-> Volume on real heads ---------------------------------------------------------------
@pytest.mark.parametrize("relative", ["heads/single/mne_sample_T1.mgz", "IXI_FIRST"])
def test_real_head_round_trip_through_node(logic, data_dir, ixi_pairs, relative):
    path = ixi_pairs[0][0] if relative == "IXI_FIRST" else data_dir / relative
    head = read_volume(path)
    node = logic.node_from_volume(head, "Head")
    assert np.allclose(ijk_to_ras(node), head.affine_ras, atol=1e-9)
    back = logic.volume_from_node(node)
    assert np.shares_memory(back.array, kji(node))  # a view of the node's voxels, not a copy
    if head.slope == 1.0 and head.intercept == 0.0:
        assert back.array.dtype == head.array.dtype and np.array_equal(back.array, head.array)
    else:  # a scaled file: the node holds real-world values, as Slicer's readers do
        assert np.array_equal(back.array, head.physical())
    assert np.array_equal(back.spacing_mm, head.spacing_mm)
    assert np.allclose(back.origin_mm, head.origin_mm, atol=1e-9)
    assert np.allclose(back.direction, head.direction, atol=1e-12)
    assert back.describe_orientation() == head.describe_orientation()


def test_mne_head_is_lia_in_slicer_terms(logic, data_dir):
    head = read_volume(data_dir / "heads" / "single" / "mne_sample_T1.mgz")
    node = logic.node_from_volume(head, "Head")
    matrix = ijk_to_ras(node)
    # i runs to the patient's Left (-R), j Inferior (-S), k Anterior (+A)
    assert matrix[0, 0] < 0 and matrix[2, 1] < 0 and matrix[1, 2] > 0
    assert kji(node).shape == head.shape3[::-1]


def test_slicer_reader_and_defacer_agree(logic, scene, data_dir):
    """Slicer's own NIfTI reader and DeFacerLib's reader + the Logic give the same node."""
    path = data_dir / "heads" / "single" / "chris_t1.nii.gz"
    slicer_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "read by Slicer")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(slicer_node) == 1
    ours = logic.node_from_volume(read_volume(path), "read by DeFacer")
    assert np.array_equal(kji(slicer_node), kji(ours)) and kji(ours).dtype == kji(slicer_node).dtype
    assert np.allclose(ijk_to_ras(slicer_node), ijk_to_ras(ours), atol=1e-4)


def test_slicer_reader_on_ixi_is_the_same_image_in_world_space(logic, scene, ixi_pairs):
    """IXI headers have qfac = -1: Slicer's reader stores the k axis reversed (and applies the
    slope), DeFacerLib keeps the file's voxel order. Same image, voxel for voxel, in world mm."""
    path = ixi_pairs[0][0]
    slicer_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "read by Slicer")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(slicer_node) == 1
    head = read_volume(path)
    theirs = logic.volume_from_node(slicer_node)
    assert np.allclose(theirs.array[:, :, ::-1], head.physical(), atol=1e-3)
    last = head.shape3[2] - 1
    for ijk in ([0, 0, 0], [17, 40, 61], [119, 119, 89]):
        assert np.allclose(head.index_to_world(ijk), theirs.index_to_world([ijk[0], ijk[1], last - ijk[2]]), atol=1e-3)


# ---- deface through the Logic ------------------------------------------------------------------------
@pytest.mark.parametrize("orientation,oblique_deg", [("PSR", 0.0), ("LIA", 10.0)])
def test_logic_deface_equals_library(logic, orientation, oblique_deg):
    volume, labels, node, labels_node = phantom_nodes(logic, orientation, oblique_deg)
    before = kji(node).copy()
    output, report = logic.deface(node, features=("eyes", "nose", "mouth", "ears"), margin_mm=8.0,
                                  max_depth_mm=20.0, labelsNode=labels_node)
    reference = deface_volume(volume, masks_from_labels(volume.label_map(labels), volume),
                              parameters=DefaceParameters(margin_mm=8.0, max_depth_mm=20.0))
    result = logic.volume_from_node(output)
    assert np.array_equal(result.array, reference.volume.array)
    assert np.allclose(ijk_to_ras(output), ijk_to_ras(node))
    assert report["total_removed"] == reference.report["total_removed"] > 1000
    assert sorted(report["features_removed"]) == ["ears", "eyes", "mouth", "nose"]
    brain = labels == LABEL_VALUES["brain"]
    assert int((result.array[brain] != volume.array[brain]).sum()) == 0
    assert np.array_equal(kji(node), before)  # the input node is untouched


def test_label_map_without_brain_is_protected_by_the_model(logic):
    """As `defacer deface --features-from`: a label map without label 5 gets the U-Net's brain
    and frontal guard (pipeline.protect_unlabelled_brain), so its boxes cannot reach the brain."""
    volume, labels, node, _ = phantom_nodes(logic)
    no_brain = np.where(labels == LABEL_VALUES["brain"], 0, labels)
    labels_node = logic.node_from_volume(volume.label_map(no_brain), "Labels without brain",
                                         nodeClass="vtkMRMLLabelMapVolumeNode")
    output, report = logic.deface(node, labelsNode=labels_node)
    protection = report["brain_from_model"]
    assert protection["brain_voxels"] > 10_000 and protection["guard_voxels"] > 0
    result = logic.volume_from_node(output)
    brain = labels == LABEL_VALUES["brain"]
    assert int((result.array[brain] != volume.array[brain]).sum()) == 0
    assert sorted(report["features_removed"]) == ["ears", "eyes", "mouth", "nose"]


def test_ct_phantom_physical_values(logic):
    volume, labels, node, labels_node = phantom_nodes(logic, "RAS", modality="CT")
    assert volume.intercept == -1024.0 and kji(node).dtype == np.float32  # the node holds HU
    assert logic.volume_from_node(node).modality == "CT"
    output, report = logic.deface(node, labelsNode=labels_node)
    reference = deface_volume(volume, masks_from_labels(volume.label_map(labels), volume))
    got, expected = logic.volume_from_node(output).array, reference.volume.physical()
    # equal, but for the anti-aliased surface voxels of the flat cut and the ears' floor: the file
    # stores whole HU, the node float HU, so a share of the seal rounds in one and not in the other
    # (and now and then rounds, in the file, to the very HU the voxel held)
    air = report["fill_value_physical"]
    seal = reference.report["seal_value_stored"] * volume.slope + volume.intercept
    original = volume.physical()
    replaced = (expected != original) | (got != original)
    surface = replaced & (((expected > air) & (expected < seal)) | ((got > air) & (got < seal)))
    assert np.array_equal(got[~surface], expected[~surface]) and 0 < surface.sum() < 5000  # measured 2021
    assert np.abs(got[surface] - expected[surface]).max() <= 0.5
    assert report["fill_value_physical"] == -1000.0


def test_unchanged_rois_reproduce_engine_and_adjusted_rois_are_used(logic):
    _volume, labels, node, labels_node = phantom_nodes(logic, "PSR", oblique_deg=8.0)
    engine_output, report = logic.deface(node, labelsNode=labels_node)
    rois = logic.feature_rois(node, report)
    assert sorted(r.GetName() for r in rois) == ["DeFacer ears 1", "DeFacer ears 2", "DeFacer eyes 1",
                                                 "DeFacer eyes 2", "DeFacer mouth", "DeFacer nose"]
    roi_output, roi_report = logic.deface(node, labelsNode=labels_node, roiNodes=rois)
    assert roi_report["boxes_from"] == "rois"
    assert np.array_equal(kji(roi_output), kji(engine_output))
    # the user shrinks the nose box to a quarter of its volume: less nose goes, nothing else changes
    # (feature boxes alone: with the whole face on, the span between eyes and mouth covers the nose)
    engine_output, report = logic.deface(node, labelsNode=labels_node, roiNodes=rois, whole_face=False)
    nose = next(r for r in rois if r.GetName() == "DeFacer nose")
    size = nose.GetSize()
    nose.SetSize(size[0] / 2, size[1] / 2, size[2])
    smaller, smaller_report = logic.deface(node, labelsNode=labels_node, roiNodes=rois, whole_face=False)
    removed = {n: f["voxels_removed"] for n, f in smaller_report["features"].items()}
    assert 0 < removed["nose"] < report["features"]["nose"]["voxels_removed"]
    assert removed["eyes"] == report["features"]["eyes"]["voxels_removed"]
    # only nose-only voxels differ between the two outputs
    assert 0 < int((kji(smaller) != kji(engine_output)).sum()) <= report["features"]["nose"]["voxels_removed"]
    brain = labels == LABEL_VALUES["brain"]
    after = logic.volume_from_node(smaller).array
    assert int((after[brain] != _volume.array[brain]).sum()) == 0


def test_output_never_overwrites_input_silently(logic):
    _volume, _labels, node, labels_node = phantom_nodes(logic)
    with pytest.raises(UsageError, match="never overwrites"):
        logic.deface(node, labelsNode=labels_node, outputNode=node)
    with pytest.raises(UsageError, match="unknown feature"):
        logic.deface(node, features=("eyebrows",), labelsNode=labels_node)


def test_a_shield_that_cannot_be_placed_is_refused_before_the_model_runs(logic, data_dir):
    """The Logic builds DefaceParameters before any work, as `defacer deface` does: a shield
    without the eyes was refused only after the U-Net had looked for the features (seconds)."""
    head = data_dir / "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
    node = logic.node_from_volume(read_volume(head), "Head")
    with pytest.raises(UsageError, match="--shield needs them"):
        logic.deface(node, features=("ears",), shield=True)
    assert logic._mask_cache == {}  # the features were never looked for


def test_without_labels_a_volume_without_a_face_is_refused(logic):
    """The same rule as `defacer deface`: no eyes and nose found, nothing defaced, one-line reason."""
    blob = featureless_blob()
    node = logic.node_from_volume(blob, "Blob")
    with pytest.raises(InputError, match="the face was not found"):
        logic.deface(node)


def test_without_labels_the_model_finds_the_face_and_spares_the_brain(logic, data_dir):
    """Automatic features on a held-out real head (never trained on): the U-Net's boxes are
    used and no voxel of the reference brain changes. (On the synthetic phantom the model,
    trained on real heads, misses the phantom's brain edge: real heads are what it is for.)"""
    volume = read_volume(data_dir / "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz")
    brain = read_volume(data_dir / "heads/ixi/brain_labels/IXI162-HH-1548_T1_DLMUSE.nii.gz").array > 0
    node = logic.node_from_volume(volume, "Head")
    output, report = logic.deface(node)
    assert report["boxes_from"] == "model" and "segmentation" in report
    assert {"eyes", "nose", "mouth", "ears"} <= set(report["features_removed"]), report["features_missing"]
    after = logic.volume_from_node(output).physical()  # Slicer holds real-world values
    assert after.shape == volume.array.shape
    changed = ~np.isclose(after, volume.physical(), atol=1e-3)
    assert int(changed.sum()) > 10_000
    assert int(changed[brain].sum()) == 0
    # the Face shield checkbox: the block is added, the brain still untouched
    shielded, shield_report = logic.deface(node, shield=True)
    assert report["shield_voxels"] is None and shield_report["shield_voxels"] > 40_000
    shielded_after = logic.volume_from_node(shielded).physical()
    added = ~np.isclose(shielded_after, after, atol=1e-3)
    assert int(added.sum()) >= shield_report["shield_voxels"] // 2 and int(added[brain].sum()) == 0


def test_found_landmarks_are_shown_where_the_anatomy_is(logic, scene, data_dir, ear_consensus):
    """The preview's point list: one point per landmark, in RAS, on the verified landmarks of a
    held-out head where they were snapped to the anatomy (IXI162: all six proposals accepted),
    the ears near the readers' concha; a second preview replaces it, a label map gives none."""
    from DeFacerLib.face.labels import load_landmarks

    rel = "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"
    verified = load_landmarks()[rel]["landmarks"]
    node = logic.node_from_volume(read_volume(data_dir / rel), "Head")
    _none, report = logic.deface(node, preview=True)
    points = logic.landmark_points(node, report)
    assert points.GetNumberOfControlPoints() == 6
    shown = {}
    for i in range(6):
        ras = [0.0, 0.0, 0.0]
        points.GetNthControlPointPosition(i, ras)
        shown[points.GetNthControlPointLabel(i)] = np.array([-ras[0], -ras[1], ras[2]])  # back to LPS
    for name in ("eye_left", "eye_right", "nose_tip", "mouth"):
        assert np.linalg.norm(shown[name] - verified[name]) < 1.0, (name, shown[name], verified[name])
    for name in ("ear_left", "ear_right"):  # the concha from the side view: 2.9 and 3.8 mm off (the model alone 5.4, 6.2)
        assert np.linalg.norm(shown[name] - ear_consensus[rel][name]) < 5.0
    logic.landmark_points(node, report)
    assert len(logic.landmark_nodes_of(node)) == 1
    assert logic.landmark_points(node, {"features": {}}) is None and logic.landmark_nodes_of(node) == []


# ---- no PHI in what the scene saves ----------------------------------------------------------------
def test_saved_scene_carries_no_patient_name(logic, scene, tmp_path):
    _volume, _labels, node, labels_node = phantom_nodes(logic)
    node.SetName(PHI_NAME)
    node.SetAttribute("DICOM.PatientName", PHI_NAME)
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3.4.5")
    output, report = logic.deface(node, labelsNode=labels_node)
    rois = logic.feature_rois(node, report)
    second, _ = logic.deface(node, labelsNode=labels_node)
    assert (output.GetName(), second.GetName()) == ("Defaced volume 1", "Defaced volume 2")
    for created in [output, second, *rois]:
        assert PHI_NAME not in created.GetName()
        names = created.GetAttributeNames() or ()
        assert all(name.startswith("DeFacer.") for name in names), names
        assert all(PHI_NAME not in (created.GetAttribute(name) or "") for name in names)
    # save the defaced volume and the scene without the input, then read what was written
    scene.RemoveNode(node)
    output.AddDefaultStorageNode()
    storage = output.GetStorageNode()
    storage.SetFileName(str(tmp_path / f"{output.GetName()}.nrrd"))
    assert storage.WriteData(output) == 1
    scene.SetRootDirectory(str(tmp_path))
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit() == 1
    for written in tmp_path.iterdir():
        assert PHI_NAME.encode() not in written.read_bytes(), written.name
        assert b"1.2.3.4.5" not in written.read_bytes()
    assert "DeFacer.Defaced" in (tmp_path / "scene.mrml").read_text()


# ---- one code path with the command line -------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".mgz"])
def test_cli_and_logic_deface_file_byte_identical(logic, tmp_path, suffix):
    from DeFacerLib.cli.main import main as cli_main

    volume, labels = make_phantom(orientation="LIA")
    head, label_map = tmp_path / f"head{suffix}", tmp_path / "labels.nii.gz"
    write_volume(volume, head)
    write_volume(volume.label_map(labels), label_map)
    cli_out, logic_out = tmp_path / f"cli{suffix}", tmp_path / f"logic{suffix}"
    code = cli_main(["deface", str(head), str(cli_out), "--features-from", str(label_map),
                     "--features", "eyes,nose", "--margin-mm", "6", "-q"])
    assert code in (0, None)
    # ticked in another order than typed: a set, the same bytes (the order reached the header note)
    outcome = logic.deface_file(head, logic_out, features=("nose", "eyes"), margin_mm=6.0, labels_path=label_map)
    assert outcome["features_removed"] == ["eyes", "nose"]
    assert cli_out.read_bytes() == logic_out.read_bytes()
    assert read_volume(logic_out).array.sum() != volume.array.sum()


# ---- QA, skin model, DICOM ---------------------------------------------------------------------------
def test_skin_model_is_in_ras(logic):
    volume, _labels, node, _labels_node = phantom_nodes(logic, "PSR")
    model = logic.skin_model(node)
    bounds = [0.0] * 6
    model.GetPolyData().GetBounds(bounds)
    from DeFacerLib.qa import skin_surface

    lps = skin_surface(volume).GetBounds()
    assert np.allclose(bounds, [-lps[1], -lps[0], -lps[3], -lps[2], lps[4], lps[5]], atol=1e-3)
    assert bounds[3] > 90  # the nose points to +A


def test_reidentification_check_and_screenshots(logic, data_dir, tmp_path):
    """A held-out real head through the U-Net: YuNet sees its face before, and none after (the
    cartoon phantom's own face scores under FACE_PRESENT_SCORE, so it cannot show this)."""
    node = logic.node_from_volume(read_volume(data_dir / "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"), "Head")
    before = logic.check_reidentification(node, views=("front",))
    output, _report = logic.deface(node)
    after = logic.check_reidentification(output, views=("front",))
    assert before["faces_found"] >= 1 and before["verdict"] == "face detected in 1 view(s)"
    assert after["views"] == {"front": 0} and after["verdict"] == "no face detected"
    paths = logic.save_qa_screenshots(node, output, tmp_path / "qa", views=("front", "left"))
    assert sorted(p.name for p in paths) == ["defacer_qa_after_front.png", "defacer_qa_after_left.png",
                                             "defacer_qa_before_after.png", "defacer_qa_before_front.png",
                                             "defacer_qa_before_left.png"]
    from PIL import Image

    with Image.open(tmp_path / "qa" / "defacer_qa_before_front.png") as front:
        assert front.size == (400, 400)


def test_scrub_dicom_files_of_a_study(logic, data_dir, tmp_path):
    import pydicom

    files = sorted((data_dir / "dicom" / "fake_phi_ct").glob("*.dcm"))
    summary = logic.scrub_dicom_files(files, tmp_path / "out", key_file=tmp_path / "key.bin")
    written = sorted((tmp_path / "out").glob("*.dcm"))
    assert summary["written"] == len(files) == len(written) == 2
    assert summary["key_file"] == str(tmp_path / "key.bin") and not summary["key_readable_by_others"]
    (tmp_path / "key.bin").chmod(0o644)  # a key others can read is shown under the result, as the CLI warns
    again = logic.scrub_dicom_files(files, tmp_path / "again", key_file=tmp_path / "key.bin")
    assert any("can be read by other users" in line for line in sharing_warnings.for_scrub(again))
    assert [p.name for p in written] == [p.name for p in files]
    # Slicer runs on: the key is not held open after the run (Windows could not delete or rotate it)
    assert not [fd for fd in Path("/proc/self/fd").iterdir() if fd.resolve() == (tmp_path / "key.bin").resolve()]
    for path in written:
        text = path.read_bytes()
        assert b"SIMPSON" not in text and b"HOMER" not in text
        assert pydicom.dcmread(path).PatientIdentityRemoved == "YES"


def test_scrub_refuses_a_key_file_inside_its_output(logic, data_dir, tmp_path):
    """The module's DICOM scrub made the key inside the study folder it published (the command
    line refuses it): with it a recipient recomputes the pseudonym of any patient ID he can guess."""
    files = sorted((data_dir / "dicom" / "fake_phi_ct").glob("*.dcm"))
    with pytest.raises(OutputError, match="inside the output"):
        logic.scrub_dicom_files(files, tmp_path / "out", key_file=tmp_path / "out" / "deid.key")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_scrub_refuses_a_key_file_inside_the_folder_of_the_study(logic, data_dir, tmp_path):
    """`defacer scrub` refuses a key file inside its input; the module, which stages the files and
    so saw no input folder, made the key (the secret behind the pseudonyms) in the study's own folder."""
    import shutil

    study = tmp_path / "study"
    shutil.copytree(data_dir / "dicom" / "fake_phi_ct", study)
    files = sorted(study.glob("*.dcm"))
    with pytest.raises(OutputError, match="inside the input"):
        logic.scrub_dicom_files(files, tmp_path / "out", key_file=study / "deid.key")
    assert sorted(p.name for p in study.iterdir()) == ["ctbrain1.dcm", "ctbrain2.dcm"]
    assert not (tmp_path / "out").exists()


def test_scrub_refuses_an_output_inside_the_folder_of_the_study(logic, data_dir, tmp_path):
    """The files are staged in a temporary folder, so scrub_tree saw no input around the output:
    an output folder chosen inside the study's own folder was written there (the next import of
    that folder reads the scrubbed copies as a second study); `defacer scrub` refuses it."""
    import shutil

    study = tmp_path / "study"
    shutil.copytree(data_dir / "dicom" / "fake_phi_ct", study)
    files = sorted(study.glob("*.dcm"))
    with pytest.raises(OutputError, match="inside the folder"):
        logic.scrub_dicom_files(files, study / "deid", key_file=tmp_path / "deid.key")
    assert sorted(p.name for p in study.iterdir()) == ["ctbrain1.dcm", "ctbrain2.dcm"]
    assert not (study / "deid.audit").exists() and not (tmp_path / "deid.key").exists()


def test_a_scrub_that_publishes_nothing_leaves_no_new_key(logic, data_dir, tmp_path):
    """The module's DICOM scrub kept the key it made for a run that published nothing (an output
    that exists already), as `defacer scrub` does not: a key left behind looks like one that
    pseudonymised something."""
    files = sorted((data_dir / "dicom" / "fake_phi_ct").glob("*.dcm"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "earlier.dcm").write_bytes(b"an earlier output")
    with pytest.raises(OutputError, match="exists"):
        logic.scrub_dicom_files(files, tmp_path / "out", key_file=tmp_path / "keys" / "deid.key")
    assert not (tmp_path / "keys").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["earlier.dcm"]


def test_a_key_file_that_holds_no_key_is_not_left_open(logic, data_dir, tmp_path):
    """A scrub refused for a key file that holds no hex key left that file open (held) until
    Slicer closed: on Windows the user could not replace it with the right key."""
    files = sorted((data_dir / "dicom" / "fake_phi_ct").glob("*.dcm"))
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(b"not a key\n")
    with pytest.raises(InputError, match="does not hold a hex key"):
        logic.scrub_dicom_files(files, tmp_path / "out", key_file=key_file)
    assert not [fd for fd in Path("/proc/self/fd").iterdir() if fd.resolve() == key_file.resolve()]
    assert not (tmp_path / "out").exists()


def test_edited_label_map_is_not_served_from_the_cache(logic):
    """Masks are cached between 'Show feature boxes' and 'Apply'; an edit must invalidate them."""
    _volume, _labels, node, labels_node = phantom_nodes(logic)
    assert logic.feature_masks(node, labels_node)["nose"].sum() > 0
    edited = slicer.util.arrayFromVolume(labels_node)
    edited[edited == LABEL_VALUES["nose"]] = 0  # the user erases the nose label in place
    slicer.util.arrayFromVolumeModified(labels_node)
    assert logic.feature_masks(node, labels_node)["nose"].sum() == 0
    _output, report = logic.deface(node, labelsNode=labels_node)
    assert "nose" in report["features_missing"]


# ---- the modality a node's source states ---------------------------------------------------------
def test_a_pet_loaded_into_slicer_is_defaced_as_pet(logic, ixi_pairs, tmp_path, monkeypatch):
    """A node carries no modality: the module guessed it from the values alone, so a PET was taken
    for MR, its uptake brain was not protected and the cut reached 6 reference-brain voxels of
    IXI211's PET-like copy (0 through `defacer deface`). The DICOM Modality of the series it came
    from, or a name that says PET, now makes it PET, as a file's name does on the command line;
    where nothing says it, the values do (a core far hotter than the surface: io.modality)."""
    import nibabel as nib
    from evaluate_pet_like import pet_like_copy

    t1, brain_path = next((t1, brain) for t1, brain in ixi_pairs if t1.name.startswith("IXI211"))
    pet = read_volume(pet_like_copy(t1, brain_path, tmp_path / "IXI211_pet.nii.gz"))
    unnamed = logic.node_from_volume(pet, "Head")
    assert logic.stated_modality(unnamed) is None  # nothing says PET
    assert logic.volume_from_node(unnamed).modality == "PT"  # but the values: its brain is 4x its scalp
    # a stand-in for Slicer's DICOM database (the application's, not in slicer-core)
    database = type("Database", (), {"instanceValue": lambda self, uid, tag: "PT" if (uid, tag) == ("1.2.3", "0008,0060") else ""})
    monkeypatch.setattr(slicer, "dicomDatabase", database(), raising=False)
    unnamed.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")
    assert logic.stated_modality(unnamed) == "PT" and logic.volume_from_node(unnamed).modality == "PT"
    monkeypatch.setattr(slicer, "dicomDatabase", None, raising=False)
    # loaded from a file whose name says nothing, beside dcm2niix's sidecar stating the DICOM Modality
    loaded = logic.node_from_volume(pet, "scan")
    loaded.AddDefaultStorageNode()
    loaded.GetStorageNode().SetFileName(str(tmp_path / "scan.nii.gz"))
    assert logic.stated_modality(loaded) is None
    (tmp_path / "scan.json").write_text('{"Modality": "PT", "ConversionSoftware": "dcm2niix"}')
    assert logic.stated_modality(loaded) == "PT" and logic.volume_from_node(loaded).modality == "PT"
    node = logic.node_from_volume(pet, "IXI211_pet")  # Slicer names a loaded file's node after it
    assert logic.volume_from_node(node).modality == "PT"
    output, report = logic.deface(node)
    changed = kji(output) != kji(node)
    brain = np.asarray(nib.load(brain_path).dataobj) > 0
    assert changed.sum() > 80_000 and int((changed & brain.transpose(2, 1, 0)).sum()) == 0
