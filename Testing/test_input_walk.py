"""What a run must see of its input before it says it is done (helper audit of 2026-12-08, bad
inputs): `scrub` passed over a linked sub-folder and a folder it could not read (exit 0, 2 of 11
files), `deface` of a DICOM folder wrote the series without the slices in its sub-folder (127 of
176, exit 0), `batch` of a folder with nothing to de-identify said done (exit 0) and read a BIDS
dataset without its description as loose volumes without a word. Real DICOM and IXI data. Each
test failed before its fix, but the walk's own listing test and the guard that another series
beside a head is left alone."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from _dicom_for_tests import key_file
from DeFacerLib.cli.main import main
from DeFacerLib.errors import InputError
from DeFacerLib.io.dicom_series import read_dicom_series
from DeFacerLib.io.walk import walk_folders

NAME_MAX_PART = "d" * 250  # 17 of these nest deeper than PATH_MAX (4096): the walk cannot list the last


def _tree_with_link(data_dir: Path, tmp_path: Path) -> Path:
    """tree/b: the two fake-PHI CT files; tree/linked: a link to a folder of the nine deid samples."""
    tree = tmp_path / "tree"
    shutil.copytree(data_dir / "dicom" / "fake_phi_ct", tree / "b")
    shutil.copytree(data_dir / "dicom" / "deid_samples", tmp_path / "elsewhere")
    (tree / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    return tree


def _too_deep(parent: Path) -> Path:
    """A folder under ``parent`` whose path is longer than PATH_MAX, made through folder
    descriptors: listing it fails (ENAMETOOLONG), as a folder without read permission does for a
    user who is not root (the tests may run as root, who reads every folder)."""
    fd = os.open(parent, os.O_RDONLY)
    try:
        for _ in range(17):
            os.mkdir(NAME_MAX_PART, dir_fd=fd)
            inner = os.open(NAME_MAX_PART, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return parent / NAME_MAX_PART


def _scrub_json(tmp_path: Path, source: Path, output: Path, capsys) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    code = main(["scrub", str(source), str(output), "--key-file", str(key_file(tmp_path)), "-q", "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def test_scrub_follows_a_linked_sub_folder(tmp_path, data_dir, capsys):
    tree = _tree_with_link(data_dir, tmp_path)
    (tree / "b" / "loop").symlink_to(tree, target_is_directory=True)  # a link back up: walked once, not forever
    code, summary, _ = _scrub_json(tmp_path, tree, tmp_path / "out", capsys)
    assert code == 0
    assert (summary["files"], summary["written"]) == (11, 11)
    assert sorted(p.name for p in (tmp_path / "out" / "linked").iterdir()) == sorted(
        p.name for p in (tmp_path / "elsewhere").iterdir())


def test_scrub_refuses_a_folder_it_cannot_read_before_writing_anything(tmp_path, data_dir, capsys):
    tree = _tree_with_link(data_dir, tmp_path)
    _too_deep(tree / "b")
    code, summary, error = _scrub_json(tmp_path, tree, tmp_path / "out", capsys)
    assert code == 3 and summary is None
    assert error.startswith("defacer: error: cannot read the folder ") and error.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.audit").exists()


def test_the_walk_lists_sorted_and_refuses_what_it_cannot_list(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    for name in ("z", "y"):
        (tmp_path / "a" / name).write_text("x")
    walked = [(Path(folder).relative_to(tmp_path).as_posix(), dirs[:], names) for folder, dirs, names in walk_folders(tmp_path)]
    assert walked == [(".", ["a", "b"], []), ("a", [], ["y", "z"]), ("b", [], [])]
    _too_deep(tmp_path / "b")
    with pytest.raises(InputError, match="cannot read the folder"):
        list(walk_folders(tmp_path))


def _series_split(data_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "series"
    shutil.copytree(data_dir / "dicom" / "siemens_trio_mprage_1mm", folder)
    (folder / "a" / "b").mkdir(parents=True)
    for path in sorted(folder.glob("000[0-4]*.dcm")):
        path.rename(folder / "a" / "b" / path.name)
    return folder


def test_deface_refuses_a_series_whose_slices_lie_in_sub_folders_too(tmp_path, data_dir, capsys):
    folder = _series_split(data_dir, tmp_path)
    moved = len(list((folder / "a" / "b").iterdir()))
    assert moved == 49
    assert main(["deface", str(folder), str(tmp_path / "out"), "-q"]) == 3
    error = capsys.readouterr().err
    assert f"{moved} more file(s) of series" in error and "a/b/" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_another_series_in_a_sub_folder_is_left_alone(tmp_path, data_dir):
    folder = tmp_path / "series"
    shutil.copytree(data_dir / "dicom" / "siemens_trio_mprage_1mm", folder)
    shutil.copytree(data_dir / "dicom" / "fake_phi_ct", folder / "other")
    volume = read_dicom_series(folder)
    assert 176 in volume.shape3  # every slice of the series, none of the CT beside it


@pytest.fixture()
def batch_key(tmp_path):
    return key_file(tmp_path)


def test_batch_of_nothing_to_de_identify_is_an_input_error(tmp_path, batch_key, capsys):
    pytest.importorskip("distributed")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("scan notes")
    (junk / "picture.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    code = main(["batch", str(junk), str(tmp_path / "out"), "--key-file", str(batch_key), "--workers", "1",
                 "--scrub-only", "-q"])
    error = capsys.readouterr().err
    assert code == 3
    assert "holds nothing to de-identify as volumes: all 2 file(s) skipped" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.audit").exists()


def test_batch_says_when_a_bids_dataset_lacks_its_description(tmp_path, data_dir, batch_key, capsys):
    pytest.importorskip("distributed")
    anat = tmp_path / "ds" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    head = sorted((data_dir / "heads" / "ixi" / "t1").glob("*.nii.gz"))[0]
    shutil.copy(head, anat / "sub-01_T1w.nii.gz")
    (anat / "sub-01_T1w.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    capsys.readouterr()
    code = main(["batch", str(tmp_path / "ds"), str(tmp_path / "out"), "--key-file", str(batch_key), "--workers", "1",
                 "--scrub-only", "-q"])
    error = capsys.readouterr().err
    assert code == 0
    assert json.loads((tmp_path / "out" / ".defacer" / "summary.json").read_text())["bids_without_description"] is True
    assert "defacer: warning: the input is laid out as BIDS" in error and "--layout bids" in error
