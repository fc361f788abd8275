"""Edge cases of the Slicer module met in real use: parent transforms, label maps and boxes that do
not match the head, segmentations, boxes moved away, the batch script's unwritable output.

Real MRML nodes (slicer-core), a real IXI head through the shipped model, the phantom where
feature labels are needed. Skipped without slicer-core, as the other test_slicer_* files.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _slicer_for_tests import slicer_core

REPO = Path(__file__).resolve().parents[1]
slicer = slicer_core()

import vtk  # noqa: E402

from DeFacerLib.errors import InputError, UsageError  # noqa: E402
from DeFacerLib.io import read_volume  # noqa: E402
from DeFacerLib.phantom import make_phantom  # noqa: E402
from DeFacerLogicLib.logic import matrix_to_numpy  # noqa: E402
from test_slicer_logic import logic, scene  # noqa: E402,F401 (fixtures)
from test_slicer_widget_standins import load_phantom, module, volume_names, widget  # noqa: E402,F401 (fixtures)

IXI = "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"
SHIFT_R_MM, TURN_DEG = 50.0, 20.0


def linear_transform(scene, name="Registration"):
    """A rigid parent transform: 50 mm to the right, turned 20 degrees about S."""
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    transform = vtk.vtkTransform()
    transform.Translate(SHIFT_R_MM, 0, 0)
    transform.RotateZ(TURN_DEG)
    node.SetMatrixTransformToParent(transform.GetMatrix())
    return node, matrix_to_numpy(transform.GetMatrix())


def phantom_nodes(logic):
    volume, labels = make_phantom(orientation="PSR")
    node = logic.node_from_volume(volume, "Phantom head")
    labels_node = logic.node_from_volume(volume.label_map(labels), "Phantom labels", nodeClass="vtkMRMLLabelMapVolumeNode")
    return node, labels_node


def volume_count(scene) -> int:
    return scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems()


# ---- a head under a parent transform -----------------------------------------------------------
def test_boxes_landmarks_and_skin_are_drawn_where_a_transformed_head_is(logic, scene, data_dir):
    """A registered head (under a linear transform) on a real IXI head through the model: the boxes,
    the landmark points and the skin models follow the transform, and the unchanged boxes still
    reproduce the engine's removal voxel for voxel."""
    node = logic.node_from_volume(read_volume(data_dir / IXI), "Head")
    engine_output, _ = logic.deface(node)
    transform, to_world = linear_transform(scene)
    node.SetAndObserveTransformNodeID(transform.GetID())
    _none, report = logic.deface(node, preview=True)
    rois = logic.feature_rois(node, report)
    points = logic.landmark_points(node, report)
    skin = logic.skin_model(node)
    assert len(rois) == 6
    for created in [*rois, points, skin]:
        assert created.GetTransformNodeID() == transform.GetID(), created.GetName()
    for roi in rois:  # the world centre is the local box centre moved by the transform
        local, world = np.array(roi.GetCenter()), np.zeros(3)
        roi.GetCenterWorld(world)
        assert np.allclose(world, to_world[:3, :3] @ local + to_world[:3, 3], atol=1e-6)
        assert np.linalg.norm(world - local) > 10.0  # 50 mm shift, 20 degree turn: 17.8 mm for the nearest
    from_rois, roi_report = logic.deface(node, roiNodes=rois)
    assert roi_report["boxes_from"] == "rois" and from_rois.GetTransformNodeID() == transform.GetID()
    assert np.array_equal(slicer.util.arrayFromVolume(from_rois), slicer.util.arrayFromVolume(engine_output))


def test_a_box_moved_with_the_head_removes_the_same_voxels(logic, scene):
    """Boxes in world space (not under the transform) placed where the transformed head shows its
    features remove what the boxes under the transform remove."""
    node, labels_node = phantom_nodes(logic)
    transform, to_world = linear_transform(scene)
    node.SetAndObserveTransformNodeID(transform.GetID())
    labels_node.SetAndObserveTransformNodeID(transform.GetID())
    _none, report = logic.deface(node, labelsNode=labels_node, preview=True)
    rois = logic.feature_rois(node, report)
    under, _ = logic.deface(node, labelsNode=labels_node, roiNodes=rois)
    world = vtk.vtkTransform()
    world.SetMatrix(transform.GetMatrixTransformToParent())
    for roi in rois:  # the user hardens the transform on the boxes: same place in the world
        roi.ApplyTransform(world)
        roi.SetAndObserveTransformNodeID(None)
    hardened, _ = logic.deface(node, labelsNode=labels_node, roiNodes=rois)
    assert int((slicer.util.arrayFromVolume(hardened) != slicer.util.arrayFromVolume(under)).sum()) == 0
    assert int((slicer.util.arrayFromVolume(under) != slicer.util.arrayFromVolume(node)).sum()) > 1000


def test_a_non_linear_transform_between_boxes_and_head_is_refused_in_one_line(logic, scene):
    node, labels_node = phantom_nodes(logic)
    _none, report = logic.deface(node, labelsNode=labels_node, preview=True)
    rois = logic.feature_rois(node, report)
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "Warp")
    rois[0].SetAndObserveTransformNodeID(grid.GetID())
    before = volume_count(scene)
    with pytest.raises(UsageError, match="non-linear transform.*harden"):
        logic.deface(node, labelsNode=labels_node, roiNodes=rois)
    assert volume_count(scene) == before
    reference, _ = logic.deface(node, labelsNode=labels_node)
    for transformable in (node, labels_node):  # all under the same warp: nothing lies between them
        transformable.SetAndObserveTransformNodeID(grid.GetID())
    rois = logic.feature_rois(node, logic.deface(node, labelsNode=labels_node, preview=True)[1])
    assert {roi.GetTransformNodeID() for roi in rois} == {grid.GetID()}
    warped, _ = logic.deface(node, labelsNode=labels_node, roiNodes=rois)
    assert warped.GetTransformNodeID() == grid.GetID()
    assert np.array_equal(slicer.util.arrayFromVolume(warped), slicer.util.arrayFromVolume(reference))


def test_unchanged_model_boxes_remove_the_eyes_core_too(logic, data_dir):
    """'Show feature boxes' then Apply on a real head through the model removes what Apply alone
    removes. Before: the boxes path dropped the eye landmarks, so the back of the globes (the
    eyes' core) stayed: 1015 fewer eye voxels on IXI162 (22240 of 23255)."""
    node = logic.node_from_volume(read_volume(data_dir / IXI), "Head")
    engine_output, report = logic.deface(node, whole_face=False)
    rois = logic.feature_rois(node, report)
    from_rois, roi_report = logic.deface(node, roiNodes=rois, whole_face=False)
    assert roi_report["features"]["eyes"]["voxels_removed"] == report["features"]["eyes"]["voxels_removed"] > 20_000
    assert np.array_equal(slicer.util.arrayFromVolume(from_rois), slicer.util.arrayFromVolume(engine_output))
    for roi in [r for r in rois if r.GetAttribute("DeFacer.Feature") == "eyes"]:
        logic.scene.RemoveNode(roi)  # eye boxes deleted: the eyes are kept, core included
    kept, kept_report = logic.deface(node, roiNodes=logic.rois_of(node), whole_face=False)
    assert kept_report["features_missing"] == ["eyes"] and kept_report["features"]["eyes"]["voxels_removed"] == 0


# ---- label maps and segmentations ---------------------------------------------------------------
def test_label_map_under_another_transform_is_refused(logic, scene):
    """Before: the labels were used in their own grid, 30 mm away from where Slicer shows them."""
    node, labels_node = phantom_nodes(logic)
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, 30.0)
    shift.SetMatrixTransformToParent(matrix)
    labels_node.SetAndObserveTransformNodeID(shift.GetID())
    before = volume_count(scene)
    with pytest.raises(InputError, match="under another transform"):
        logic.deface(node, labelsNode=labels_node)
    assert volume_count(scene) == before
    node.SetAndObserveTransformNodeID(shift.GetID())  # both under it: they match again
    output, report = logic.deface(node, labelsNode=labels_node)
    assert sorted(report["features_removed"]) == ["ears", "eyes", "mouth", "nose"]


def test_segmentation_node_as_labels_says_what_to_do(logic, scene):
    node, _labels = phantom_nodes(logic)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Face segments")
    with pytest.raises(UsageError, match="is a segmentation, not a label map volume.*Export to label map"):
        logic.deface(node, labelsNode=segmentation)


# ---- boxes the user moved, emptied or never had ----------------------------------------------------
@pytest.mark.parametrize("edit", ["moved_outside", "zero_size"])
def test_a_box_holding_no_voxel_is_refused_not_reported_missing(logic, scene, edit):
    """Before: the nose was kept and the status said 'not found: nose'; with every box moved away
    an unchanged copy was added, marked DeFacer.Defaced."""
    node, labels_node = phantom_nodes(logic)
    _none, report = logic.deface(node, labelsNode=labels_node, preview=True)
    rois = logic.feature_rois(node, report)
    nose = next(roi for roi in rois if roi.GetName() == "DeFacer nose")
    if edit == "moved_outside":
        nose.SetCenter(1000.0, 1000.0, 1000.0)
    else:
        nose.SetSize(0.0, 0.0, 0.0)
    before = volume_count(scene)
    with pytest.raises(UsageError, match="'DeFacer nose' holds no voxel.*delete it to keep the nose"):
        logic.deface(node, labelsNode=labels_node, roiNodes=rois)
    assert volume_count(scene) == before
    scene.RemoveNode(nose)  # deleting the box is how the nose is kept
    output, report = logic.deface(node, labelsNode=labels_node, roiNodes=logic.rois_of(node), whole_face=False)
    assert report["features_missing"] == ["nose"] and report["features"]["eyes"]["voxels_removed"] > 0


def test_features_checked_after_showing_the_boxes_are_not_silently_kept(logic, scene):
    """Boxes shown for eyes and nose, then mouth and ears checked: before, Apply kept both and
    reported them 'not found'."""
    node, labels_node = phantom_nodes(logic)
    _none, report = logic.deface(node, labelsNode=labels_node, features=("eyes", "nose"), preview=True)
    rois = logic.feature_rois(node, report)
    assert sorted(roi.GetName() for roi in rois) == ["DeFacer eyes 1", "DeFacer eyes 2", "DeFacer nose"]
    with pytest.raises(UsageError, match="boxes shown are for eyes, nose only.*remove mouth, ears too"):
        logic.deface(node, labelsNode=labels_node, roiNodes=rois)
    output, report = logic.deface(node, labelsNode=labels_node, features=("eyes", "nose"), roiNodes=rois)
    assert report["features_removed"] == ["eyes", "nose"] and report["features_missing"] == []


def test_widget_shows_the_late_checked_feature_error_once(module, widget):
    """Through the widget stand-ins: one error dialog with the one-line reason, no output added."""
    load_phantom(module, widget)
    widget._parameterNode.removeEars = False
    widget.ui.findFeaturesButton.emit("clicked(bool)")
    widget._parameterNode.removeEars = True
    widget.ui.applyButton.emit("clicked(bool)")
    (title, error), = module.util.errors
    assert title == "Failed to deface the volume." and "remove ears too" in str(error)
    assert widget._parameterNode.outputVolume is None
    assert volume_names(module.slicer.mrmlScene) == ["Phantom head", "labels"]
    assert widget.ui.applyButton.enabled is True and widget.ui.progressBar.visible is False


# ---- the batch script ----------------------------------------------------------------------------
def test_batch_output_that_is_a_file_exits_4_in_one_line(tmp_path):
    """Before: a FileExistsError traceback (inside Slicer the application then kept running)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").write_text("a file, not a folder")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "slicer_batch_deface.py"), "--input",
                          str(tmp_path / "in"), "--output", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 4, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert "cannot create the output folder" in run.stdout + run.stderr
    assert (tmp_path / "out").read_text() == "a file, not a folder"


def test_a_protect_margin_that_keeps_the_whole_face_is_refused_and_adds_nothing(logic, scene):
    """A feature found but not one voxel of it removed (all within the protect margin): the
    engine's guarantee now refuses it in the pipeline, so the module (which calls the pipeline,
    not the CLI's workflow) no longer adds an 'output' that is the face unchanged."""
    from DeFacerLib.errors import GuaranteeError

    node, labels_node = phantom_nodes(logic)
    before = volume_count(scene)
    with pytest.raises(GuaranteeError, match="no voxel of the"):
        logic.deface(node, labelsNode=labels_node, protect_margin_mm=1000.0)
    assert volume_count(scene) == before
