"""`defacer info / deface / qa / demo` on damaged and odd inputs: headers
without an orientation, protection that keeps the whole face, images given as label maps,
scaled label maps, corrupt NIfTI/MGH shapes, unreadable files, markup-like header text, empty
folder options and QA pictures of one subject's runs."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

IXI = "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
BRAIN = "heads/ixi/brain_labels/IXI132-HH-1415_T1_DLMUSE.nii.gz"


REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's DeFacerLib, whatever the working folder


def defacer(*args, prefix=(), cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "DeFacerLib", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=ENV, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, exit_code: int, *words: str) -> str:
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("defacer: error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def patched_nifti(source: Path, target: Path, compress: bool = True, **fields) -> Path:
    """``source`` with header fields set to ``fields`` (the voxel bytes as they are)."""
    raw = gzip.decompress(source.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for name, value in fields.items():
        header[name] = value
    data = header.binaryblock + raw[348:]
    target.write_bytes(gzip.compress(data) if compress else data)
    return target


def test_a_nifti_without_orientation_is_refused_before_its_brain_is_cut(data_dir, tmp_path):
    """qform_code = sform_code = 0: nibabel's fallback matrix points the axes elsewhere, and the
    face cut and brain guard followed it (258 reference-brain voxels of IXI132 changed, exit 0)."""
    head = patched_nifti(data_dir / IXI, tmp_path / "no_orientation.nii.gz", qform_code=0, sform_code=0)
    out = tmp_path / "out.nii.gz"
    one_line_error(defacer("deface", head, out), 3, "no orientation", "qform_code")
    assert not out.exists() and not (tmp_path / "out.defacer.json").exists()
    info = defacer("info", head, "--json")
    assert info.returncode == 0 and "not in the header" in info.stdout


def test_a_protection_that_keeps_every_face_voxel_is_refused(data_dir, tmp_path):
    """--protect-margin-mm 1000 kept every voxel: exit 0, a table of 'removed ... 0', the face whole."""
    out = tmp_path / "out.nii.gz"
    one_line_error(defacer("deface", data_dir / IXI, out, "--protect-margin-mm", "1000", "-q"), 5,
                   "no voxel of the eyes", "--protect-margin-mm")
    assert not out.exists() and not (tmp_path / "out.defacer.json").exists()


def test_an_image_given_as_a_label_map_is_refused(data_dir, tmp_path):
    """The head itself as --features-from: its voxels of value 1-4 became 'features' all over
    the head, 5 its 'brain': 80,817 of 179,733 reference-brain voxels cut, exit 0."""
    for labels in (data_dir / IXI, data_dir / BRAIN):  # an image; another tool's parcellation
        out = tmp_path / "out.nii.gz"
        one_line_error(defacer("deface", data_dir / IXI, out, "--features-from", labels), 3,
                       "not a DeFacer label map")
        assert not out.exists()


@pytest.fixture(scope="module")
def ixi_labels(data_dir, tmp_path_factory) -> Path:
    from DeFacerLib.deface.pipeline import find_features
    from DeFacerLib.features import LABEL_VALUES
    from DeFacerLib.io import read_volume

    head = read_volume(data_dir / IXI)
    found = find_features(head)
    labels = np.zeros(head.shape3, np.uint8)
    for name, code in LABEL_VALUES.items():
        labels[found.masks[name]] = code
    path = tmp_path_factory.mktemp("labels") / "labels.nii.gz"
    nib.save(nib.Nifti1Image(labels, nib.load(data_dir / IXI).affine, dtype=np.uint8), path)
    return path


def test_a_scaled_label_map_is_read_by_its_values(data_dir, ixi_labels, tmp_path):
    """Float labels written into an int16 header are stored through a slope and intercept: the stored
    values matched no label ('face not found'), and as --protect-from every voxel was 'non-zero'."""
    plain = nib.load(ixi_labels)
    scaled_image = nib.Nifti1Image(np.asarray(plain.dataobj).astype(np.float64), plain.affine)
    scaled_image.set_data_dtype(np.int16)
    scaled = tmp_path / "scaled.nii.gz"
    nib.save(scaled_image, scaled)
    assert nib.load(scaled).dataobj.slope != 1.0  # nibabel did scale it
    outputs = {}
    for name, labels in (("plain", ixi_labels), ("scaled", scaled)):
        outputs[name] = tmp_path / f"{name}_defaced.nii.gz"
        assert defacer("deface", data_dir / IXI, outputs[name], "--features-from", labels, "-q").returncode == 0
    assert np.array_equal(np.asarray(nib.load(outputs["plain"]).dataobj), np.asarray(nib.load(outputs["scaled"]).dataobj))
    protected = tmp_path / "protected.nii.gz"
    assert defacer("deface", data_dir / IXI, protected, "--protect-from", scaled, "-q").returncode == 0


def test_a_label_map_whose_frames_differ_is_refused(data_dir, ixi_labels, tmp_path):
    """A 4D label map or protection mask was read by its first frame alone: a brain marked in the
    second frame was left unprotected. Frames that differ are refused (exit 3, nothing written);
    frames that agree are one map."""
    plain = np.asarray(nib.load(ixi_labels).dataobj)
    brain_later = np.stack([np.where(plain == 5, 0, plain), plain], axis=-1).astype(np.uint8)
    same = np.stack([plain, plain], axis=-1).astype(np.uint8)
    affine = nib.load(ixi_labels).affine
    for name, frames in (("brain_later", brain_later), ("same", same)):
        nib.save(nib.Nifti1Image(frames, affine, dtype=np.uint8), tmp_path / f"{name}.nii.gz")
    for option in ("--features-from", "--protect-from"):
        out = tmp_path / f"out{option}.nii.gz"
        one_line_error(defacer("deface", data_dir / IXI, out, option, tmp_path / "brain_later.nii.gz"), 3,
                       "2 frames that differ")
        assert not out.exists()
    same_out, plain_out = tmp_path / "same_out.nii.gz", tmp_path / "plain_out.nii.gz"
    for labels, out in ((tmp_path / "same.nii.gz", same_out), (ixi_labels, plain_out)):
        assert defacer("deface", data_dir / IXI, out, "--features-from", labels, "-q").returncode == 0
    assert np.array_equal(np.asarray(nib.load(same_out).dataobj), np.asarray(nib.load(plain_out).dataobj))


@pytest.mark.parametrize("case, fields, words", [
    ("fourth_dim_zero", {"dim": [4, 120, 120, 90, 0, 1, 1, 1]}, ["empty or negative dimension"]),  # internal error
    ("negative_dim", {"dim": [3, 120, -120, 90, 1, 1, 1, 1]}, ["empty or negative dimension"]),  # said "2D"
    ("huge", {"dim": [3, 32767, 32767, 32767, 1, 1, 1, 1]}, ["corrupt or truncated", "needs"]),  # "too large for memory"
    ("inf_pixdim", {"pixdim": [1, np.inf, 2, 2, 1, 1, 1, 1], "qform_code": 1, "sform_code": 0},
     ["invalid voxel-to-world"]),  # numpy's RuntimeWarning made it three lines
])
def test_corrupt_nifti_headers_are_one_line_input_errors(data_dir, tmp_path, case, fields, words):
    head = patched_nifti(data_dir / IXI, tmp_path / f"{case}.nii.gz", **fields)
    one_line_error(defacer("info", head), 3, *words)


def test_a_header_nibabel_repairs_is_written_back_as_read(data_dir, tmp_path):
    """pixdim < 0 with a qform: read fine, then get_best_affine() on the raw header raised at the
    write, after the whole run (exit 1)."""
    for name, pixdim in (("negative", [1, -2, 2, 2, 1, 1, 1, 1]),):
        head = patched_nifti(data_dir / IXI, tmp_path / f"{name}.nii.gz", pixdim=pixdim, qform_code=1, sform_code=0)
        out = tmp_path / f"{name}_out.nii.gz"
        result = defacer("deface", head, out, "-q")
        assert result.returncode == 0, result.stderr
        before, after = nib.load(head).header, nib.load(out).header
        for field in ("pixdim", "qform_code", "sform_code", "srow_x", "quatern_b"):
            assert np.asarray(before[field]).tobytes() == np.asarray(after[field]).tobytes(), field


def test_a_zero_voxel_size_without_an_sform_is_refused(data_dir, tmp_path):
    """pixdim[1] 0 with only a qform: nibabel took 1 mm for it and the head was defaced, exit 0,
    every mm (margins, depths, the model's 1.5 mm grid) on a guessed scale (bad-input audit)."""
    head = patched_nifti(data_dir / IXI, tmp_path / "zero.nii.gz", pixdim=[1, 0, 2, 2, 1, 1, 1, 1], qform_code=1,
                         sform_code=0)
    one_line_error(defacer("info", head), 3, "voxel size of 0 mm")
    one_line_error(defacer("deface", head, tmp_path / "out.nii.gz", "-q"), 3, "voxel size of 0 mm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero.nii.gz"]


def test_corrupt_mgh_files_say_what_they_are(data_dir, tmp_path):
    mgz = data_dir / "heads/single/mne_sample_T1.mgz"
    raw = bytearray(gzip.decompress(mgz.read_bytes()))
    raw[4:16] = np.array([100000] * 3, ">i4").tobytes()
    huge = tmp_path / "huge.mgz"
    huge.write_bytes(gzip.compress(bytes(raw)))
    one_line_error(defacer("info", huge), 3, "corrupt or truncated", "needs")  # was 3 lines, 'negative count'
    nifti = tmp_path / "nifti.mgz"
    shutil.copy(data_dir / IXI, nifti)
    one_line_error(defacer("info", nifti), 3, "is a NIfTI file")
    gz = tmp_path / "gz.mgh"
    shutil.copy(mgz, gz)
    one_line_error(defacer("info", gz), 3, "gzip-compressed")


def _without_read_permission() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("root reads any file; setpriv is needed to drop that")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps",
            "-dac_override,-dac_read_search")


def test_an_unreadable_input_says_so_and_is_not_called_corrupt(data_dir, tmp_path):
    """A file without read permission was 'corrupt or not gzip-compressed; re-export or re-copy it',
    a DICOM slice 'damaged; re-export or remove it', and a folder without it an internal error."""
    prefix = _without_read_permission()
    locked = tmp_path / "locked.nii.gz"
    shutil.copy(data_dir / IXI, locked)
    series = tmp_path / "series"
    shutil.copytree(data_dir / "dicom/siemens_trio_mprage_1mm", series)
    slice_ = series / "00050.dcm"
    folder = tmp_path / "folder"
    shutil.copytree(data_dir / "dicom/siemens_trio_mprage_1mm", folder)
    for path, mode in ((locked, 0o000), (slice_, 0o000), (folder, 0o000)):
        path.chmod(mode)
    try:
        for path in (locked, series, folder):
            line = one_line_error(defacer("info", path, prefix=prefix), 3, "permission denied")
            assert "corrupt" not in line and "remove it" not in line
    finally:
        folder.chmod(0o755)


def test_info_prints_markup_like_header_text_and_paths_as_text(data_dir, tmp_path):
    """A descrip "[/x] ..." or a folder "d[" holding "x]" ended `info` with an internal error
    (rich markup), and "[red]Doe[/red]" was printed as "Doe"."""
    folder = tmp_path / "d[" / "x]"
    folder.mkdir(parents=True)
    for text in (b"[/x] closing", b"[red]Patient Doe[/red]"):
        head = patched_nifti(data_dir / IXI, folder / "h.nii.gz", descrip=text)
        result = subprocess.run([sys.executable, "-m", "DeFacerLib", "info", str(head)], capture_output=True,
                                text=True, env={**ENV, "COLUMNS": "400"})
        assert result.returncode == 0, result.stderr
        assert text.decode() in result.stdout and "d[/x]" in result.stdout


@pytest.mark.parametrize("args", [
    ("deface", "IN", "OUT", "--features", ","),  # ran the model, then "face not found (missing: )"
    ("deface", "IN", "OUT", "--features", ""),  # an unset "$FEATURES" removed all four without a word
    ("deface", "IN", "OUT", "--margin-mm", "1e308"),  # internal error after the model
    ("deface", "IN", "OUT", "--qa", ""),  # "" is the current folder
    ("qa", "IN", "IN", "--out", ""),
    ("demo", "--out", ""),
])
def test_options_that_name_nothing_are_usage_errors(data_dir, tmp_path, args):
    args = [data_dir / IXI if a == "IN" else tmp_path / "out.nii.gz" if a == "OUT" else a for a in args]
    one_line_error(defacer(*args, cwd=tmp_path), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ("scrub", "", "OUT"),  # exit 0: it scrubbed the folder the shell stood in
    ("batch", "", "OUT", "--scrub-only"),
    ("info", ""),
    ("deface", "IN", "OUT", "--features-from", ""),
])
def test_an_empty_input_is_not_the_current_folder(data_dir, tmp_path, args):
    """An unset "$IN" read the current folder as the input."""
    here = tmp_path / "here"
    shutil.copytree(data_dir / "dicom" / "fake_phi_ct", here)
    args = [data_dir / IXI if a == "IN" else tmp_path / "out" if a == "OUT" else a for a in args]
    key = ["--key-file", tmp_path / "k.key"] if args[0] in ("scrub", "batch") else []
    one_line_error(defacer(*args, *key, cwd=here), 2, "is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_a_leading_tilde_is_the_home_folder_where_the_shell_left_it(data_dir, tmp_path):
    """`--key-file=~/k.key` and quoted "~/out" reach the program as they are: they made a folder
    named "~" in the current one (which `rm -rf ~` would then take the home folder for)."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    shutil.copytree(data_dir / "dicom" / "fake_phi_ct", home / "study")
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "scrub", "~/study", "~/scrubbed", "--key-file=~/k.key",
                             "--audit-dir=~/audit", "-q"], capture_output=True, text=True, timeout=600,
                            env={**ENV, "HOME": str(home)}, cwd=here)
    assert result.returncode == 0, result.stderr
    assert list(here.iterdir()) == []
    assert sorted(p.name for p in home.iterdir()) == ["audit", "k.key", "scrubbed", "study"]
    assert len(list((home / "scrubbed").glob("*.dcm"))) == 2


def test_qa_pictures_of_two_runs_of_one_subject_do_not_collide(data_dir, tmp_path):
    """sub-01.run-1 and sub-01.run-2 shared 'sub-01_before_after.png': the second replaced the first."""
    pytest.importorskip("vtk")
    for run in (1, 2):
        result = defacer("deface", data_dir / IXI, tmp_path / f"sub-01.run-{run}.nii.gz", "--qa", tmp_path / "qa", "-q")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "qa").iterdir()) == [
        "sub-01.run-1_before_after.png", "sub-01.run-2_before_after.png"]


@pytest.mark.parametrize("option", [("--key-file", "KEY"), ("--dates", "modified"), ("--retain-uids",),
                                    ("--pseudonym-format", "P-{hash8}")])
def test_dicom_header_options_for_a_volume_that_is_not_dicom_are_refused(data_dir, tmp_path, option):
    """They were ignored without a word: `--dates modified` on a NIfTI head exited 0."""
    option = [tmp_path / "k.key" if word == "KEY" else word for word in option]
    one_line_error(defacer("deface", data_dir / IXI, tmp_path / "out.nii.gz", *option), 2, option[0], "not DICOM")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_series_uid_for_a_file_that_holds_no_series_is_refused(data_dir, tmp_path):
    """--series with a NIfTI input was silently ignored: the run defaced the file as if it had
    picked the series asked for."""
    out = tmp_path / "out.nii.gz"
    one_line_error(defacer("deface", data_dir / IXI, out, "--series", "1.2.3"), 3, "picks nothing", "--series")
    assert not out.exists()


def test_an_output_under_a_file_names_the_file(data_dir, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "x.nii.gz"
    one_line_error(defacer("deface", data_dir / IXI, out), 4, "is a file")


def test_a_float_mask_whose_frames_agree_but_for_nan_is_one_mask(data_dir):
    """NaN never equals NaN: a float mask with a NaN background was refused as 'frames that differ'
    though its frames were the same."""
    from DeFacerLib.deface.pipeline import nonzero_mask
    from DeFacerLib.io import read_volume

    head = read_volume(data_dir / IXI)
    frame = np.where(head.array > np.percentile(head.array, 90), 1.0, np.nan).astype(np.float32)
    mask = head.label_map(np.zeros(head.shape3, np.uint8)).with_array(np.stack([frame, frame], axis=-1))
    assert np.array_equal(nonzero_mask(mask, head), frame != 0)
