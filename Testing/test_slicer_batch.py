"""scripts/slicer_batch_deface.py outside Slicer: arguments, the input tree, the loop, exit codes.

The argument parsing and file loop are plain Python. The per-input function is the script's
own ``slicer_deface_one`` driven with the headless Logic on a real MRML scene (slicer-core);
those tests are skipped where slicer-core is not installed.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _slicer_for_tests import slicer_core

from DeFacerLib.features import LABEL_VALUES
from DeFacerLib.io import read_volume, write_volume
from DeFacerLib.phantom import make_phantom

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slicer_batch_deface.py"


def write(volume, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(volume, path)


@pytest.fixture(scope="module")
def batch():
    spec = importlib.util.spec_from_file_location("slicer_batch_deface", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=(64, 80, 72), spacing_mm=(3.0, 3.0, 3.0), orientation="LIA")


@pytest.fixture()
def tree(tmp_path, data_dir, phantom):
    """in/a/head.nii.gz, in/b/head.mgz, in/series/ (links to a real DICOM series), in/bad.nii.gz;
    labels/ mirrors the phantom heads."""
    volume, labels = phantom
    write(volume, tmp_path / "in" / "a" / "head.nii.gz")
    write(volume, tmp_path / "in" / "b" / "head.mgz")
    write(volume.label_map(labels), tmp_path / "labels" / "a" / "head.nii.gz")
    write(volume.label_map(labels), tmp_path / "labels" / "b" / "head.mgz")
    (tmp_path / "in" / "bad.nii.gz").write_bytes(b"not a NIfTI file")
    series = tmp_path / "in" / "series"
    series.mkdir()
    for source in sorted((data_dir / "dicom" / "fake_phi_ct").glob("*.dcm")):
        (series / source.name).symlink_to(source)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    return tmp_path


def test_parse_args(batch, tree):
    args = batch.parse_args(["--input", str(tree / "in"), "--output", str(tree / "out"), "--features", "nose,eyes",
                             "--labels", str(tree / "labels"), "--screenshots", "--margin-mm", "7"])
    assert args.features == ("eyes", "nose") and args.screenshots and args.margin_mm == 7.0
    assert batch.parse_args(["--input", str(tree / "in"), "--output", str(tree / "out")]).features == \
        ("eyes", "nose", "mouth", "ears")
    for bad in (["--input", str(tree / "in"), "--output", str(tree / "in" / "out")],  # output inside input
                ["--input", str(tree / "in"), "--output", str(tree / "out"), "--features", "eyebrows"],
                ["--input", str(tree / "missing"), "--output", str(tree / "out")],
                ["--output", str(tree / "out")]):
        with pytest.raises(SystemExit) as stop:
            batch.parse_args(bad)
        assert stop.value.code == 2


def test_find_inputs_and_mirrored_paths(batch, tree):
    root = tree / "in"
    found = batch.find_inputs(root)
    assert [str(p.relative_to(root)) for p in found] == ["a/head.nii.gz", "b/head.mgz", "bad.nii.gz", "series"]
    assert batch.output_for(root / "b" / "head.mgz", root, tree / "out") == tree / "out" / "b" / "head.mgz"
    assert batch.output_for(root / "series", root, tree / "out") == tree / "out" / "series"
    assert batch.labels_for(root / "a" / "head.nii.gz", root, tree / "labels") == tree / "labels" / "a" / "head.nii.gz"
    assert batch.labels_for(root / "series", root, tree / "labels") is None  # labels/series.nii.gz absent
    assert batch.labels_for(root / "a" / "head.nii.gz", root, None) is None


def test_script_exits_with_usage_code_outside_slicer(tree):
    run = subprocess.run([sys.executable, str(SCRIPT), "--input", str(tree / "in"), "--output", str(tree / "in" / "o")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--output must be outside --input" in run.stderr


def test_run_loop_keeps_going_and_returns_first_failure_code(batch, tree):
    """The loop with a per-input function that fails on one input: summary and exit code."""
    args = batch.parse_args(["--input", str(tree / "in"), "--output", str(tree / "out")])

    def deface_one(path, output, labels, qa_dir, arguments):
        if path.name == "bad.nii.gz":
            error = ValueError(f"{path} is not a NIfTI file")
            error.exit_code = 3
            raise error
        return {"features_removed": ["nose"], "features_missing": []}

    lines = []
    assert batch.run(args, deface_one, log=lines.append) == 3
    summary = json.loads((tree / "out" / batch.SUMMARY_NAME).read_text())
    assert (summary["succeeded"], summary["failed"], summary["exit_code"]) == (3, 1, 3)
    assert [item["status"] for item in summary["items"]] == ["ok", "ok", "failed", "ok"]
    assert "FAILED" in lines[2] and lines[-1].startswith("3 defaced, 1 failed")
    # the summary is in the shared output: no folder above the ones given (they may name a patient)
    text = (tree / "out" / batch.SUMMARY_NAME).read_text()
    assert str(tree) not in text and (summary["input"], summary["output"]) == ("in", "out")
    assert summary["items"][2]["input"] == "bad.nii.gz" and summary["items"][2]["error"] == "bad.nii.gz is not a NIfTI file"


# ---- the script's own per-input function, on a real MRML scene ---------------------------------------
@pytest.fixture()
def headless_logic():
    slicer = slicer_core()
    from DeFacerLogicLib.logic import DeFacerLogic

    return DeFacerLogic(slicer.vtkMRMLScene())


def test_batch_defaces_real_files_through_the_logic(batch, tree, phantom, headless_logic):
    volume, labels = phantom
    # a detached header (c/head.nhdr + head.raw.gz) comes out as one, beside its defaced voxels
    write(volume, tree / "in" / "c" / "head.nhdr")
    write(volume.label_map(labels), tree / "labels" / "c" / "head.nhdr")
    args = batch.parse_args(["--input", str(tree / "in"), "--output", str(tree / "out"),
                             "--labels", str(tree / "labels"), "--features", "eyes,nose,mouth", "--seal-mm", "0"])
    code = batch.run(args, functools.partial(batch.slicer_deface_one, logic=headless_logic), log=lambda line: None)
    summary = json.loads((tree / "out" / batch.SUMMARY_NAME).read_text())
    status = {Path(item["input"]).name: (item["status"], item.get("exit_code")) for item in summary["items"]}
    # bad.nii.gz cannot be read (3); the DICOM series has no labels and no model ships yet (2)
    # unless DeFacerLib's find_features works, in which case it is defaced too
    assert status["head.nii.gz"] == ("ok", None) and status["head.mgz"] == ("ok", None)
    assert status["head.nhdr"] == ("ok", None)
    assert sorted(p.name for p in (tree / "out" / "c").iterdir()) == ["head.defacer.json", "head.nhdr", "head.raw.gz"]
    assert status["bad.nii.gz"] == ("failed", 3)
    assert code == next(item["exit_code"] for item in summary["items"] if item["status"] == "failed")
    brain = labels == LABEL_VALUES["brain"]
    for name in ("a/head.nii.gz", "b/head.mgz", "c/head.nhdr"):
        after = read_volume(tree / "out" / name).array
        assert int((after != volume.array).sum()) > 0 and int((after[brain] != volume.array[brain]).sum()) == 0
        assert np.array_equal(read_volume(tree / "in" / name).array, volume.array)  # input untouched
        # the CLI's removal options reach the engine: --seal-mm 0 leaves air only
        sidecar = json.loads((tree / "out" / name).with_name(name.split("/")[1].split(".")[0]
                                                          + ".defacer.json").read_text())
        assert sidecar["parameters"]["seal_mm"] == 0.0 and sidecar["report"]["total_sealed"] == 0
    assert headless_logic.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0


def test_batch_screenshots(batch, tmp_path, phantom, headless_logic):
    volume, labels = phantom
    write(volume, tmp_path / "in" / "head.nii.gz")
    write(volume.label_map(labels), tmp_path / "labels" / "head.nii.gz")
    args = batch.parse_args(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                             "--labels", str(tmp_path / "labels"), "--screenshots"])
    assert batch.run(args, functools.partial(batch.slicer_deface_one, logic=headless_logic), log=lambda line: None) == 0
    written = sorted(p.name for p in (tmp_path / "out" / "qa").iterdir())
    assert len(written) == 11 and "head_before_after.png" in written and "head_after_front.png" in written
    summary = json.loads((tmp_path / "out" / batch.SUMMARY_NAME).read_text())
    assert len(summary["items"][0]["screenshots"]) == 11


def test_batch_screenshots_that_fail_fail_the_item_whole(batch, tmp_path, phantom, headless_logic, monkeypatch):
    """Screenshots asked for and not made (a render that fails) fail the item, and a failed item
    has no output: the defaced head and its sidecar written before them are taken back, and no
    volume node is left in the scene. Before, the summary said failed beside a published output."""
    volume, labels = phantom
    write(volume, tmp_path / "in" / "head.nii.gz")
    write(volume.label_map(labels), tmp_path / "labels" / "head.nii.gz")

    def no_render(*args, **kwargs):
        raise RuntimeError("no OpenGL context")

    monkeypatch.setattr(headless_logic, "save_qa_screenshots", no_render)
    args = batch.parse_args(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                             "--labels", str(tmp_path / "labels"), "--screenshots"])
    assert batch.run(args, functools.partial(batch.slicer_deface_one, logic=headless_logic), log=lambda line: None) == 1
    summary = json.loads((tmp_path / "out" / batch.SUMMARY_NAME).read_text())
    assert [(item["status"], item["error"]) for item in summary["items"]] == [("failed", "no OpenGL context")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [batch.SUMMARY_NAME]
    assert headless_logic.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
