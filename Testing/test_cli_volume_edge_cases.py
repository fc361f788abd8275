"""`defacer info / deface / qa` on real volumes at their edges: outputs that would delete the input or
other work, full disks, native reader noise, NaN voxels, mismatched QA pairs, side-output folders."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from DeFacerLib.errors import OutputError
from DeFacerLib.io import describe, read_volume, write_volume

IXI = "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
TRIO = "dicom/siemens_trio_mprage_1mm"


def defacer(*args, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "DeFacerLib", *map(str, args)], capture_output=True, text=True,
                          timeout=600, preexec_fn=preexec_fn)


def one_line_error(result: subprocess.CompletedProcess, exit_code: int, *words: str) -> str:
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("defacer: error:"), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(path.name.encode() + path.read_bytes())
    return sha.hexdigest()


def trio_slices(data_dir: Path, target: Path, count: int = 4) -> Path:
    """A short real DICOM series (enough slices to read as 3D)."""
    target.mkdir(parents=True)
    for index in range(80, 80 + count):
        shutil.copy(data_dir / TRIO / f"{index:05d}.dcm", target)
    return target


def limit_file_size(max_bytes: int):
    """preexec_fn: files may not grow past max_bytes (writes then fail with EFBIG, as on a full disk)."""
    def apply():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


# ---- outputs that would delete what is not theirs -------------------------------------------
def test_output_folder_holding_the_input_series_is_refused(data_dir, tmp_path):
    """`deface parent/series parent --overwrite` replaced `parent` as a whole: the input series and
    everything beside it were deleted, then the run died with an internal error."""
    parent = tmp_path / "parent"
    series = trio_slices(data_dir, parent / "series")
    (parent / "notes.txt").write_text("keep me")
    before = digest(parent)
    with pytest.raises(OutputError, match="holds the input"):
        write_volume(read_volume(series), parent, overwrite=True)
    assert digest(parent) == before


def test_overwrite_never_deletes_a_folder_of_other_work(data_dir, tmp_path):
    """--overwrite replaces a previous output of the same series, but not a folder holding other files."""
    series = trio_slices(data_dir, tmp_path / "series")
    volume = read_volume(series)
    output = tmp_path / "out"
    write_volume(volume, output)
    write_volume(volume, output, overwrite=True)  # a previous output of this input: replaced
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in series.iterdir())

    (output / "report.docx").write_text("someone's work")
    with pytest.raises(OutputError, match="report.docx"):
        write_volume(volume, output, overwrite=True)
    assert (output / "report.docx").read_text() == "someone's work"


# ---- a full disk ------------------------------------------------------------------------------
def test_a_full_disk_is_an_output_error_not_a_bug(data_dir, tmp_path):
    """A write that the file system refuses (here: a file-size limit, as a full disk or a quota)
    is exit 4 with one line, not exit 1 'internal error', and leaves no partial file."""
    out = tmp_path / "out"
    out.mkdir()
    result = defacer("deface", data_dir / IXI, out / "defaced.nii.gz", "-q", preexec_fn=limit_file_size(100_000))
    one_line_error(result, 4, "cannot write", "defaced.nii.gz")
    assert list(out.iterdir()) == []


def test_a_full_disk_under_a_dicom_series_names_no_traceback(data_dir, tmp_path):
    """pydicom re-raises the OSError with its whole traceback in the message; the error keeps one reason,
    and names the output, not the file in its hidden temporary folder (".out.x1y2.partial/00080.dcm")."""
    series = trio_slices(data_dir, tmp_path / "series")
    script = ("import sys\nfrom DeFacerLib.io import read_volume, write_volume\nfrom DeFacerLib.errors import OutputError\n"
              f"volume = read_volume({str(series)!r})\n"
              f"try:\n    write_volume(volume, {str(tmp_path / 'out')!r})\n"
              "except OutputError as error:\n    print(error)\n    sys.exit(4)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_file_size(20_000))
    assert result.returncode == 4, result.stderr
    message = result.stdout.strip()
    assert "\n" not in message and "Traceback" not in message and "File \"" not in message, message
    assert message == f"cannot write {tmp_path / 'out'}: File too large", message
    assert not (tmp_path / "out").exists()


def test_a_full_disk_under_the_audit_trail_of_a_defaced_series_is_an_output_error(data_dir, tmp_path):
    """Under a 300 kB file-size limit the defaced series' slices (130 kB) fit and its audit log
    (350 kB) does not: exit 1 "internal error (OSError: [Errno 27] File too large)"; `defacer
    scrub` said exit 4 for the same. The series and the new key are taken back."""
    out = tmp_path / "out"
    out.mkdir()
    result = defacer("deface", data_dir / TRIO, out / "series", "--key-file", out / "new.key", "-q",
                     preexec_fn=limit_file_size(300_000))
    one_line_error(result, 4, "cannot write the audit trail", "File too large")
    assert list(out.iterdir()) == []


def test_overwrite_onto_a_folder_at_the_sidecar_path_keeps_the_earlier_output(data_dir, tmp_path):
    """--overwrite replaced the earlier output, then failed on a folder where its sidecar goes
    (exit 1, internal error) and took the new output back: the earlier one was lost. Refused first."""
    output = tmp_path / "out.nii.gz"
    output.write_bytes(b"an earlier output")
    (tmp_path / "out.defacer.json").mkdir()
    one_line_error(defacer("deface", data_dir / IXI, output, "--overwrite"), 4, "out.defacer.json", "is a folder")
    assert output.read_bytes() == b"an earlier output"


# ---- Ctrl-C and SIGTERM where the command's code does not run yet -----------------------------
def run_cli_with_finder(finder_body: str, *args) -> subprocess.CompletedProcess:
    """`defacer ARGS` in a fresh Python whose import system first calls ``find_spec(name)``
    defined by ``finder_body``: a signal or failure placed at one import, with no timing."""
    script = ("import os, signal, sys\n"
              "class Finder:\n    def find_spec(self, name, path=None, target=None):\n"
              + "".join(f"        {line}\n" for line in finder_body.splitlines()) + "        return None\n"
              "sys.meta_path.insert(0, Finder())\nfrom DeFacerLib.cli.main import main\n"
              f"sys.exit(main({[str(a) for a in args]!r}))\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("signal_name, exit_code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_while_the_command_loads_is_one_line(data_dir, tmp_path, signal_name, exit_code, word):
    """Ctrl-C or SIGTERM in the first second, while argument parsing imports the photo command's
    modules (OpenCV, SimpleITK): a 30-70 line traceback, and exit 1 for SIGTERM."""
    out = tmp_path / "anon.jpg"
    result = run_cli_with_finder(f"if name == 'DeFacerLib.photo.anonymize':\n    os.kill(os.getpid(), signal.{signal_name})",
                                 "photo", data_dir / "photos/known_people/obama.jpg", "-o", out)
    one_line_error(result, exit_code, word)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_a_c_extension_loads_is_an_interruption_not_a_bug(data_dir, tmp_path):
    """Ctrl-C landing while pybind11 initialises onnxruntime (the face model, loaded mid-run)
    reaches Python as `ImportError: initialization failed` raised from the KeyboardInterrupt,
    as pybind11 does: it was exit 1 "internal error ... report it" (seen at 3 s into a deface)."""
    out = tmp_path / "defaced.nii.gz"
    result = run_cli_with_finder("if name == 'onnxruntime':\n    raise ImportError('initialization failed') from KeyboardInterrupt()",
                                 "deface", data_dir / IXI, out)
    one_line_error(result, 130, "interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_run_has_finished_keeps_its_exit_code(data_dir, tmp_path, signal_name):
    """A signal while Python shuts down, after the outputs were complete and the summary printed
    (sent here from an exit handler, where it lands): exit 143 by SIGTERM with no message, or a
    KeyboardInterrupt traceback for Ctrl-C; 1 in 20 Ctrl-Cs at random times of a 5 s deface."""
    out = tmp_path / "defaced.nii.gz"
    script = ("import atexit, os, signal, sys\n"
              f"sys.argv = ['defacer', 'deface', {str(data_dir / IXI)!r}, {str(out)!r}, '-q']\n"
              "from DeFacerLib.cli.main import main\n"
              f"atexit.register(lambda: os.kill(os.getpid(), signal.{signal_name}))\n"
              "sys.exit(main())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert (result.returncode, result.stderr) == (0, "")
    assert out.exists() and (tmp_path / "defaced.defacer.json").exists()


# ---- readers ------------------------------------------------------------------------------------
def test_truncated_metaimage_is_one_line_with_the_real_reason(data_dir, tmp_path):
    """ITK's MetaImage reader printed two lines of its own around the error, which then blamed
    'No such file or directory' for a file that exists but ends early."""
    import SimpleITK as sitk

    whole = tmp_path / "head.mha"
    sitk.WriteImage(sitk.ReadImage(str(data_dir / IXI)), str(whole), True)
    cut = tmp_path / "cut.mha"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    message = one_line_error(defacer("info", cut), 3, "cut.mha", "not read completely")
    assert "No such file" not in message


def test_info_on_a_volume_with_nans_gives_finite_ranges_and_valid_json(data_dir, tmp_path):
    """A float head with NaN outside its field of view (resampled data) printed (nan, nan) as its
    range, and `--json` wrote NaN, which JSON parsers refuse."""
    image = nib.load(data_dir / IXI)
    values = np.asarray(image.dataobj, dtype=np.float32)
    values[:4, :4, :4] = np.nan
    path = tmp_path / "nan_head.nii.gz"
    nib.save(nib.Nifti1Image(values, image.affine), path)

    info = describe(read_volume(path))
    assert info["non_finite_voxels"] == 64
    assert info["value_range"] == (0.0, pytest.approx(float(np.nanmax(values))))
    result = defacer("info", "--json", path)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in --json output"))
    assert parsed["non_finite_voxels"] == 64


# ---- qa pairs and side-output folders ------------------------------------------------------------
def test_qa_refuses_a_pair_on_different_grids(data_dir, tmp_path):
    """qa on a head and a different grid (another scan, another person) said PASS: two different
    renders never match, whatever the defacing did."""
    image = nib.load(data_dir / IXI)
    thinned = tmp_path / "thinned.nii.gz"
    affine = image.affine.copy()
    affine[:3, 2] *= 2
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, ::2], affine, image.header), thinned)
    other = data_dir / "heads/single/mne_sample_T1.mgz"
    for defaced in (thinned, other):
        one_line_error(defacer("qa", data_dir / IXI, defaced, "--out", tmp_path / "qa"), 3, "grid")
    assert not (tmp_path / "qa").exists()


def test_qa_report_that_cannot_be_written_whole_keeps_the_earlier_one(data_dir, tmp_path):
    """Under a 1 MB file-size limit (a quota, a full disk) the PNG (0.9 MB) fits and the HTML page
    (1.2 MB, renders embedded) does not: it was exit 1 "internal error (OSError ...)" with the
    new PNG and JSON beside the earlier run's page, a report that mixed two runs."""
    out = tmp_path / "qa"
    out.mkdir()
    stem = "IXI132-HH-1415_T1"
    for suffix in ("_report.html", "_report.json", "_before_after.png"):
        (out / f"{stem}{suffix}").write_text(f"earlier {suffix}")
    before = digest(out)
    result = defacer("qa", data_dir / IXI, data_dir / IXI, "--out", out, "-q", preexec_fn=limit_file_size(1_000_000))
    one_line_error(result, 4, "cannot write the QA report", "File too large")
    assert digest(out) == before and len(list(out.iterdir())) == 3


def test_qa_out_that_is_a_file_is_an_output_error(data_dir, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    one_line_error(defacer("qa", data_dir / IXI, data_dir / IXI, "--out", taken), 4, "--out", "is a file")
    assert taken.read_text() == "a file"


def test_deface_qa_folder_that_is_a_file_is_refused_before_writing(data_dir, tmp_path):
    """--qa naming a file failed as 'internal error' (exit 1) after the defaced output and its
    sidecar were already written."""
    taken = tmp_path / "taken"
    taken.write_text("a file")
    out = tmp_path / "out"
    out.mkdir()
    one_line_error(defacer("deface", data_dir / IXI, out / "defaced.nii.gz", "--qa", taken), 4, "QA folder", "is a file")
    assert list(out.iterdir()) == []


def test_deface_qa_folder_that_cannot_be_made_is_a_one_line_error(data_dir, tmp_path):
    """--qa in a place no folder can be made (/proc; root passes the os.access check before the
    work) ended as 'internal error (FileNotFoundError ...)', exit 1."""
    out = tmp_path / "out"
    out.mkdir()
    one_line_error(defacer("deface", data_dir / IXI, out / "defaced.nii.gz", "--qa", "/proc/defacer_qa_test"), 4,
                   "QA folder", "/proc/defacer_qa_test")
    assert list(out.iterdir()) == []


def test_deface_refuses_an_output_of_another_format_before_reading_the_head(data_dir, tmp_path):
    """The output's extension was checked only after the whole run (5-20 s a head, lost): now it is
    refused first, so even an input that is no head gets the output's error, exit 4."""
    image = nib.load(data_dir / IXI)
    blank = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), blank)
    one_line_error(defacer("deface", blank, tmp_path / "blank_defaced.nrrd"), 4, ".nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.nii.gz"]


def test_info_names_the_nifti_description_that_deface_replaces(data_dir):
    """dcm2niix writes the acquisition time into descrip; `deface` overwrites it, but `info` said
    'none found' for this head's header."""
    result = defacer("info", "--json", data_dir / "heads/single/niivue_T2w.nii.gz")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)["identifying_header"]
    assert any("descrip" in item and "Time=" in item for item in found), found


def test_a_compressed_nifti_named_nii_says_so(data_dir, tmp_path):
    """A .nii.gz renamed .nii was called 'not a NIfTI file (header size field ...)'."""
    renamed = tmp_path / "head.nii"
    shutil.copy(data_dir / IXI, renamed)
    one_line_error(defacer("info", renamed), 3, "gzip-compressed", ".nii.gz")


@pytest.mark.parametrize("suffix", [".MHA", ".NRRD"])
def test_upper_case_itk_extensions_read_and_write_whole_files(data_dir, tmp_path, suffix):
    """HEAD.MHA could not be read ('corrupt or truncated'), and `deface x.mha OUT.MHA` exited 0
    with OUT.MHA empty: ITK wrote the voxels to a hidden .partial.mhd + .zraw pair left beside it."""
    import SimpleITK as sitk

    source = tmp_path / f"head{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(data_dir / IXI)), str(tmp_path / f"head{suffix.lower()}"), True)
    (tmp_path / f"head{suffix.lower()}").rename(source)
    volume = read_volume(source)
    out = tmp_path / "out"
    out.mkdir()
    written = write_volume(volume, out / f"defaced{suffix}")
    assert [p.name for p in out.iterdir()] == [f"defaced{suffix}"]
    again = read_volume(written)
    assert np.array_equal(again.array, volume.array)
    assert np.allclose(again.affine_lps, volume.affine_lps)


def test_nibabel_header_fixes_do_not_break_the_one_line_error(data_dir, tmp_path):
    """A header with a zero voxel size: nibabel printed 'pixdim[1,2,3] should be non-zero; setting 0
    dims to 1' twice before our error, three lines where the contract promises one."""
    image = nib.load(data_dir / IXI)
    one_slice = nib.Nifti1Image(np.asarray(image.dataobj)[:, :, 40:41], image.affine, image.header)
    one_slice.header["pixdim"][1] = 0
    path = tmp_path / "slice.nii"
    nib.save(one_slice, path)
    one_line_error(defacer("info", path), 3, "2D")


def test_output_that_is_the_protect_mask_is_refused_even_with_overwrite(data_dir, tmp_path):
    """`deface head mask.nii.gz --protect-from mask.nii.gz --overwrite` replaced the mask, an input,
    with the defaced head; only the head itself was compared with the output."""
    mask = tmp_path / "brain.nii.gz"
    shutil.copy(data_dir / "heads/ixi/brain_labels/IXI132-HH-1415_T1_DLMUSE.nii.gz", mask)
    before = mask.read_bytes()
    one_line_error(defacer("deface", data_dir / IXI, mask, "--protect-from", mask, "--overwrite", "-q"), 4,
                   "--protect-from")
    assert mask.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brain.nii.gz"]


def test_qa_can_pick_a_series_in_a_folder_holding_several(data_dir, tmp_path):
    """qa's error said 'pick one with --series UID', an option qa did not have (exit 2 when tried)."""
    import pydicom

    folder = trio_slices(data_dir, tmp_path / "mixed")
    shutil.copy(data_dir / "dicom/siemens_xa30_enhanced_multiframe_t1/0001.dcm", folder / "enhanced.dcm")
    trio_uid = str(pydicom.dcmread(folder / "00080.dcm", stop_before_pixels=True).SeriesInstanceUID)
    one_line_error(defacer("qa", folder, folder, "--out", tmp_path / "qa"), 3, "--series UID")
    # the original is read with --series; the defaced copy (its own new UID) needs --defaced-series
    one_line_error(defacer("qa", folder, folder, "--out", tmp_path / "qa", "--series", trio_uid), 3,
                   "--defaced-series UID")
    assert not (tmp_path / "qa").exists()


def test_deface_into_a_folder_says_to_name_the_file(data_dir, tmp_path):
    """`deface head.nii.gz out/` said 'exists; pass --overwrite to replace it', and with --overwrite
    failed after the whole run: a folder can never take a NIfTI output."""
    out = tmp_path / "out"
    out.mkdir()
    message = one_line_error(defacer("deface", data_dir / IXI, out), 4, "is a folder", "defaced.nii.gz")
    assert "--overwrite" not in message
    assert list(out.iterdir()) == []


def test_out_of_memory_is_not_called_a_corrupt_file(data_dir, tmp_path):
    """A valid 4D series larger than the memory left was 'cannot be read as NIfTI (MemoryError);
    the file is corrupt or truncated': a data manager would re-export a file that is fine."""
    image = nib.load(data_dir / IXI)
    frames = np.repeat(np.asarray(image.dataobj, dtype=np.int16)[..., None], 120, axis=3)  # ~310 MB
    path = tmp_path / "series.nii"
    nib.save(nib.Nifti1Image(frames, image.affine), path)
    del frames
    script = ("import resource, re, sys\nfrom DeFacerLib.io import read_volume\nfrom DeFacerLib.errors import InputError\n"
              "vm = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
              "resource.setrlimit(resource.RLIMIT_AS, (vm + 200_000_000, resource.RLIM_INFINITY))\n"
              f"try:\n    read_volume({str(path)!r})\nexcept InputError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "too large to read in the memory available" in result.stdout, result.stdout
    assert "corrupt" not in result.stdout


def test_a_long_output_name_the_file_system_allows_is_written(data_dir, tmp_path):
    """An output named with 247 of the 255 bytes a name may hold was refused ("cannot write in
    .: File name too long"): its temporary, ".NAME.partial.XXXXXXXX.nii.gz", was longer."""
    output = tmp_path / ("é" * 120 + ".nii.gz")  # 247 bytes; its sidecar's name 253
    result = defacer("deface", data_dir / IXI, output)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:2] == b"\x1f\x8b" and (tmp_path / ("é" * 120 + ".defacer.json")).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([output.name, "é" * 120 + ".defacer.json"])


@pytest.mark.parametrize("command", ["deface", "scrub"])
def test_an_output_whose_provenance_name_would_be_too_long_is_refused_before_work(data_dir, tmp_path, command):
    """The output's name fits (251 bytes) but its sidecar's (257) or audit folder's (257) does not:
    checking whether they existed was an internal error (exit 1)."""
    source = data_dir / (IXI if command == "deface" else TRIO)
    output = tmp_path / ("o" * 244 + (".nii.gz" if command == "deface" else ".dicom"))
    key = ["--key-file", tmp_path / "deid.key"] if command == "scrub" else []
    one_line_error(defacer(command, source, output, *key), 4, "more than the 255")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["deface", "scrub", "qa", "deface --qa"])
def test_an_output_under_a_folder_whose_name_is_too_long_is_refused_before_work(data_dir, tmp_path, command):
    """A folder of the output's path still to be made, named with 300 bytes: the long-name check
    itself raised OSError (File name too long) asking whether it existed, an internal error (exit 1)."""
    deep = tmp_path / ("f" * 300) / "x"
    if command == "qa":
        args = ["qa", data_dir / IXI, data_dir / IXI, "--out", deep]
    elif command == "deface --qa":
        args = ["deface", data_dir / IXI, tmp_path / "out.nii.gz", "--qa", deep]
    else:
        args = [command, data_dir / (IXI if command == "deface" else TRIO), deep / "out.nii.gz"]
        args += ["--key-file", tmp_path / "deid.key"] if command == "scrub" else []
    one_line_error(defacer(*args), 4, "folder name", "of 300 bytes, more than the 255")
    assert list(tmp_path.iterdir()) == []
