"""The module Widget's wiring, with hand-written STAND-INS for the Slicer application.

3D Slicer cannot run here. These tests load the real DeFacer/DeFacer.py with stand-ins for
what only the application provides: ``slicer.app``, ``slicer.util``'s GUI helpers, the
ScriptedLoadableModule base classes, ``parameterNodeWrapper``, ``slicer.i18n`` and ``ctk``.
Each stand-in is named ``StandIn...`` and does the least that lets the wiring run: the ui
stand-in has exactly the widgets named in DeFacer.ui (a name the .ui lacks fails here), the
parameter node stand-in keeps the annotated defaults. Everything else is real: the MRML scene
and nodes (slicer-core), the Logic and DeFacerLib. Kept apart from test_slicer_logic.py so
that no stand-in is ever mistaken for Slicer.
"""
from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from _slicer_for_tests import slicer_core

REPO = Path(__file__).resolve().parents[1]
real_slicer = slicer_core()

from DeFacerLib.features import LABEL_VALUES  # noqa: E402
from DeFacerLib.phantom import make_phantom  # noqa: E402


# ---- stand-ins ------------------------------------------------------------------------------------
class StandInWidget:
    """A Qt widget as the module uses it: properties, connect(signal, slot), emit for tests."""

    def __init__(self, name, cls):
        self.objectName, self.className = name, cls
        self.enabled, self.visible, self.checked = True, True, False
        self.value, self.text, self.toolTip = 0, "", ""
        self.connections = []

    def connect(self, signal, slot):
        self.connections.append((signal, slot))

    def emit(self, signal, *args):
        for connected, slot in self.connections:
            if connected == signal:
                slot(*args)


class StandInUiRoot:
    def __init__(self, path):
        self.widgets = {w.get("name"): StandInWidget(w.get("name"), w.get("class"))
                        for w in ET.parse(path).getroot().iter("widget")}
        for name, widget in self.widgets.items():  # the .ui's own initial check states
            element = next(w for w in ET.parse(path).getroot().iter("widget") if w.get("name") == name)
            for prop in element.findall("property"):
                if prop.get("name") == "checked":
                    widget.checked = prop.findtext("bool") == "true"
            items = [item.findtext("property/string") for item in element.findall("item")]
            widget.currentText = items[0] if items else ""  # a combo box shows its first item
        self.scene = None

    def setMRMLScene(self, scene):
        self.scene = scene


class StandInApp:
    def __init__(self):
        self.testing = False
        self.process_events_hook = None
        self.views_looked_from = []

    def testingEnabled(self):
        return self.testing

    def processEvents(self):
        if self.process_events_hook:
            self.process_events_hook()

    def layoutManager(self):
        app = self

        class View:
            def lookFromAxis(self, axis):
                app.views_looked_from.append(axis)

            def resetFocalPoint(self):
                pass

        class ThreeDWidget:
            def threeDView(self):
                return View()

        return types.SimpleNamespace(threeDWidget=lambda index: ThreeDWidget())


class StandInUtil(types.ModuleType):
    def __init__(self, app):
        super().__init__("slicer.util")
        self.app = app
        self.errors, self.confirm_answers, self.confirm_messages, self.pip_installs = [], [], [], []
        self.slice_background = None
        self.VTKObservationMixin = StandInVTKObservationMixin
        self.arrayFromVolume = real_slicer.util.arrayFromVolume

    def loadUI(self, path):
        return StandInUiRoot(path)

    def childWidgetVariables(self, root):
        return types.SimpleNamespace(**root.widgets)

    @contextlib.contextmanager
    def tryWithErrorDisplay(self, message="", waitCursor=False):
        try:
            yield
        except Exception as error:  # Slicer shows it in a dialog and does not re-raise
            self.errors.append((message, error))

    def confirmOkCancelDisplay(self, text, windowTitle=None, **kwargs):
        self.confirm_messages.append(text)
        return self.confirm_answers.pop(0) if self.confirm_answers else False

    def errorDisplay(self, text, **kwargs):
        self.errors.append((text, None))

    def setSliceViewerLayers(self, background=None, fit=False, **kwargs):
        self.slice_background = background

    def pip_install(self, requirements):
        self.pip_installs.append(requirements)


class StandInVTKObservationMixin:
    def __init__(self):
        self.observed = []

    def addObserver(self, obj, event, method):
        self.observed.append((event, method))

    def removeObserver(self, obj, event, method):
        pass

    def removeObservers(self):
        self.observed.clear()


class StandInModuleWidget:
    def __init__(self, parent=None):
        self.parent = types.SimpleNamespace(isEntered=True)
        self.layout = types.SimpleNamespace(added=[], addWidget=lambda w: self.layout.added.append(w))

    def setup(self):
        pass

    def resourcePath(self, relative):
        return str(REPO / "DeFacer" / "Resources" / relative)


class StandInModuleLogic:
    def __init__(self, parent=None):
        self._raw_parameter_node = types.SimpleNamespace()

    def getParameterNode(self):
        return self._raw_parameter_node


class StandInModuleTest(unittest.TestCase):
    """Slicer's ScriptedLoadableModuleTest is a unittest.TestCase with delayDisplay."""

    messages: list = []

    def delayDisplay(self, message, msec=None):
        self.messages.append(message)


def standin_parameter_node_wrapper(cls):
    """Instances get the annotated defaults (None for nodes, Path('.') for paths), like the real one."""
    annotations = cls.__annotations__

    class Wrapped:
        def __init__(self, raw):
            self.raw = raw
            for name, annotation in annotations.items():
                default = getattr(cls, name, None)
                if default is None and "Path" in str(annotation):
                    default = Path(".")
                setattr(self, name, default)
            self.connected_ui = None

        def connectGui(self, ui):
            self.connected_ui = ui
            return "tag"

        def disconnectGui(self, tag):
            self.connected_ui = None

    Wrapped.__name__ = cls.__name__
    return Wrapped


@pytest.fixture()
def module(monkeypatch):
    """DeFacer.py imported against the stand-ins plus a real MRML scene."""
    app = StandInApp()
    util = StandInUtil(app)
    standin = types.ModuleType("slicer")
    for name in dir(real_slicer):  # the real MRML classes
        if name.startswith("vtkMRML"):
            setattr(standin, name, getattr(real_slicer, name))
    standin.app, standin.util, standin.mrmlScene = app, util, real_slicer.vtkMRMLScene()
    standin.dicomDatabase = None
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = type("StandInScriptedLoadableModule", (), {"__init__": lambda self, parent: setattr(self, "parent", parent)})
    slm.ScriptedLoadableModuleWidget = StandInModuleWidget
    slm.ScriptedLoadableModuleLogic = StandInModuleLogic
    slm.ScriptedLoadableModuleTest = StandInModuleTest
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = standin_parameter_node_wrapper
    pnw.WithinRange = lambda low, high: ("WithinRange", low, high)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    ctk = types.ModuleType("ctk")
    ctk.ctkAxesWidget = types.SimpleNamespace(Anterior="Anterior", Left="Left", Right="Right")
    for name, value in {"slicer": standin, "slicer.util": util, "slicer.ScriptedLoadableModule": slm,
                        "slicer.parameterNodeWrapper": pnw, "slicer.i18n": i18n, "ctk": ctk}.items():
        monkeypatch.setitem(sys.modules, name, value)
    spec = importlib.util.spec_from_file_location("DeFacer_with_standins", REPO / "DeFacer" / "DeFacer.py")
    defacer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(defacer)
    return types.SimpleNamespace(defacer=defacer, slicer=standin, util=util, app=app)


@pytest.fixture()
def widget(module):
    widget = module.defacer.DeFacerWidget()
    widget.setup()
    return widget


def load_phantom(module, widget, with_labels=True):
    logic = widget.logic
    volume, labels = make_phantom(orientation="PSR")
    node = logic.node_from_volume(volume, "Phantom head")
    parameters = widget._parameterNode
    parameters.inputVolume = node
    if with_labels:
        parameters.labelsVolume = logic.node_from_volume(volume.label_map(labels), "labels",
                                                         nodeClass="vtkMRMLLabelMapVolumeNode")
    widget._checkCanApply()
    return volume, labels, node


def volume_names(scene):
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    return sorted(nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems()))


# ---- tests -----------------------------------------------------------------------------------------
def test_setup_wires_every_button_to_its_handler(widget):
    expected = {"findFeaturesButton": "onFindFeaturesButton", "applyButton": "onApplyButton",
                "cancelButton": "onCancelButton", "checkReidButton": "onCheckReidButton",
                "saveQAButton": "onSaveQAButton", "scrubDicomButton": "onScrubDicomButton",
                "anonymizePhotoButton": "onAnonymizePhotoButton"}
    for name, handler in expected.items():
        assert [(signal, slot.__name__) for signal, slot in getattr(widget.ui, name).connections] == \
            [("clicked(bool)", handler)], name
    assert widget.ui.showAfterCheckBox.connections[0][0] == "toggled(bool)"
    assert widget._parameterNode.connected_ui is widget.ui  # parameter node bound to the ui
    assert widget.ui.applyButton.enabled is False  # no input yet
    assert widget.ui.progressBar.visible is False and widget.ui.cancelButton.enabled is False


def test_apply_creates_a_new_defaced_volume(module, widget):
    volume, labels, node = load_phantom(module, widget)
    assert widget.ui.applyButton.enabled is True
    seen = []
    module.app.process_events_hook = lambda: seen.append(widget.ui.progressBar.value)
    widget._parameterNode.removeEars = False
    widget.ui.applyButton.emit("clicked(bool)")
    assert module.util.errors == []
    output = widget._parameterNode.outputVolume
    assert output.GetName() == "Defaced volume 1" and module.util.slice_background is output
    assert widget.ui.statusLabel.text.startswith("Removed: eyes, nose, mouth;")
    assert seen[0] < seen[-1] == 100 and len(seen) >= 4
    after = module.util.arrayFromVolume(output)
    before = module.util.arrayFromVolume(node)
    brain = np.transpose(labels == LABEL_VALUES["brain"], (2, 1, 0))
    assert int((before != after).sum()) > 0 and int((before[brain] != after[brain]).sum()) == 0
    assert set(widget._skinModels) == {"before", "after"}  # the before/after 3D view
    assert widget._skinModels["after"].GetDisplayNode().GetVisibility() == 1
    assert widget._skinModels["before"].GetDisplayNode().GetVisibility() == 0
    widget.ui.showAfterCheckBox.emit("toggled(bool)", False)
    assert widget._skinModels["before"].GetDisplayNode().GetVisibility() == 1
    assert module.app.views_looked_from == ["Anterior"]
    assert widget.ui.progressBar.visible is False and widget.ui.applyButton.enabled is True


def test_output_equal_to_input_needs_confirmation(module, widget):
    _volume, _labels, node = load_phantom(module, widget)
    widget._parameterNode.outputVolume = node
    before = module.util.arrayFromVolume(node).copy()
    module.util.confirm_answers = [False]
    widget.ui.applyButton.emit("clicked(bool)")
    assert "replaced" in module.util.confirm_messages[-1]
    assert np.array_equal(module.util.arrayFromVolume(node), before)  # declined: untouched
    module.util.confirm_answers = [True]
    widget.ui.applyButton.emit("clicked(bool)")
    assert int((module.util.arrayFromVolume(node) != before).sum()) > 0  # agreed: replaced in place
    assert volume_names(module.slicer.mrmlScene) == ["Phantom head", "labels"]
    # the "before" skin is the input's as it was, taken before its voxels were replaced
    points = {key: model.GetPolyData().GetNumberOfPoints() for key, model in widget._skinModels.items()}
    reference = widget.logic.skin_model(widget.logic.node_from_volume(_volume, "original again"))
    assert points["before"] == reference.GetPolyData().GetNumberOfPoints() != points["after"]


def test_cancel_stops_and_adds_nothing(module, widget):
    load_phantom(module, widget)

    def press_cancel():
        widget.ui.cancelButton.emit("clicked(bool)")

    module.app.process_events_hook = press_cancel
    widget.ui.applyButton.emit("clicked(bool)")
    assert widget.ui.statusLabel.text == "Cancelled; nothing was changed"
    assert volume_names(module.slicer.mrmlScene) == ["Phantom head", "labels"]
    assert module.util.errors == [] and widget.ui.cancelButton.enabled is False


def test_find_features_shows_rois_then_apply_uses_them(module, widget):
    _volume, _labels, node = load_phantom(module, widget)
    widget.ui.findFeaturesButton.emit("clicked(bool)")
    rois = widget.logic.rois_of(node)
    assert len(rois) == 6 and widget.ui.statusLabel.text.startswith("6 box(es) shown")
    nose = next(r for r in rois if r.GetName() == "DeFacer nose")
    module.slicer.mrmlScene.RemoveNode(nose)  # the user deletes the nose box: the nose stays
    widget.ui.applyButton.emit("clicked(bool)")
    assert module.util.errors == []
    assert "not found: nose" in widget.ui.statusLabel.text


def test_errors_go_to_the_error_display(module, widget, monkeypatch):
    _volume, _labels, node = load_phantom(module, widget, with_labels=False)

    # without labels Apply needs the model's packages; whether onnxruntime is installed here is
    # not what this test is about, so the "model" group is taken as satisfied
    monkeypatch.setitem(sys.modules["DeFacerLogicLib.packages"].REQUIREMENTS, "model", [])

    widget.ui.applyButton.emit("clicked(bool)")
    if module.util.errors:  # no usable model here: one error dialog with the Logic's one-line reason
        (title, error), = module.util.errors
        assert title == "Failed to deface the volume." and "label map" in str(error)
        assert widget._parameterNode.outputVolume is None and widget.ui.applyButton.enabled is True
    else:  # the model ships and works
        assert widget._parameterNode.outputVolume.GetName() == "Defaced volume 1"


def test_ensure_packages_asks_then_installs(module, monkeypatch):
    packages = sys.modules["DeFacerLogicLib.packages"]
    monkeypatch.setitem(packages.REQUIREMENTS, "standin", [("defacer_no_such_module", "defacer-no-such-package==1.0")])
    module.util.confirm_answers = [False]
    assert module.defacer.ensurePackages("standin") is False
    assert module.util.pip_installs == [] and "defacer-no-such-package==1.0" in module.util.confirm_messages[-1]
    module.util.confirm_answers = [True]
    assert module.defacer.ensurePackages("standin") is False  # installed (stand-in) but still not importable
    assert module.util.pip_installs == ["defacer-no-such-package==1.0"]  # no slicer.packaging here: pip_install
    module.app.testing = True  # test farm: no question asked
    asked = len(module.util.confirm_messages)
    module.defacer.ensurePackages("standin")
    assert len(module.util.confirm_messages) == asked and len(module.util.pip_installs) == 2
    assert module.defacer.ensurePackages("core") is True  # present: nothing asked, nothing installed


def test_slicer_self_test_passes(module):
    """DeFacerTest, the self-test Slicer's test farm runs, on the real scene and Logic."""
    case = module.defacer.DeFacerTest()
    case.runTest()
    assert case.messages[-1] == "Unchanged ROIs reproduce the engine's boxes"
    assert "Phantom defaced, brain untouched" in case.messages


def test_widget_picks_the_first_head_not_a_label_map_or_an_output(module):
    scene = module.slicer.mrmlScene
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels first")
    output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Defaced volume 1")
    output.SetAttribute("DeFacer.Defaced", "true")
    head = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "head")
    widget = module.defacer.DeFacerWidget()
    widget.setup()
    assert widget._parameterNode.inputVolume is head
    assert labels is not None


def test_slicer_batch_self_test_passes(module, monkeypatch):
    """DeFacer/Testing/Python/DeFacerBatchTest.py (Slicer's test farm) with the module it imports."""
    monkeypatch.setitem(sys.modules, "DeFacer", module.defacer)
    spec = importlib.util.spec_from_file_location("DeFacerBatchTest", REPO / "DeFacer" / "Testing" / "Python" / "DeFacerBatchTest.py")
    batch_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch_test)
    case = batch_test.DeFacerBatchTest()
    case.runTest()
    assert case.messages[-1] == "Batch defacing of the phantom passed"


def test_photo_section_hides_the_face_of_a_real_photo(module, widget, data_dir, tmp_path):
    """The photo section runs `defacer photo`'s code: one face found and filled, the file written."""
    from DeFacerLib.photo.media import read_image

    widget.ui.anonymizePhotoButton.emit("clicked(bool)")  # no paths yet: a message, nothing written
    assert module.util.errors and "Choose the photo" in module.util.errors[-1][0]
    module.util.errors.clear()
    source = data_dir / "photos/known_people/obama.jpg"
    widget._parameterNode.photoInputPath = source
    widget._parameterNode.photoOutputPath = tmp_path / "obama_anon.jpg"
    assert widget.ui.photoMethodComboBox.currentText == "fill"  # the de-identifying default comes first
    widget.ui.anonymizePhotoButton.emit("clicked(bool)")
    assert module.util.errors == []
    assert widget.ui.photoResultLabel.text == "1 face(s) hidden in 1 file(s)"
    before, after = read_image(source), read_image(tmp_path / "obama_anon.jpg")
    assert before.shape == after.shape and float(np.abs(before.astype(int) - after).mean()) > 5.0
    widget.ui.photoMethodComboBox.currentText = "pixelate"
    widget._parameterNode.photoOutputPath = tmp_path / "obama_pixelated.jpg"
    widget.ui.anonymizePhotoButton.emit("clicked(bool)")
    assert widget.ui.photoResultLabel.text.splitlines()[1].startswith(
        "warning: pixelate (cosmetic: not de-identifying): faces stay recognisable")


def test_scrub_section_says_what_to_act_on_before_sharing(module, widget, data_dir, tmp_path, monkeypatch):
    """The study's ultrasound says its pixels carry burned-in text: `defacer scrub` warned, the
    module only said "9 file(s) written". Slicer's DICOM database is a stand-in here (the
    application cannot run): it hands the module the study's files, as Slicer's would."""
    files = sorted(str(p) for p in (data_dir / "dicom" / "deid_samples").glob("*.dcm"))
    module.slicer.dicomDatabase = types.SimpleNamespace(
        instanceValue=lambda uid, tag: "study", seriesForStudy=lambda study: ["series"],
        filesForSeries=lambda series: files)
    node = load_phantom(module, widget, with_labels=False)[2]
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3")
    widget._parameterNode.dicomOutputDirectory = tmp_path / "out"
    monkeypatch.setenv("DEFACER_KEY_FILE", str(tmp_path / "key"))
    widget.ui.scrubDicomButton.emit("clicked(bool)")
    assert module.util.errors == []
    lines = widget.ui.dicomResultLabel.text.splitlines()
    assert lines[0] == f"{len(files)} file(s) written to {tmp_path / 'out'}"
    assert lines[1].startswith("warning: 1 written file(s) say their pixels carry burned-in text")
    assert "GREYSCALE_IMAGE.dcm" in lines[1]


def test_photo_section_names_what_a_folder_run_left_out(module, widget, data_dir, tmp_path):
    """A folder holding a video (and a .heic) beside its photo: `defacer photo` warns that they were
    left out, the module said only "1 face(s) hidden in 1 file(s)", as if the folder were done."""
    folder = tmp_path / "visit"
    folder.mkdir()
    shutil.copy(data_dir / "photos/known_people/obama.jpg", folder / "face.jpg")
    shutil.copy(data_dir / "photos/known_people/short_hamilton_clip.mp4", folder / "clip.mp4")
    (folder / "phone.heic").write_bytes(b"not read")
    widget._parameterNode.photoInputPath = folder
    widget._parameterNode.photoOutputPath = tmp_path / "out"
    widget.ui.anonymizePhotoButton.emit("clicked(bool)")
    assert module.util.errors == []
    lines = widget.ui.photoResultLabel.text.splitlines()
    assert lines[0] == "1 face(s) hidden in 1 file(s)"
    assert len(lines) == 2 and lines[1].startswith("warning: left out, not photos this command reads from a folder")
    assert "clip.mp4" in lines[1] and "phone.heic" in lines[1]
