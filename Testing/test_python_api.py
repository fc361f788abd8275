"""The Python API as the docs give it, on real data: README's recipe keeps the brain and clears the
header, a plainly wrong argument is a DeFacerError with one clear line (never numpy's or cv2's
own error from deep inside), and `--help` states the defaults it names."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from DeFacerLib.errors import GuaranteeError, InputError, UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBJECT = "IXI162-HH-1548"  # the head whose frontal lobe a cut without the brain reached most


@pytest.fixture(scope="module")
def head_and_labels(data_dir, tmp_path_factory):
    """An IXI head and a label map of its eyes, nose, mouth and ears without the brain (5), as a
    user's own annotation comes: here the U-Net's, written as a file."""
    from DeFacerLib.deface.pipeline import find_features
    from DeFacerLib.io import read_volume

    head_path = data_dir / "heads" / "ixi" / "t1" / f"{SUBJECT}_T1.nii.gz"
    folder = tmp_path_factory.mktemp("api")
    found = find_features(read_volume(head_path))
    labels = np.zeros(found.masks["eyes"].shape, np.uint8)
    for value, name in enumerate(("eyes", "nose", "mouth", "ears"), start=1):
        labels[found.masks[name]] = value
    nib.save(nib.Nifti1Image(labels, nib.load(head_path).affine), folder / "labels.nii.gz")
    (folder / "head.nii.gz").symlink_to(head_path)
    brain = np.asarray(nib.load(data_dir / "heads" / "ixi" / "brain_labels" / f"{SUBJECT}_T1_DLMUSE.nii.gz").dataobj) > 0
    return folder, brain


def test_deface_volume_refuses_to_cut_with_nothing_protecting_the_brain(head_and_labels):
    """README's recipe gave such a map straight to deface_volume: every cut went 25 mm deep and
    changed 1734 reference-brain voxels of IXI162, with `protected_voxels_changed: 0` reported."""
    from DeFacerLib.deface.pipeline import deface_volume, masks_from_labels
    from DeFacerLib.io import read_volume

    folder, _ = head_and_labels
    head = read_volume(folder / "head.nii.gz")
    masks = masks_from_labels(read_volume(folder / "labels.nii.gz"), head)
    with pytest.raises(GuaranteeError, match="nothing protects the brain"):
        deface_volume(head, masks)


def test_readme_python_recipes_keep_the_brain_and_clear_the_header(head_and_labels):
    """Each ```python block of README.md, run as written in a folder holding head.nii.gz (IXI162,
    whose AFNI history names the operator and host) and labels.nii.gz (no brain label)."""
    folder, brain = head_and_labels
    original = np.asarray(nib.load(folder / "head.nii.gz").dataobj)
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        for name in ("head_defaced.nii.gz", "head_defaced.defacer.json"):
            (folder / name).unlink(missing_ok=True)
        run = subprocess.run([sys.executable, "-c", block], cwd=folder, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert run.returncode == 0, run.stderr[-2000:]
        output = nib.load(folder / "head_defaced.nii.gz")
        changed = np.asarray(output.dataobj) != original
        assert changed.sum() > 20_000  # the face went (eyes and nose alone: 47,199 voxels)
        assert int((changed & brain).sum()) == 0
        assert len(output.header.extensions) == 0  # the AFNI history ("erusg@cubic-login5 ...") is gone


def test_a_mask_on_another_grid_is_named(data_dir):
    from DeFacerLib.deface.pipeline import deface_volume
    from DeFacerLib.io import read_volume

    head = read_volume(data_dir / "heads" / "ixi" / "t1" / f"{SUBJECT}_T1.nii.gz")
    with pytest.raises(InputError, match=r"the brain mask has shape \(10, 10, 10\)"):
        deface_volume(head, {"eyes": np.zeros(head.shape3, bool), "brain": np.ones((10, 10, 10), bool)})


@pytest.mark.parametrize("option", [{"region": "chin"}, {"detector": "viola"}, {"landmarks": "7"}])
def test_photo_options_refuse_unknown_names_before_any_photo(option):
    """They were accepted, then failed with a ValueError after the first photo's detection."""
    from DeFacerLib.photo import PhotoOptions

    name, value = next(iter(option.items()))
    with pytest.raises(UsageError, match=rf"unknown {name} '{value}'; choose from"):
        PhotoOptions(**option)


def test_photo_functions_name_a_wrong_argument(data_dir):
    from PIL import Image

    from DeFacerLib.photo import detect_faces, k_same, obscure_faces
    from DeFacerLib.photo.identity import descriptor

    photo = np.asarray(Image.open(data_dir / "photos" / "known_people" / "obama-480p.jpg").convert("RGB"))
    faces = detect_faces(photo)
    assert len(faces) == 1
    with pytest.raises(UsageError, match="unknown method 'smudge'"):
        obscure_faces(photo, faces, method="smudge")
    with pytest.raises(UsageError, match="unknown method 'smudge'"):  # a photo with no face: was returned as it was
        obscure_faces(photo, [], method="smudge")
    with pytest.raises(UsageError, match="unknown detector 'viola'"):
        detect_faces(photo, detector="viola")
    with pytest.raises(UsageError, match="cannot do k-Same: it needs a gallery"):
        obscure_faces(photo, faces, method="ksame")
    with pytest.raises(UsageError, match="unknown recogniser 'arcface'; choose from sface, dlib"):
        descriptor(photo, faces[0], recogniser="arcface")  # a ValueError: exit 1, "report it"
    with pytest.raises(UsageError, match="unknown blend 'smooth'; choose from feather, poisson, none"):
        k_same([photo, photo], [faces, faces], blend="smooth")
    with pytest.raises(InputError, match=r"got an array of shape \(\d+,\)"):  # an IndexError before
        detect_faces(photo[0, :, 0])


def test_render_views_names_an_unknown_view(data_dir):
    from DeFacerLib.io import read_volume
    from DeFacerLib.qa import render_views

    head = read_volume(data_dir / "heads" / "ixi" / "t1" / f"{SUBJECT}_T1.nii.gz")
    with pytest.raises(UsageError, match="unknown view 'top_secret'; choose from back, front"):
        render_views(head, views=("front", "top_secret"))


def _help(command: str) -> dict[str, str]:
    from DeFacerLib.cli.main import build_parser

    sub = next(a for a in build_parser(command)._actions if a.dest == "command").choices[command]
    return {flag: action.help for action in sub._actions for flag in action.option_strings}


def test_photo_score_help_gives_each_detectors_default():
    from DeFacerLib.photo.detect import DEFAULT_SCORE

    text = _help("photo")["--score"]
    for detector, score in DEFAULT_SCORE.items():
        assert f"{detector} {score:g}" in text


@pytest.mark.parametrize("command", ["scrub", "deface", "batch"])
def test_pseudonym_format_help_names_the_placeholders(command):
    text = _help(command)["--pseudonym-format"]
    assert "{hash8}" in text and "{hash16}" in text and "DEFACER-{hash8}" in text


def test_deface_help_says_clean_pixel_data_is_refused(data_dir, tmp_path):
    """deface listed --clean-pixel-data with scrub's text ("black out text burned into the
    pixels"), and every run with it is refused."""
    from DeFacerLib.cli.main import main

    assert _help("deface")["--clean-pixel-data"].startswith("refused here (exit 2)")
    assert _help("scrub")["--clean-pixel-data"].startswith("black out text")
    series = data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1" / "0001.dcm"
    assert main(["deface", str(series), str(tmp_path / "out.dcm"), "--clean-pixel-data",
                 "--key-file", str(tmp_path / "k.key")]) == 2
    assert not (tmp_path / "out.dcm").exists()


def test_help_gives_the_defaults_and_when_an_option_is_needed():
    from DeFacerLib.cli.main import build_parser

    deface = _help("deface")
    assert "default: the U-Net finds the features" in deface["--features-from"]
    assert "(default: none)" in deface["--protect-from"]
    assert "needed with an INPUT, optional with --camera" in _help("photo")["--output"]
    scrub = next(a for a in build_parser("scrub")._actions if a.dest == "command").choices["scrub"]
    assert "OUTPUT.audit/" in scrub.description and "OUT.audit" not in scrub.description


def test_info_help_names_every_format_it_reads(data_dir, tmp_path):
    """It named .mgz, .nrrd and .mha only; .mgh, .nhdr and .mhd are read too."""
    from DeFacerLib.cli.main import main

    text = _help_positional("info", "input")
    for extension in (".nii.gz", ".mgh", ".nhdr", ".mhd", "DICOM series folder"):
        assert extension in text
    mgh = tmp_path / "head.mgh"
    nib.save(nib.load(data_dir / "heads" / "single" / "mne_sample_T1.mgz"), mgh)
    assert main(["info", str(mgh), "-q"]) == 0


def _help_positional(command: str, dest: str) -> str:
    from DeFacerLib.cli.main import build_parser

    sub = next(a for a in build_parser(command)._actions if a.dest == "command").choices[command]
    return next(a.help for a in sub._actions if a.dest == dest)


# dicom/uids.py is being reworked elsewhere: its two names are checked once that lands
UNDOCUMENTED_FOR_NOW = {("DeFacerLib.dicom", "pseudonym"), ("DeFacerLib.dicom", "default_key_path")}


@pytest.mark.parametrize("package", ["DeFacerLib", "DeFacerLib.io", "DeFacerLib.deface", "DeFacerLib.dicom",
                                     "DeFacerLib.qa", "DeFacerLib.photo", "DeFacerLib.batch"])
def test_every_exported_function_and_class_has_a_docstring(package):
    """A dataclass without one shows only its generated signature in help()."""
    import importlib
    import inspect

    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or (package, name) in UNDOCUMENTED_FOR_NOW:
            continue
        doc = obj.__doc__ or ""
        if not doc.strip() or doc.startswith(f"{name}("):  # dataclass's generated text
            missing.append(name)
    assert missing == []


@pytest.mark.parametrize("doc", ["README.md", "docs/batch.md", "docs/photo.md", "docs/qa.md"])
def test_every_name_a_doc_imports_has_a_docstring(doc):
    import importlib

    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / doc).read_text(), flags=re.S)
    names = [(module, name.strip()) for block in blocks
             for module, names in re.findall(r"^from (DeFacerLib[\w.]*) import ([\w, ]+)", block, flags=re.M)
             for name in names.split(",")]
    assert names
    missing = [f"{module}.{name}" for module, name in names
               if not (getattr(importlib.import_module(module), name).__doc__ or "").strip()
               or getattr(importlib.import_module(module), name).__doc__.startswith(f"{name}(")]
    assert missing == []
