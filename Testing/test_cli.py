"""The `defacer` command end to end, in a real subprocess: outputs, provenance, errors, exit codes."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from DeFacerLib.features import LABEL_VALUES
from DeFacerLib.io import read_volume, write_volume
from DeFacerLib.phantom import make_phantom


def defacer(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "DeFacerLib", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    sha = hashlib.sha256()
    for file in files:
        sha.update(file.read_bytes())
    return sha.hexdigest()


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int, *words: str) -> None:
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("defacer: error:"), lines[0]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    head, labels = make_phantom(modality="MR", orientation="RAS")
    head_path = write_volume(head, folder / "head.nii.gz")
    labels_path = write_volume(head.label_map(labels), folder / "labels.nii.gz")
    return head_path, labels_path, labels


def test_help_documents_commands_and_exit_codes():
    result = defacer("--help")
    assert result.returncode == 0
    for word in ("deface", "info", "demo", "exit codes", "input cannot be read"):
        assert word in result.stdout


def test_info_reports_real_geometry(data_dir, tmp_path):
    head = data_dir / "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
    result = defacer("info", head, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert list(info["shape"]) == [120, 120, 90]
    assert np.allclose(info["spacing_mm"], [2, 2, 2])
    assert info["orientation"] == "PSR"
    assert info["modality"] == "MR"
    assert info["identifying_header"] == ["NIfTI extension 4 (afni)"]  # IXI's AFNI history
    series = json.loads(defacer("info", data_dir / "dicom/siemens_trio_mprage_1mm", "--json").stdout)
    assert len(series["identifying_header"]) == 1 and "PS3.15" in series["identifying_header"][0]
    plain = tmp_path / "plain.nii.gz"  # the same voxels, no extension: an empty list, as a list
    nib.save(nib.Nifti1Image(np.asarray(nib.load(head).dataobj), nib.load(head).affine), plain)
    assert json.loads(defacer("info", plain, "--json").stdout)["identifying_header"] == []
    assert "none found" in defacer("info", plain).stdout


def test_json_into_a_closed_pipe_is_quiet(data_dir):
    """`defacer info HEAD --json | true`: the reader is gone before the JSON comes; no
    traceback (it was a BrokenPipeError and exit 1), exit 0."""
    head = data_dir / "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
    command = f"{sys.executable} -m DeFacerLib info {head} --json | true; echo rc=${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600)
    assert result.stdout == "rc=0\n", result.stdout
    assert result.stderr == "", result.stderr


def test_deface_phantom_removes_features_and_writes_provenance(phantom_files, tmp_path):
    head_path, labels_path, labels = phantom_files
    before = digest(head_path)
    out = tmp_path / "defaced.nii.gz"
    result = defacer("deface", head_path, out, "--features-from", labels_path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["report"]
    assert report["protected_voxels_changed"] == 0
    for name in ("eyes", "nose", "mouth", "ears"):
        assert report["features"][name]["present"]
        assert report["features"][name]["voxels_removed"] > 100, (name, report["features"][name])
    assert digest(head_path) == before, "the input file changed"

    original = read_volume(head_path)
    defaced = read_volume(out)
    changed = original.array != defaced.array
    assert not changed[labels == LABEL_VALUES["brain"]].any()
    reported = sum(entry["voxels_removed"] for entry in report["features"].values())
    # voxels that already held the air value count as removed but do not change
    assert 0.5 * reported < changed.sum() <= reported, (changed.sum(), reported)
    assert np.allclose(original.affine_lps, defaced.affine_lps)
    assert b"DeFacer" in nib.load(out).header["descrip"].tobytes()

    sidecar = json.loads((tmp_path / "defaced.defacer.json").read_text())
    assert sidecar["input"]["sha256"] == hashlib.sha256(head_path.read_bytes()).hexdigest()
    assert sidecar["report"]["protected_voxels_changed"] == 0
    assert sidecar["parameters"]["features"] == ["eyes", "nose", "mouth", "ears"]


def test_a_sidecar_beside_the_output_names_no_folder_above_it(phantom_files, tmp_path):
    """The sidecar goes with the output it describes, to whoever it is shared with: it held the
    output's absolute path, whose folders may name the patient, the site or the user (batch's
    records hold the path in the output tree only)."""
    head_path, labels_path, _ = phantom_files
    folder = tmp_path / "Doe_Jane_MRN555"
    folder.mkdir()
    named = tmp_path / "Doe_John_T1_20190417093012_3.nii.gz"  # as dcm2niix names a conversion by default
    shutil.copy(head_path, named)
    result = defacer("deface", named, folder / "defaced.nii.gz", "--features-from", labels_path, "-q")
    assert result.returncode == 0, result.stderr
    text = (folder / "defaced.defacer.json").read_text()
    assert "Doe_J" not in text and "20190417" not in text and str(tmp_path) not in text
    assert json.loads(text)["input"] == {"sha256": hashlib.sha256(named.read_bytes()).hexdigest()}
    output = json.loads(text)["output"]
    assert output == {"path": "defaced.nii.gz", "sha256": hashlib.sha256((folder / "defaced.nii.gz").read_bytes()).hexdigest()}


def test_feature_subset_leaves_other_features_alone(phantom_files, tmp_path):
    head_path, labels_path, labels = phantom_files
    out = tmp_path / "nose_only.nii.gz"
    result = defacer("deface", head_path, out, "--features-from", labels_path, "--features", "nose", "--json", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["report"]
    assert list(report["features"]) == ["nose"]
    changed = read_volume(head_path).array != read_volume(out).array
    assert changed[labels == LABEL_VALUES["nose"]].mean() > 0.9
    assert not changed[labels == LABEL_VALUES["ears"]].any()


def test_the_order_features_are_named_in_changes_no_byte(ixi_pairs, tmp_path):
    """--features names a set: "mouth,nose,eyes" is "eyes,nose,mouth", in the output's header note
    (it wrote the names as typed, so the same voxels gave another file) and in the sidecar."""
    t1_path, _ = ixi_pairs[0]
    outputs = []
    for name, features in (("typed", "mouth,nose,eyes"), ("canonical", "eyes,nose,mouth")):
        out = tmp_path / f"{name}.nii.gz"
        result = defacer("deface", t1_path, out, "--features", features, "-q")
        assert result.returncode == 0, result.stderr
        sidecar = json.loads((tmp_path / f"{name}.defacer.json").read_text())
        assert sidecar["parameters"]["features"] == ["eyes", "nose", "mouth"]
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_real_head_through_cli_never_touches_reference_brain(ixi_pairs, tmp_path):
    """An IXI head whose label map marks the whole scalp as 'nose': boxes span the head, brain stays."""
    t1_path, brain_path = ixi_pairs[0]
    head = read_volume(t1_path)
    brain = np.asarray(nib.load(brain_path).dataobj) > 0
    labels = np.zeros(head.shape3, np.uint8)
    labels[head.physical() > np.percentile(head.physical(), 60)] = LABEL_VALUES["nose"]
    labels[brain] = LABEL_VALUES["brain"]
    labels_path = write_volume(head.label_map(labels), tmp_path / "labels.nii.gz")
    out = tmp_path / "out.nii.gz"
    result = defacer("deface", t1_path, out, "--features-from", labels_path, "--features", "nose", "--json")
    assert result.returncode == 0, result.stderr
    defaced = read_volume(out)
    assert (defaced.array[brain] == head.array[brain]).all()
    removed = int((defaced.array != head.array).sum())
    assert removed > 1000, removed


def _nose_block_labels(head, path):
    """A label file marking a block of the anterior-inferior head as the nose (world LPS:
    anterior is -y, inferior is -z); its path and the block's voxel indices."""
    labels = np.zeros(head.shape3, np.uint8)
    world = head.index_to_world(np.indices(head.shape3).reshape(3, -1).T)
    block = (world[:, 1] < np.percentile(world[:, 1], 25)) & (world[:, 2] < np.percentile(world[:, 2], 50))
    labels.reshape(-1)[block] = LABEL_VALUES["nose"]
    return write_volume(head.label_map(labels), path), np.argwhere(labels)


def test_dicom_series_in_gives_dicom_series_out(data_dir, tmp_path):
    series = data_dir / "dicom/siemens_trio_mprage_1mm"
    head = read_volume(series)
    labels_path, block = _nose_block_labels(head, tmp_path / "labels.nii.gz")
    out = tmp_path / "defaced_series"
    key_file = tmp_path / "project.key"
    result = defacer("deface", series, out, "--features-from", labels_path, "--features", "nose", "--margin-mm", "0",
                     "--key-file", key_file, "--json")
    assert result.returncode == 0, result.stderr
    inputs = sorted(p.name for p in series.glob("*.dcm"))
    outputs = sorted(p.name for p in out.iterdir())
    assert outputs == inputs
    defaced = read_volume(out)
    assert np.allclose(defaced.affine_lps, head.affine_lps)
    changed = defaced.array != head.array
    assert changed.sum() > 1000
    # with no margin, nothing changes outside the block's bounding box in index space
    low, high = block.min(axis=0), block.max(axis=0) + 1
    inside_box = np.zeros(head.shape3, bool)
    inside_box[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = True
    assert not changed[~inside_box].any()
    # a new, de-identified series: geometry tags kept, identity gone, markers say what was done
    first_in = pydicom.dcmread(series / inputs[0])
    first_out = pydicom.dcmread(out / inputs[0])
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
                    "BitsAllocated", "PixelRepresentation", "Modality"):
        assert first_out.get(keyword) == first_in.get(keyword), keyword
    assert first_out.SeriesInstanceUID != first_in.SeriesInstanceUID
    assert first_out.SOPInstanceUID.startswith("2.25.")
    assert first_out.PatientIdentityRemoved == "YES"
    # its pixels are derived from the scan's: ORIGINAL\PRIMARY\M\ND\NORM -> DERIVED\SECONDARY\M\ND\NORM
    assert list(first_out.ImageType) == ["DERIVED", "SECONDARY", *list(first_in.ImageType)[2:]]
    codes = {item.CodeValue for item in first_out.DeidentificationMethodCodeSequence}
    assert {"113100", "113102"} <= codes
    assert str(first_in.PatientName) not in str(first_out.PatientName)
    assert len({pydicom.dcmread(out / name, stop_before_pixels=True).SeriesInstanceUID for name in outputs}) == 1
    audit = tmp_path / "defaced_series.audit"
    assert (audit / "uid_mapping.csv").is_file() and (audit / "defacer.json").is_file()
    record = json.loads((audit / "defacer.json").read_text())
    assert record["report"]["protected_voxels_changed"] == 0
    # the series' notes file is not an image of it: not copied, and the private sidecar says so
    assert record["dicom"]["files_not_copied"] == ["00001.dcm.nfo"] and not (out / "00001.dcm.nfo").exists()


def test_enhanced_dicom_folder_in_gives_folder_out(data_dir, tmp_path):
    """A folder holding one enhanced multi-frame file gives a folder holding one defaced file of
    the same name (it asked for a .dcm file name instead); a .dcm output still names a file."""
    folder = data_dir / "dicom/siemens_xa30_enhanced_multiframe_t1"
    head = read_volume(folder)
    labels_path, _ = _nose_block_labels(head, tmp_path / "labels.nii.gz")
    out = tmp_path / "defaced"
    result = defacer("deface", folder, out, "--features-from", labels_path, "--features", "nose",
                     "--key-file", tmp_path / "project.key", "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in folder.iterdir()) == ["0001.dcm"]
    defaced = read_volume(out)
    assert defaced.source.format == "dicom-enhanced" and defaced.shape3 == head.shape3 == (128, 128, 96)
    assert np.allclose(defaced.affine_lps, head.affine_lps, atol=1e-4)
    assert np.count_nonzero(defaced.array != head.array) > 1000
    assert list(pydicom.dcmread(out / "0001.dcm", stop_before_pixels=True).ImageType)[:2] == ["DERIVED", "PRIMARY"]
    # the audit's record names the input series and the key: 0600 as the mappings beside it (it was 0644)
    audit = tmp_path / "defaced.audit"
    assert {p.name: p.stat().st_mode & 0o777 for p in audit.iterdir()} == {
        name: 0o600 for name in ("actions.jsonl", "defacer.json", "patid_mapping.csv", "summary.json", "uid_mapping.csv")}
    as_file = tmp_path / "defaced.dcm"
    result = defacer("deface", folder, as_file, "--features-from", labels_path, "--features", "nose",
                     "--key-file", tmp_path / "project.key", "-q")
    assert result.returncode == 0 and as_file.is_file(), result.stderr


# ---- bad input: one line, right exit code, no partial output, input untouched --------------

def test_truncated_gzip(data_dir, tmp_path, phantom_files):
    broken = tmp_path / "broken.nii.gz"
    raw = (data_dir / "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz").read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])
    result = defacer("deface", broken, tmp_path / "out.nii.gz", "--features-from", phantom_files[1])
    assert_one_line_error(result, 3, "broken.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.nii.gz"]


def test_two_dimensional_dicom(data_dir, tmp_path, phantom_files):
    result = defacer("deface", data_dir / "dicom/deid_samples/image1.dcm", tmp_path / "o.dcm",
                     "--features-from", phantom_files[1])
    assert_one_line_error(result, 3, "2D")
    assert list(tmp_path.iterdir()) == []


def test_empty_folder_and_missing_path(tmp_path, phantom_files):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(defacer("info", empty), 3)
    assert_one_line_error(defacer("info", tmp_path / "nothing.nii.gz"), 3, "nothing.nii.gz")


def test_a_dicom_write_that_fails_leaves_no_new_key(data_dir, tmp_path, monkeypatch):
    """The key is made when the DICOM output's de-identification is set up; a write that then
    fails (here: a full disk) publishes nothing, so the new key goes too."""
    import DeFacerLib.io
    from DeFacerLib.deface.pipeline import DefaceParameters
    from DeFacerLib.deface.workflow import deface_file
    from DeFacerLib.errors import OutputError

    series = data_dir / "dicom/siemens_trio_mprage_1mm"
    labels_path, _block = _nose_block_labels(read_volume(series), tmp_path / "labels.nii.gz")

    def full_disk(*args, **kwargs):
        raise OutputError("cannot write defaced_series: No space left on device")

    monkeypatch.setattr(DeFacerLib.io, "write_volume", full_disk)
    key_file, out = tmp_path / "new.key", tmp_path / "defaced_series"
    with pytest.raises(OutputError, match="No space left"):
        deface_file(series, out, parameters=DefaceParameters(features=("nose",), margin_mm=0.0),
                    labels_path=labels_path, key_file=key_file)
    assert not key_file.exists() and not out.exists()


@pytest.mark.parametrize("name", ["defaced.nii.gz", "defaced.mgz", "defaced.nrrd"])
def test_a_dicom_input_refuses_another_formats_output_name_before_any_work(data_dir, tmp_path, name):
    """DICOM in gives DICOM out: such a name was refused only once the model had run (6-8 s)."""
    result = defacer("deface", data_dir / "dicom/siemens_trio_mprage_1mm", tmp_path / name, "--key-file", tmp_path / "k")
    assert_one_line_error(result, 4, "named for another format", "DICOM in gives DICOM out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_key_file_inside_the_output_series_is_refused(data_dir, tmp_path):
    """--key-file OUT/deid.key: the defaced series was published with its secret key in it."""
    out = tmp_path / "defaced_series"
    result = defacer("deface", data_dir / "dicom/siemens_trio_mprage_1mm", out, "--key-file", out / "deid.key")
    assert_one_line_error(result, 4, "key file", "inside the output")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing", ["render", "figure"])
def test_qa_that_fails_leaves_no_output(failing, data_dir, tmp_path, monkeypatch):
    """``--qa`` asks for the output and its picture: all of it or nothing. A render that fails (no
    OpenGL here) stops the run before anything is written; a picture that cannot be saved after
    the output was published takes the output, its audit folder and the new key back. Before,
    both left a defaced series and its audit behind a non-zero exit."""
    import DeFacerLib.qa
    import DeFacerLib.qa.render
    from DeFacerLib.deface.pipeline import DefaceParameters
    from DeFacerLib.deface.workflow import deface_file

    series = data_dir / "dicom/siemens_trio_mprage_1mm"
    labels_path, _block = _nose_block_labels(read_volume(series), tmp_path / "labels.nii.gz")

    def fails(*args, **kwargs):
        raise RuntimeError("no OpenGL context" if failing == "render" else "No space left on device")

    if failing == "render":
        monkeypatch.setattr(DeFacerLib.qa.render, "render_views", fails)
    else:
        monkeypatch.setattr(DeFacerLib.qa, "before_after_figure", fails)
    key_file, out, qa_dir = tmp_path / "new.key", tmp_path / "defaced_series", tmp_path / "qa"
    with pytest.raises(RuntimeError):
        deface_file(series, out, parameters=DefaceParameters(features=("nose",), margin_mm=0.0),
                    labels_path=labels_path, key_file=key_file, qa_dir=qa_dir)
    assert not key_file.exists() and not out.exists() and not (tmp_path / "defaced_series.audit").exists()
    assert not qa_dir.exists() or not any(qa_dir.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["labels.nii.gz", *(["qa"] if qa_dir.exists() else [])])


def test_qa_that_fails_keeps_the_output_it_would_have_replaced(data_dir, tmp_path, monkeypatch):
    """With --overwrite, a QA picture that cannot be saved left neither the earlier output nor the
    new one (the new had replaced the old before the picture failed, and was then taken back). The
    picture is now saved before the output is written: the earlier output and its sidecar stay
    byte for byte."""
    import DeFacerLib.qa
    from DeFacerLib.deface.pipeline import DefaceParameters
    from DeFacerLib.deface.workflow import deface_file

    source = data_dir / "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
    out = tmp_path / "defaced.nii.gz"
    deface_file(source, out, parameters=DefaceParameters(features=("eyes",)))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DeFacerLib.qa, "before_after_figure", full_disk)
    with pytest.raises(OSError):
        deface_file(source, out, parameters=DefaceParameters(), qa_dir=tmp_path / "qa", overwrite=True)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "qa"}
    assert after == before and sorted(before) == ["defaced.defacer.json", "defaced.nii.gz"]


def test_take_back_removes_an_enhanced_files_audit_folder(data_dir, tmp_path):
    """take_back (the Slicer batch's undo of an item) found a DICOM output's audit folder only
    beside a folder output: an enhanced image written as one .dcm file kept OUT.audit/, whose
    mappings hold the original patient IDs."""
    from DeFacerLib.deface.pipeline import DefaceParameters
    from DeFacerLib.deface.workflow import deface_file, take_back

    out = tmp_path / "defaced.dcm"
    outcome = deface_file(data_dir / "dicom/siemens_xa30_enhanced_multiframe_t1", out,
                          parameters=DefaceParameters(), key_file=tmp_path / "project.key")
    assert out.is_file() and (tmp_path / "defaced.dcm.audit" / "defacer.json").is_file()
    take_back(outcome)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.key"]


def test_nothing_to_scrub_or_batch_leaves_no_output(tmp_path):
    """An empty folder, or one non-DICOM file, is an error before any output or audit trail exists."""
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM\n")
    out = tmp_path / "out"
    key = ("--key-file", tmp_path / "key")
    assert_one_line_error(defacer("scrub", empty, out, *key), 3, "holds no files")
    assert_one_line_error(defacer("scrub", text, tmp_path / "notes.dcm", *key), 3, "not a DICOM file")
    assert_one_line_error(defacer("batch", empty, out, "--scrub-only", *key), 3, "holds no files")
    # no key file either: a key made for a run that published nothing goes with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "notes.txt"]


def test_a_refused_scrub_leaves_no_new_key(tmp_path, data_dir):
    """An output that exists (no --overwrite) is refused after the key is made: the new key goes
    too, and a key that was there before stays as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep\n")
    series = data_dir / "dicom" / "fake_phi_ct"
    assert_one_line_error(defacer("scrub", series, out, "--key-file", tmp_path / "new.key"), 4, "exists")
    assert not (tmp_path / "new.key").exists()
    old_key = tmp_path / "old.key"
    old_key.write_text(bytes(range(32)).hex() + "\n")
    assert_one_line_error(defacer("scrub", series, out, "--key-file", old_key), 4, "exists")
    assert old_key.read_text() == bytes(range(32)).hex() + "\n"
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_not_an_image(tmp_path):
    text = tmp_path / "notes.nii"
    text.write_text("this is not a NIfTI file\n" * 20)
    assert_one_line_error(defacer("info", text), 3, "notes.nii")


def test_output_equal_to_input_is_refused(phantom_files):
    head_path, labels_path, _ = phantom_files
    before = digest(head_path)
    result = defacer("deface", head_path, head_path, "--features-from", labels_path)
    assert_one_line_error(result, 4, "input")
    assert digest(head_path) == before


def test_existing_output_needs_overwrite(phantom_files, tmp_path):
    head_path, labels_path, _ = phantom_files
    out = tmp_path / "exists.nii.gz"
    out.write_bytes(b"keep me")
    result = defacer("deface", head_path, out, "--features-from", labels_path)
    assert_one_line_error(result, 4, "--overwrite")
    assert out.read_bytes() == b"keep me"
    result = defacer("deface", head_path, out, "--features-from", labels_path, "--overwrite", "-q")
    assert result.returncode == 0, result.stderr
    assert read_volume(out).shape3 == read_volume(head_path).shape3


def test_usage_errors(phantom_files, tmp_path):
    head_path, labels_path, _ = phantom_files
    result = defacer("deface", head_path, tmp_path / "o.nii.gz", "--features-from", labels_path, "--features", "lips")
    assert_one_line_error(result, 2, "lips")
    result = defacer("deface", head_path, tmp_path / "o.nii.gz", "--features-from", labels_path, "--margin-mm", "x")
    assert_one_line_error(result, 2, "--margin-mm")
    for option, value in (("--protect-margin-mm", "-5"), ("--max-depth-mm", "nan"), ("--seal-mm", "inf")):
        result = defacer("deface", head_path, tmp_path / "o.nii.gz", "--features-from", labels_path, option, value)
        assert_one_line_error(result, 2, option, ">= 0 mm")
    assert list(tmp_path.iterdir()) == []


def test_labels_on_another_grid_are_refused(phantom_files, data_dir, tmp_path):
    head = data_dir / "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
    result = defacer("deface", head, tmp_path / "o.nii.gz", "--features-from", phantom_files[1])
    assert_one_line_error(result, 3, "grid")
    assert list(tmp_path.iterdir()) == []


def test_mixed_series_folder_lists_series(data_dir, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for file in sorted((data_dir / "dicom/siemens_trio_mprage_1mm").glob("*.dcm"))[:5]:
        shutil.copy(file, mixed / file.name)
    for file in (data_dir / "dicom/fake_phi_ct").glob("*.dcm"):
        shutil.copy(file, mixed / file.name)
    result = defacer("info", mixed)
    assert_one_line_error(result, 3, "--series")


def test_a_shield_that_cannot_be_placed_is_refused(phantom_files, tmp_path):
    """--shield was silently left out (exit 0, sidecar "shield": true, no shield): with options it
    cannot go with it is a usage error before any work; unplaceable on the head (no eyes
    labelled) it is exit 5 with nothing written."""
    head, labels_path, labels = phantom_files
    out = tmp_path / "out.nii.gz"
    assert_one_line_error(defacer("deface", head, out, "--features-from", labels_path, "--shield", "--no-whole-face"),
                          2, "--no-whole-face")
    assert_one_line_error(defacer("deface", head, out, "--features-from", labels_path, "--shield", "--features", "ears"),
                          2, "--features")
    no_eyes = read_volume(labels_path)
    no_eyes.array[labels == LABEL_VALUES["eyes"]] = 0
    no_eyes_path = write_volume(no_eyes, tmp_path / "no_eyes.nii.gz")
    assert_one_line_error(defacer("deface", head, out, "--features-from", no_eyes_path, "--shield"), 5, "face shield")
    assert not out.exists() and list(tmp_path.iterdir()) == [no_eyes_path]
    placed = defacer("deface", head, out, "--features-from", labels_path, "--shield", "--json")
    assert placed.returncode == 0, placed.stderr
    assert json.loads(placed.stdout)["report"]["shield_voxels"] > 10_000


def test_qa_folder_inside_the_output_or_an_input_and_odd_names(data_dir, phantom_files, tmp_path):
    """The QA picture shows the ORIGINAL face: inside a DICOM output it would ship with the data
    meant to be shared, inside the input folder it would change it; both are refused before any
    work. A "[/x]" in the QA folder's name is text (the console read it as markup: exit 1 after
    the outputs were written)."""
    series = data_dir / "dicom/siemens_trio_mprage_1mm"
    out = tmp_path / "series_defaced"
    for qa in (out / "qa", series / "qa"):
        assert_one_line_error(defacer("deface", series, out, "--qa", qa, "--key-file", tmp_path / "k.key"), 4, "QA folder")
    assert not out.exists() and not (series / "qa").exists() and not (tmp_path / "k.key").exists()
    head, labels_path, _ = phantom_files
    odd = tmp_path / "qa[/x]"
    result = defacer("deface", head, tmp_path / "out.nii.gz", "--features-from", labels_path, "--qa", odd)
    assert result.returncode == 0, result.stderr
    assert "qa[/x]" in result.stdout and (odd / "out_before_after.png").is_file()


def test_demo_runs_end_to_end(tmp_path):
    # as `make demo` runs it: a relative output folder below the current directory
    result = defacer("demo", "--out", "demo", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)["outputs"]
    assert len(outputs) == 2
    for outcome in outputs:
        assert outcome["report"]["protected_voxels_changed"] == 0
        assert set(outcome["features_removed"]) == {"eyes", "nose", "mouth", "ears"}
        assert (tmp_path / outcome["qa_figure"]).stat().st_size > 10_000


def test_no_feature_found_is_an_error_not_a_silent_copy(phantom_files, tmp_path):
    """A label map without the requested feature (as for an already defaced head): exit 3, nothing written."""
    head_path, _, labels = phantom_files
    head = read_volume(head_path)
    without_nose = np.where(labels == LABEL_VALUES["nose"], 0, labels).astype(np.uint8)
    labels_path = write_volume(head.label_map(without_nose), tmp_path / "no_nose.nii.gz")
    out = tmp_path / "out.nii.gz"
    result = defacer("deface", head_path, out, "--features-from", labels_path, "--features", "nose")
    assert_one_line_error(result, 3, "already defaced")
    assert not out.exists() and not (tmp_path / "out.defacer.json").exists()


def test_sigterm_mid_write_leaves_no_partial_output(data_dir, tmp_path):
    """SIGTERM (a scheduler's time limit) ends a run as Ctrl-C does: the temporary output
    folder, which is written into while the series is scrubbed, is removed; exit 143, one line."""
    import signal
    import time

    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "DeFacerLib", "scrub", str(data_dir / "dicom" / "siemens_trio_mprage_1mm"),
         str(out / "series"), "--key-file", str(tmp_path / "project.key"), "-q"],
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(entry.name.endswith(".partial") for entry in out.iterdir()):  # the write has begun
        assert process.poll() is None and time.monotonic() < deadline, "the scrub ended before its output was begun"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert_one_line_error(result, 143, "terminated")
    assert list(out.iterdir()) == []


def test_a_failure_with_a_report_still_gives_it_under_json(data_dir, tmp_path):
    """A scripted `scrub --json` (or batch) with a file that cannot be scrubbed exits 3 with the
    one-line error, and still gives its summary on stdout, as qa gives its FAIL report: the
    other files were published, and the script needs failed_files to know which one to redo.
    Before, stdout was empty. Its ``seconds`` is the scrub's own, as in its summary.json."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("image1.dcm", "image2.dcm"):
        shutil.copy(data_dir / "dicom/deid_samples" / name, tree / name)
    (tree / "trunc.dcm").write_bytes((data_dir / "dicom/deid_samples/image3.dcm").read_bytes()[:3000])
    result = defacer("scrub", tree, tmp_path / "out", "--key-file", tmp_path / "key", "--json")
    assert_one_line_error(result, 3, "1 of 3 file(s) could not be scrubbed", "trunc.dcm")
    summary = json.loads(result.stdout)
    assert (summary["files"], summary["written"], summary["failed"]) == (3, 2, 1)
    assert [entry["file"] for entry in summary["failed_files"]] == ["trunc.dcm"]
    on_disk = json.loads((tmp_path / "out.audit" / "summary.json").read_text())
    assert summary["seconds"] == on_disk["seconds"]  # not replaced by the command's wall time
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["image1.dcm", "image2.dcm"]
    result = defacer("batch", tree, tmp_path / "batch", "--scrub-only", "--workers", "1", "--key-file", tmp_path / "key",
                     "--json")
    assert_one_line_error(result, 3, "1 of 3 file(s) failed", "trunc.dcm")
    summary = json.loads(result.stdout)
    assert (summary["files"], summary["written"], summary["failed"]) == (3, 2, 1)
    assert "trunc.dcm" in summary["failed_items"][0]["reason"]
    # nothing of it was written: its reason no longer opens with "headers de-identified"
    assert "de-identified" not in summary["failed_items"][0]["reason"], summary["failed_items"][0]


def test_usage_mistakes_of_a_script_are_one_line_and_exit_2(tmp_path):
    """Nothing on stdout, one line on stderr, exit 2, pointing at the command's own help."""
    result = defacer()  # no command: was the whole help on stdout
    assert_one_line_error(result, 2, "give a command", "deface", "scrub")
    assert result.stdout == ""
    result = defacer("--json", "info", tmp_path / "head.nii.gz")  # --json before the command
    assert_one_line_error(result, 2, "--json goes after the command name", "defacer info --help")
    assert result.stdout == ""
    result = defacer("info", tmp_path / "head.nii.gz", "--bogus")
    assert_one_line_error(result, 2, "unrecognized arguments: --bogus", "see defacer info --help")
    assert list(tmp_path.iterdir()) == []


def test_every_option_with_a_default_says_it_in_its_help():
    """`defacer CMD --help` shows what an option does when it is not given."""
    from DeFacerLib.cli.main import COMMAND_MODULES, build_parser

    import argparse
    import importlib

    missing = []
    for module_name in COMMAND_MODULES:
        name = importlib.import_module(f"DeFacerLib.cli.{module_name}").NAME
        commands = next(a for a in build_parser(name)._actions if isinstance(a, argparse._SubParsersAction))
        for action in commands.choices[name]._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                    and "default" not in (action.help or ""):
                missing.append(f"{name} {action.option_strings[-1]}")
    assert missing == []


def test_scrub_and_batch_print_odd_folder_names_as_they_are(data_dir, tmp_path):
    """A "[/x]" in an output folder's name (rich markup) ended a scrub or a batch that had published
    its output with an internal error, exit 1; the path is now printed as it is."""
    import os

    def wide(*args):  # no line wrapping inside the paths
        return subprocess.run([sys.executable, "-m", "DeFacerLib", *map(str, args)], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "COLUMNS": "1000"})

    (tmp_path / "o[").mkdir()
    out = tmp_path / "o[" / "x]"
    result = wide("scrub", data_dir / "dicom/fake_phi_ct", out, "--key-file", tmp_path / "key")
    assert result.returncode == 0, result.stderr
    assert f"-> {out}\n" in result.stdout and f"{out}.audit\n" in result.stdout
    batch_out = tmp_path / "o[" / "batch]"
    result = wide("batch", data_dir / "dicom/fake_phi_ct", batch_out, "--scrub-only", "--workers", "1",
                  "--key-file", tmp_path / "key")
    assert result.returncode == 0, result.stderr
    assert f"report: {batch_out}/.defacer/report.html\n" in result.stdout and f"{batch_out}.audit\n" in result.stdout


def test_safety_warnings_go_to_stderr_even_under_quiet(data_dir, tmp_path):
    """What a user must act on before sharing is one `defacer: warning:` line on stderr, which -q
    keeps (a quiet script's log holds it) and --json leaves to the JSON. Before, photo's cosmetic
    method and its images written unchanged (no face found) were said only on stdout, and -q
    silenced them; a DICOM series that says its pixels carry burned-in text was defaced without a
    word, and its new key was made silently."""
    import cv2

    folder = tmp_path / "visit"
    folder.mkdir()
    shutil.copy(data_dir / "photos" / "known_people" / "obama-480p.jpg", folder / "face.jpg")
    cv2.imwrite(str(folder / "wall.png"), np.full((240, 320, 3), 128, np.uint8))
    result = defacer("photo", folder, "-o", tmp_path / "blurred", "--method", "blur", "-q")
    assert result.returncode == 0 and result.stdout == "", result.stdout
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2 and all(line.startswith("defacer: warning: ") for line in warnings), warnings
    assert "blur (cosmetic: not de-identifying)" in warnings[0]
    assert "1 image(s) had no face found" in warnings[1] and "wall.png" in warnings[1]
    assert defacer("photo", folder / "face.jpg", "-o", tmp_path / "filled.jpg", "-q").stderr == ""  # the default de-identifies

    series = tmp_path / "series"
    series.mkdir()
    ds = pydicom.dcmread(data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1" / "0001.dcm")
    ds.BurnedInAnnotation = "YES"  # the same series, saying text is burned into its pixels
    ds.save_as(series / "0001.dcm")
    key = tmp_path / "new.key"
    result = defacer("deface", series, tmp_path / "defaced", "--key-file", key)
    assert result.returncode == 0, result.stderr
    assert f"new key stored in {key} (keep it secret" in " ".join(result.stdout.split()) and key.is_file()
    assert result.stderr.startswith("defacer: warning: the input series says its pixels carry burned-in text")
    assert len(result.stderr.splitlines()) == 1
    # it sent the defaced head to `defacer scrub --clean-pixel-data`, whose OCR blacked out 104,235
    # voxels of the brain the deface had kept (the Trio MPRAGE series said Burned In Annotation YES)
    assert "blacks out" in result.stderr and "scrub it with" not in result.stderr, result.stderr
    as_json = defacer("deface", series, tmp_path / "defaced", "--key-file", key, "--json", "--overwrite")
    report = json.loads(as_json.stdout)
    assert as_json.stderr == "" and report["burned_in_annotation"] is True
    assert report["key_created"] is False and report["key_file"] == str(key)


def test_scrub_and_batch_print_colon_words_in_paths_as_they_are(data_dir, tmp_path):
    """rich turned ":cd:" in a path into an emoji (/out:cd:x was printed as /out💿x, its audit
    folder too): the paths a user copies from the console must be the real ones."""
    import os

    def wide(*args):
        return subprocess.run([sys.executable, "-m", "DeFacerLib", *map(str, args)], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "COLUMNS": "1000"})

    out = tmp_path / "out:cd:x"
    result = wide("scrub", data_dir / "dicom/fake_phi_ct", out, "--key-file", tmp_path / "key")
    assert result.returncode == 0, result.stderr
    assert f"-> {out}\n" in result.stdout and f"{out}.audit\n" in result.stdout
    batch_out = tmp_path / "batch:ok:"
    result = wide("batch", data_dir / "dicom/fake_phi_ct", batch_out, "--scrub-only", "--workers", "1",
                  "--key-file", tmp_path / "key")
    assert result.returncode == 0, result.stderr
    assert f"report: {batch_out}/.defacer/report.html\n" in result.stdout and f"{batch_out}.audit\n" in result.stdout


def test_scrub_and_batch_keep_long_paths_on_one_line_in_a_log(data_dir, tmp_path):
    """Their output piped to a log (no terminal: rich's 80 columns) folded a long output path
    across two lines, so the path copied from the log was not the folder's."""
    import os

    deep = tmp_path / ("a_folder_name_long_enough_" * 4)
    deep.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = deep / "out"
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "scrub", str(data_dir / "dicom/fake_phi_ct"), str(out),
                             "--key-file", str(tmp_path / "key")], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert f"-> {out}\n" in result.stdout and f"private): {out}.audit\n" in result.stdout
    batch_out = deep / "batch"
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "batch", str(data_dir / "dicom/fake_phi_ct"), str(batch_out),
                             "--scrub-only", "--workers", "1", "--key-file", str(tmp_path / "key")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert f"report: {batch_out}/.defacer/report.html\n" in result.stdout and f"private): {batch_out}.audit\n" in result.stdout


def test_photo_warns_of_what_a_missed_face_leaves_in_dicom_video_and_recording(data_dir, tmp_path):
    """A DICOM photo with no face found is copied as it was, its header (the patient's name)
    included; a video or a camera recording with no face in any frame is written unchanged.
    Under -q the first was said only by the stdout note, the others not at all."""
    from DeFacerLib.sharing_warnings import for_photo as safety_warnings

    source = data_dir / "dicom" / "deid_samples" / "GREYSCALE_IMAGE.dcm"  # an ultrasound: no face
    result = defacer("photo", source, "-o", tmp_path / "out.dcm", "-q")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert "header included" in result.stderr and "defacer scrub" in result.stderr, result.stderr
    video = {"outputs": [{"input": "a.mp4", "output": "b.mp4", "kind": "video", "faces": 0, "method": "fill",
                          "de_identifying": True}], "faces": 0}
    assert any("no face found in any frame" in line and "a.mp4" in line for line in safety_warnings(video))
    recording = {"camera": "0", "frames": 90, "faces": 0, "method": "fill", "de_identifying": True, "output": "rec.mp4"}
    assert any("rec.mp4" in line for line in safety_warnings(recording))
    assert safety_warnings({**recording, "output": None}) == []  # shown, not written
    assert safety_warnings({**recording, "faces": 12}) == []


def test_deface_refuses_ocr_pixel_cleaning_before_any_work(data_dir, tmp_path):
    """`deface --clean-pixel-data` on an MR series ran for minutes, blacked out OCR "words" in
    the anatomy, then exited 5 blaming the DICOM writer; it is a usage error up front (exit 2)
    that says where the option belongs."""
    series = data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1"
    result = defacer("deface", series, tmp_path / "out", "--clean-pixel-data", "--key-file", tmp_path / "key")
    assert_one_line_error(result, 2, "is for `defacer scrub`", "blacks out")
    assert "scrub the defaced series with --clean-pixel-data" not in result.stderr  # the same OCR over the same head
    assert list(tmp_path.iterdir()) == []  # no output, no audit folder, no key
