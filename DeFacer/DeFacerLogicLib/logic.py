"""The DeFacer Logic on MRML nodes: node <-> Volume, deface, feature ROIs, QA, DICOM scrub.

Every computation is a DeFacerLib call; this file only moves data between MRML nodes and
DeFacerLib's ``Volume`` (RAS <-> LPS, (k, j, i) <-> (i, j, k) as views) and names what it
creates so that a saved scene carries no patient information.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import vtk

import slicer

from DeFacerLib import slicer_convert
from DeFacerLib.errors import InputError, OutputError, UsageError
from DeFacerLib.features import BRAIN, FEATURES
from DeFacerLib.volume import Volume

Progress = Callable[[str, float], None]

OUTPUT_BASE_NAME = "Defaced volume"
ROI_BASE_NAME = "DeFacer"
SKIN_BASE_NAME = "DeFacer skin"
LANDMARKS_BASE_NAME = "DeFacer landmarks"
# Node attributes DeFacer writes (never the input's own attributes: they may name the patient).
ATTR_DEFACED = "DeFacer.Defaced"
ATTR_FEATURES = "DeFacer.FeaturesRemoved"
ATTR_REPORT = "DeFacer.Report"
ATTR_FEATURE = "DeFacer.Feature"  # on ROI nodes: which feature the box is for
ATTR_SOURCE_ID = "DeFacer.SourceVolumeID"  # on ROI/model/point nodes: the node ID they belong to
ATTR_SHOWN_FOR = "DeFacer.BoxesShownFor"  # on ROI nodes: the features 'Show feature boxes' was run for
ATTR_LANDMARKS = "DeFacer.Landmarks"  # on the point list of where the model found the features
ATTR_MODALITY = "DeFacer.Modality"  # optional override on an input node: MR, CT, PT, OT
PAIRED = ("eyes", "ears")  # as removal.PAIRED_FEATURES: two boxes allowed


class DefaceCancelled(Exception):
    """Raised by a progress callback to stop a running deface; nothing is added to the scene."""


def _no_progress(message: str, fraction: float) -> None:
    return None


def transform_between(fromNode, toNode) -> np.ndarray:
    """4x4 matrix from ``fromNode``'s frame (its parent transform's space) to ``toNode``'s: the
    identity when both are under the same transform. Raises UsageError where a non-linear transform
    lies between them: voxels and boxes are compared in one linear frame."""
    matrix = vtk.vtkMatrix4x4()
    parents = [node.GetParentTransformNode() if node is not None else None for node in (fromNode, toNode)]
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(parents[0], parents[1], matrix):
        names = " and ".join(f"'{node.GetName()}'" for node in (fromNode, toNode) if node is not None)
        raise UsageError(f"a non-linear transform lies between {names}: harden it (Data module, right-click, "
                         "Harden transform) or put them under the same transform")
    return matrix_to_numpy(matrix)


def matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


class DeFacerLogic:
    """Headless DeFacer logic on ``scene`` (Slicer's own scene by default)."""

    def __init__(self, scene=None):
        self.scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
        if self.scene is None:
            raise RuntimeError("DeFacerLogic needs an MRML scene: pass scene=slicer.vtkMRMLScene()")
        self._mask_cache: dict[tuple, dict[str, np.ndarray]] = {}

    # ---- node <-> Volume ------------------------------------------------------------------
    def volume_from_node(self, volumeNode, modality: str | None = None) -> Volume:
        """The node's voxels as a Volume (array is a view of the node's memory, axes i, j, k)."""
        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError("select a scalar volume (a head MRI, CT or PET) as input")
        image = volumeNode.GetImageData()
        if image is None:
            raise InputError(f"volume '{volumeNode.GetName()}' has no voxels")
        try:
            array = slicer_convert.ijk_from_vtk_image(image)
        except ValueError as error:
            raise InputError(f"volume '{volumeNode.GetName()}': {error}") from None
        # Spacing, origin and directions as the node stores them (not re-derived from IJKToRAS:
        # a spacing of 2.0000000000000004 would move voxels across the engine's mm thresholds).
        directions = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASDirectionMatrix(directions)
        spacing, origin, direction = slicer_convert.geometry_from_slicer(
            volumeNode.GetSpacing(), volumeNode.GetOrigin(), matrix_to_numpy(directions)[:3, :3])
        volume = Volume(array, spacing, origin, direction, modality="OT")
        chosen = modality or volumeNode.GetAttribute(ATTR_MODALITY) or self.stated_modality(volumeNode)
        if chosen is None:
            from DeFacerLib.io.modality import guess_modality

            chosen = guess_modality(volume)
        volume.modality = chosen
        return volume

    def stated_modality(self, volumeNode) -> str | None:
        """The modality the node's source states: the DICOM Modality of the series it was loaded
        from (Slicer's DICOM database), else its file's JSON sidecar (dcm2niix's "Modality"), else a
        name that says it (its file's, or its own, as "sub-01_pet"), as the command line reads a
        file. A PET loaded into Slicer was taken for MR: its brain was not protected as a PET's,
        and its QA rendered the brain, not the face."""
        from DeFacerLib.io.modality import stated_modality

        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        database = getattr(slicer, "dicomDatabase", None)
        tag = database.instanceValue(uids[0], "0008,0060") if uids and database is not None else None
        storage = volumeNode.GetStorageNode()
        file_name = storage.GetFileName() if storage is not None else None
        return stated_modality(tag, file_name, other_names=(volumeNode.GetName(),))

    def node_from_volume(self, volume: Volume, name: str, node=None, nodeClass: str = "vtkMRMLScalarVolumeNode"):
        """Put ``volume`` into a (new or given) volume node: real-world values, RAS geometry.

        Stored values are kept when the file has no scaling (the usual case); otherwise the
        node gets float32 physical values, as Slicer's own readers do.
        """
        if volume.array.ndim != 3:
            raise InputError(f"{name}: only 3D volumes can be shown in Slicer (got {volume.array.ndim}D)")
        values = volume.array if (volume.slope == 1.0 and volume.intercept == 0.0) else volume.physical()
        if node is None:
            node = self.scene.AddNewNodeByClass(nodeClass, name)
        spacing, origin_ras, directions_ras = slicer_convert.slicer_geometry(volume)
        directions = np.eye(4)
        directions[:3, :3] = directions_ras
        node.SetSpacing(*spacing)
        node.SetOrigin(*origin_ras)
        node.SetIJKToRASDirectionMatrix(numpy_to_matrix(directions))
        node.SetAndObserveImageData(slicer_convert.vtk_image_from_ijk(values))
        return node

    def new_output_node(self, base_name: str = OUTPUT_BASE_NAME):
        """A new empty volume node named '<base_name> N' (never after the patient or the input)."""
        taken = {self.scene.GetNthNode(i).GetName() for i in range(self.scene.GetNumberOfNodes())}
        number = 1
        while f"{base_name} {number}" in taken:
            number += 1
        return self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{base_name} {number}")

    # ---- feature masks ----------------------------------------------------------------------
    def feature_masks(self, volumeNode, labelsNode=None, volume: Volume | None = None,
                      progress: Progress = _no_progress) -> dict[str, np.ndarray]:
        """Masks of the features and the brain: from ``labelsNode`` (values as in
        DeFacerLib.features.LABEL_VALUES) or found automatically by DeFacerLib's model."""
        return self._features(volumeNode, labelsNode, volume, progress)["masks"]

    def _features(self, volumeNode, labelsNode, volume: Volume | None, progress: Progress) -> dict:
        """{"masks", "guard" (the model's frontal guard or None), "head" (or None), "found" (model output or None)},
        computed once per (volume, labels) content: 'Show feature boxes' then 'Apply' run the model once."""
        volume = volume if volume is not None else self.volume_from_node(volumeNode)
        if labelsNode is not None:
            _check_labels_node(labelsNode, volumeNode)
        key = (volumeNode.GetID(), _content_stamp(volumeNode),
               labelsNode.GetID() if labelsNode else None, _content_stamp(labelsNode))
        if key in self._mask_cache:
            return self._mask_cache[key]
        if labelsNode is not None:
            from DeFacerLib.deface.pipeline import masks_from_labels, protect_unlabelled_brain

            labels = self.volume_from_node(labelsNode, modality="OT")
            masks = masks_from_labels(labels, volume, label_name=f"label map '{labelsNode.GetName()}'")
            try:  # no brain label (5): the model's brain protects it
                head, guard, brain_report = protect_unlabelled_brain(volume, masks, progress)
            except ImportError as error:
                raise UsageError(f"a label map without a brain label (5) is protected by the face model's brain, which "
                                 f"needs the package {error.name or 'onnxruntime'}: install it, or add the brain label") from None
            features = {"masks": masks, "guard": guard, "head": head, "found": None, "brain_from_model": brain_report}
        else:
            features = self._find_features(volume, progress)
        self._mask_cache = {key: features}  # one entry: masks are as large as the volume
        return features

    @staticmethod
    def _find_features(volume: Volume, progress: Progress) -> dict:
        """The model's masks and its frontal guard, exactly as deface_file uses them."""
        from DeFacerLib.deface import pipeline

        find_features = getattr(pipeline, "find_features", None)
        if find_features is None:
            raise UsageError("automatic feature finding is not available in this DeFacer version; "
                             "select a feature label map (1 eyes, 2 nose, 3 mouth, 4 ears, 5 brain)")
        from DeFacerLib.deface import head_mask

        progress("finding the head", 0.05)
        head = head_mask(volume)
        try:
            found = find_features(volume, head=head, progress=progress)
        except ImportError as error:
            raise UsageError(f"automatic feature finding needs the package {error.name or 'onnxruntime'}: "
                             "install it, or select a feature label map") from None
        except UsageError as error:  # e.g. no model in this installation: say what works in Slicer
            raise UsageError(f"{error}; or select a feature label map (1 eyes, 2 nose, 3 mouth, 4 ears, 5 brain)") from None
        pipeline.require_face(found, "this volume")  # the rule defacer deface applies
        return {"masks": dict(found.masks), "guard": found.guard, "head": head, "found": found}

    # ---- ROIs -----------------------------------------------------------------------------
    def feature_rois(self, volumeNode, report: dict, volume: Volume | None = None) -> list:
        """One vtkMRMLMarkupsROINode per feature box of ``report`` (two for eyes/ears when the
        engine found two), in RAS, along the volume's axes; replaces this volume's old ROIs.

        Unchanged ROIs reproduce the engine's boxes voxel for voxel (see ``deface``'s
        ``roiNodes``); the user may move and resize them before applying.
        """
        volume = volume if volume is not None else self.volume_from_node(volumeNode)
        self.remove_feature_rois(volumeNode)
        shown_for = [*report.get("features_removed", []), *report.get("features_missing", [])] or FEATURES
        rois = []
        for feature in FEATURES:
            item = report.get("features", {}).get(feature)
            if not item or not item.get("present"):
                continue
            boxes = item.get("component_boxes") or [(item["box_index_min"], item["box_index_max"])]
            for number, (lo, hi) in enumerate(boxes, start=1):
                centre, size, axes = slicer_convert.index_box_to_roi(volume, lo, hi)
                name = f"{ROI_BASE_NAME} {feature}" + (f" {number}" if len(boxes) > 1 else "")
                roi = self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
                object_to_node = np.eye(4)
                object_to_node[:3, :3] = axes
                object_to_node[:3, 3] = centre
                roi.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(object_to_node))
                roi.SetCenter(*centre)
                roi.SetSize(*size)
                roi.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())  # drawn where the head is shown
                roi.SetAttribute(ATTR_FEATURE, feature)
                roi.SetAttribute(ATTR_SOURCE_ID, volumeNode.GetID())
                roi.SetAttribute(ATTR_SHOWN_FOR, ",".join(shown_for))
                rois.append(roi)
        return rois

    def landmark_points(self, volumeNode, report: dict):
        """A point list 'DeFacer landmarks <volume>' with where the model found each feature
        (report["segmentation"]["landmarks_mm"], LPS -> RAS), each point named after its
        landmark ("by model" where it was not snapped to the anatomy); replaces this volume's
        old list. None when the features came from a label map."""
        landmarks = report.get("segmentation", {}).get("landmarks_mm") or {}
        for node in self.landmark_nodes_of(volumeNode):
            self.scene.RemoveNode(node)
        if not landmarks:
            return None
        points = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{LANDMARKS_BASE_NAME} {volumeNode.GetName()}")
        points.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        points.SetAttribute(ATTR_SOURCE_ID, volumeNode.GetID())
        points.SetAttribute(ATTR_LANDMARKS, "true")
        for name, point in landmarks.items():
            label = name if point.get("by") == "anatomy" else f"{name} (by model)"
            points.AddControlPoint(*(float(v) for v in slicer_convert.lps_to_ras(point["mm"])), label)
        points.SetLocked(True)
        return points

    def landmark_nodes_of(self, volumeNode) -> list:
        nodes = self.scene.GetNodesByClass("vtkMRMLMarkupsFiducialNode")
        return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())
                if nodes.GetItemAsObject(i).GetAttribute(ATTR_LANDMARKS)
                and nodes.GetItemAsObject(i).GetAttribute(ATTR_SOURCE_ID) == volumeNode.GetID()]

    def rois_of(self, volumeNode) -> list:
        nodes = self.scene.GetNodesByClass("vtkMRMLMarkupsROINode")
        found = []
        for i in range(nodes.GetNumberOfItems()):
            roi = nodes.GetItemAsObject(i)
            if roi.GetAttribute(ATTR_FEATURE) and roi.GetAttribute(ATTR_SOURCE_ID) == volumeNode.GetID():
                found.append(roi)
        return found

    def remove_feature_rois(self, volumeNode) -> None:
        for roi in self.rois_of(volumeNode):
            self.scene.RemoveNode(roi)

    def masks_from_rois(self, volume: Volume, roiNodes: Iterable, features: Iterable[str],
                        volumeNode=None) -> dict[str, np.ndarray]:
        """Feature masks = voxels inside each feature's ROI(s), for the chosen features.

        Each box is taken where it is drawn: from the ROI's frame into ``volumeNode``'s (its parent
        transform's space; world without a node). A box that holds no voxel of the volume is
        refused: the user meant to remove something there (deleting a box keeps the feature)."""
        masks: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for roi in roiNodes:
            feature = roi.GetAttribute(ATTR_FEATURE)
            if feature not in features:
                continue
            counts[feature] = counts.get(feature, 0) + 1
            allowed = 2 if feature in PAIRED else 1
            if counts[feature] > allowed:
                raise UsageError(f"{counts[feature]} boxes for {feature}; at most {allowed}: delete the extra ROI")
            mask = slicer_convert.roi_mask(volume, *_roi_box_in_frame_of(roi, volumeNode))
            if not mask.any():
                raise UsageError(f"the box '{roi.GetName()}' holds no voxel of the volume (moved outside it or "
                                 f"resized to nothing): move it back, or delete it to keep the {feature}")
            masks[feature] = masks[feature] | mask if feature in masks else mask
        return masks

    # ---- deface -------------------------------------------------------------------------------
    def deface(self, volumeNode, features: Iterable[str] = FEATURES, margin_mm: float | None = None,
               max_depth_mm: float | None = None, labelsNode=None, progress: Progress | None = None, *,
               protect_margin_mm: float | None = None, roiNodes: Iterable | None = None, outputNode=None,
               overwrite_input: bool = False, preview: bool = False, whole_face: bool | None = None,
               seal_mm: float | None = None, shield: bool | None = None):
        """Deface ``volumeNode``; returns (output node, report dict).

        Features come from ``labelsNode`` or the model; with ``roiNodes`` the (possibly
        adjusted) ROI boxes ARE the removal boxes (no extra margin) and the brain still comes
        from the labels/model. The output is a new node 'Defaced volume N' unless
        ``outputNode`` is given; the input itself only with ``overwrite_input=True``.
        ``preview=True`` runs everything but adds no output (for ``feature_rois``).
        ``whole_face``: also the tissue spanning the eyes, nose and mouth boxes (shown or
        adjusted ones included) and the chin; None is the engine's default (on). ``seal_mm``,
        ``shield``: as `defacer deface --seal-mm`, `--shield` (None: the engine's default).
        """
        from DeFacerLib.deface.pipeline import DefaceParameters, deface_volume, segmentation_report

        progress = progress or _no_progress
        rois = list(roiNodes) if roiNodes is not None else None
        # checked before any work (features known and at least one, a shield placeable: the model ran
        # first); the ROI is the box, its margin already drawn
        parameters = DefaceParameters(features=features, margin_mm=0.0 if rois is not None else margin_mm,
                                      max_depth_mm=max_depth_mm, protect_margin_mm=protect_margin_mm,
                                      whole_face=whole_face, seal_mm=seal_mm, shield=shield)
        features = parameters.features
        if outputNode is not None and volumeNode is not None and outputNode.GetID() == volumeNode.GetID() \
                and not overwrite_input:
            raise UsageError("the output is the input volume; choose another output (DeFacer never overwrites "
                             "the input unless asked to)")
        volume = self.volume_from_node(volumeNode)
        progress("finding features", 0.05)
        features_found = self._features(volumeNode, labelsNode, volume,
                                        lambda message, fraction: progress(message, 0.05 + 0.25 * fraction))
        masks = features_found["masks"]
        if rois is not None:
            _check_boxes_cover(rois, features)
            box_masks = self.masks_from_rois(volume, rois, features, volumeNode=volumeNode)
            masks = {**{k: v for k, v in masks.items() if k == BRAIN}, **box_masks}
        found = features_found["found"]
        # the model's eye centres give the eyes' core (the back of the globe, removed at any depth,
        # clipped to the eye boxes): kept with the user's boxes too, unless the eye boxes were deleted
        use_landmarks = found is not None and (rois is None or "eyes" in masks)
        result = deface_volume(volume, masks, parameters=parameters, guard=features_found["guard"],
                               head=features_found["head"],
                               landmarks=found.landmarks if use_landmarks else None,
                               progress=lambda message, fraction: progress(message, 0.3 + 0.6 * fraction))
        report = dict(result.report)
        if found is not None:  # as deface_file reports it
            report["segmentation"] = segmentation_report(found)
        if features_found.get("brain_from_model"):
            report["brain_from_model"] = features_found["brain_from_model"]
        report["features_removed"] = list(result.features_removed)
        report["features_missing"] = list(result.features_missing)
        report["boxes_from"] = "rois" if rois is not None else ("labels" if labelsNode is not None else "model")
        if preview:
            progress("done", 1.0)
            return None, report
        progress("creating the output volume", 0.95)
        if outputNode is None:
            outputNode = self.new_output_node()
        self.node_from_volume(result.volume, outputNode.GetName(), node=outputNode)
        outputNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        outputNode.SetAttribute(ATTR_DEFACED, "true")
        outputNode.SetAttribute(ATTR_FEATURES, ",".join(result.features_removed))
        outputNode.SetAttribute(ATTR_REPORT, json.dumps(_scene_report(report), sort_keys=True))
        progress("done", 1.0)
        return outputNode, report

    def deface_file(self, input_path, output_path, *, features: Iterable[str] = FEATURES,
                    margin_mm: float | None = None, max_depth_mm: float | None = None,
                    protect_margin_mm: float | None = None, labels_path=None, qa_dir=None,
                    overwrite: bool = False, dicom_options=None, key_file=None,
                    progress: Progress | None = None, whole_face: bool | None = None,
                    seal_mm: float | None = None, shield: bool | None = None) -> dict:
        """File in, file out: exactly DeFacerLib.deface.workflow.deface_file (the CLI's path)."""
        from DeFacerLib.deface.pipeline import DefaceParameters
        from DeFacerLib.deface.workflow import deface_file

        parameters = DefaceParameters(features=features, margin_mm=margin_mm, max_depth_mm=max_depth_mm,
                                      protect_margin_mm=protect_margin_mm, whole_face=whole_face, seal_mm=seal_mm,
                                      shield=shield)
        from DeFacerLib.dicom.uids import release_held_keys

        try:
            return deface_file(input_path, output_path, parameters=parameters, labels_path=labels_path,
                               qa_dir=qa_dir, overwrite=overwrite, dicom_options=dicom_options, key_file=key_file,
                               progress=progress or _no_progress)
        finally:
            release_held_keys()  # a DICOM input's key: Slicer runs on, the key file is not left open

    # ---- QA -------------------------------------------------------------------------------------
    def skin_model(self, volumeNode, name: str | None = None, modelNode=None):
        """The skin surface of ``volumeNode`` as a model node (RAS), for the before/after 3D view."""
        from DeFacerLib.qa import skin_surface

        surface_lps = skin_surface(self.volume_from_node(volumeNode))
        flip = vtk.vtkTransform()
        flip.Scale(-1.0, -1.0, 1.0)  # LPS -> RAS
        to_ras = vtk.vtkTransformPolyDataFilter()
        to_ras.SetTransform(flip)
        to_ras.SetInputData(surface_lps)
        to_ras.Update()
        if modelNode is None:
            modelNode = self.scene.AddNewNodeByClass("vtkMRMLModelNode", name or f"{SKIN_BASE_NAME} {volumeNode.GetName()}")
        modelNode.SetAndObservePolyData(to_ras.GetOutput())
        modelNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        modelNode.SetAttribute(ATTR_SOURCE_ID, volumeNode.GetID())
        return modelNode

    def check_reidentification(self, volumeNode, views=("front", "front_left", "front_right"),
                               score_threshold: float | None = None) -> dict:
        """Render the skin from ``views`` offscreen and count the faces YuNet finds in each, at
        the score `defacer qa` and the batch QA count as a face (FACE_PRESENT_SCORE) unless given.

        ``faces_found == 0`` is the pass verdict: no face detector sees a face any more.
        """
        from DeFacerLib.qa import detect_faces_yunet, render_views
        from DeFacerLib.qa.recognize import FACE_PRESENT_SCORE

        score_threshold = FACE_PRESENT_SCORE if score_threshold is None else score_threshold

        images = render_views(self.volume_from_node(volumeNode), views=views)
        per_view = {view: len(detect_faces_yunet(image, score_threshold)) for view, image in images.items()}
        found = sum(per_view.values())
        return {"views": per_view, "faces_found": found,
                "verdict": "no face detected" if found == 0 else f"face detected in {sum(1 for n in per_view.values() if n)} view(s)"}

    def save_qa_screenshots(self, beforeNode, afterNode, directory, stem: str = "defacer_qa",
                            views=("front", "left", "right", "front_left", "front_right")) -> list[Path]:
        """Offscreen skin renders of before and after from fixed angles (PNG per view) and one
        before/after figure; names carry ``stem`` only, never a node or patient name."""
        from DeFacerLib.qa import before_after_figure, render_before_after, save_png

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        before, after = render_before_after(self.volume_from_node(beforeNode), self.volume_from_node(afterNode),
                                            views=views)
        written = []
        for view in views:
            written.append(save_png(before[view], directory / f"{stem}_before_{view}.png"))
            written.append(save_png(after[view], directory / f"{stem}_after_{view}.png"))
        figure = directory / f"{stem}_before_after.png"
        before_after_figure(before, after, figure, title=f"{stem}: before (top) and after (bottom)")
        written.append(figure)
        return written

    # ---- DICOM ----------------------------------------------------------------------------------
    def anonymize_photo(self, input_path, output_path, method: str | None = None, overwrite: bool = False) -> dict:
        """Hide the faces in a photo, a DICOM photo, a folder of photos or a video: exactly
        `defacer photo INPUT -o OUTPUT --method METHOD` (DeFacerLib.photo.anonymize_path)."""
        from DeFacerLib.photo.anonymize import PhotoOptions, anonymize_path, summarize

        options = PhotoOptions() if method is None else PhotoOptions(method=method)
        return summarize(anonymize_path(input_path, output_path, options, overwrite=overwrite), input_path)

    def scrub_dicom_files(self, files: Iterable, output_dir, options=None, key_file=None,
                          progress: Callable[[int, int], None] | None = None) -> dict:
        """De-identify the given DICOM files (e.g. a loaded study's) into ``output_dir`` with
        DeFacerLib.dicom.tree.scrub_with_key_file, as `defacer scrub` (PS3.15 Basic profile +
        ``options``); audit trail beside it."""
        from DeFacerLib.dicom import ProfileOptions
        from DeFacerLib.dicom.tree import scrub_with_key_file
        from DeFacerLib.dicom.uids import release_held_keys

        files = [Path(f) for f in files]
        if not files:
            raise InputError("no DICOM files to scrub: load a DICOM study first")
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{missing[0]} is missing ({len(missing)} of {len(files)} files); reload the study")
        from DeFacerLib.dicom.uids import refuse_key_inside
        from DeFacerLib.io.atomic import is_within

        for folder in sorted({f.parent for f in files}):  # scrub_tree sees only the staging copy as its input
            if is_within(output_dir, folder):
                raise OutputError(f"output {output_dir} is inside the folder of the study's files {folder}; choose a "
                                  "folder outside it (inputs are never modified)")
            refuse_key_inside(key_file, folder, output_dir)  # as `defacer scrub` refuses one inside its input
        try:
            with tempfile.TemporaryDirectory(prefix="defacer_study_") as staging:
                staging = Path(staging) / "study"
                staging.mkdir()
                for number, source in enumerate(files):
                    target = staging / source.name  # keep the names; number only clashing ones
                    if target.exists():
                        target = staging / f"{number:06d}_{source.name}"
                    try:
                        target.hardlink_to(source)
                    except OSError:
                        shutil.copy2(source, target)
                # the module shows sharing_warnings.for_scrub(summary), as the command line prints them
                return scrub_with_key_file(staging, output_dir, options or ProfileOptions(), key_file, progress=progress)
        finally:
            release_held_keys()  # Slicer runs on: the key file is not left open (Windows could not rotate it)


def _roi_box_in_frame_of(roi, volumeNode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, size mm, unit axes) of ``roi`` in ``volumeNode``'s frame (world when None)."""
    object_to_node = matrix_to_numpy(roi.GetObjectToNodeMatrix())
    size, centre = np.array(roi.GetSize(), dtype=float), np.array(roi.GetCenter(), dtype=float)
    if volumeNode is None:
        to_frame = matrix_to_numpy(roi.GetObjectToWorldMatrix()) @ np.linalg.inv(object_to_node)
    else:
        to_frame = transform_between(roi, volumeNode)
    linear = to_frame[:3, :3] @ object_to_node[:3, :3]
    scale = np.linalg.norm(linear, axis=0)
    centre_frame = to_frame[:3, :3] @ np.asarray(centre) + to_frame[:3, 3]
    return centre_frame, np.asarray(size) * scale, linear / np.where(scale > 0, scale, 1.0)[None, :]


def _check_boxes_cover(roiNodes: list, features: Iterable[str]) -> None:
    """Refuse features the shown boxes were not made for: without a box such a feature would be
    silently kept and reported 'not found' (a box deleted by the user keeps its feature, by design)."""
    shown = [roi.GetAttribute(ATTR_SHOWN_FOR) for roi in roiNodes]
    if not shown or any(value is None for value in shown):  # boxes made by hand or by an older version
        return
    shown_for = {name for value in shown for name in value.split(",") if name}
    missing = [name for name in features if name not in shown_for]
    if missing:
        raise UsageError(f"the boxes shown are for {', '.join(sorted(shown_for))} only: click 'Show feature boxes' "
                         f"again to remove {', '.join(missing)} too, or uncheck {'it' if len(missing) == 1 else 'them'}")


def _check_labels_node(labelsNode, volumeNode) -> None:
    """A label map volume, drawn where the head is: its voxels are matched to the head's in the
    nodes' own grids, so a transform between the two would move every feature."""
    if not labelsNode.IsA("vtkMRMLScalarVolumeNode"):
        kind = "a segmentation" if labelsNode.IsA("vtkMRMLSegmentationNode") else f"a {labelsNode.GetClassName()}"
        raise UsageError(f"'{labelsNode.GetName()}' is {kind}, not a label map volume: export it to a label map "
                         "with the input volume as reference (Segmentations module, Export to label map)")
    between = transform_between(labelsNode, volumeNode)
    if not np.allclose(between, np.eye(4), atol=1e-6):
        raise InputError(f"label map '{labelsNode.GetName()}' is under another transform than '{volumeNode.GetName()}': "
                         "put both under the same transform, or harden the transform and resample the labels onto the head")


def _content_stamp(node) -> tuple | None:
    """Changes whenever the node's voxels or geometry change (edits through arrayFromVolume
    modify the scalars array, not the image), so cached masks are never stale."""
    if node is None or node.GetImageData() is None:
        return None
    image = node.GetImageData()
    scalars = image.GetPointData().GetScalars()
    return (node.GetMTime(), image.GetMTime(), scalars.GetMTime() if scalars is not None else None)


def _scene_report(report: dict) -> dict:
    """The part of a report kept on the output node: counts and parameters, no file paths."""
    keep = ("features_removed", "features_missing", "total_removed", "protected_voxels",
            "protected_voxels_changed", "parameters", "boxes_from", "segmentation")
    summary = {name: report[name] for name in keep if name in report}
    summary["voxels_removed"] = {name: item.get("voxels_removed", 0)
                                 for name, item in report.get("features", {}).items()}
    return summary


logging.getLogger(__name__).addHandler(logging.NullHandler())
