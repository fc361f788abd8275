"""`defacer batch` on a BIDS dataset built from real IXI heads, as a researcher shares
one: a DataLad/git dataset, MP2RAGE images, subjects linked in from elsewhere, and Ctrl-C
pressed at the terminal (docs/batch.md)."""
from __future__ import annotations

import json
import re
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from DeFacerLib.batch.discover import BIDS, COPY, DEFACE_VOLUME, FACE_CHECK, SKIP, classify, list_files

pytest.importorskip("distributed")


def _heads(data_dir, count: int) -> list[Path]:
    return sorted((data_dir / "heads" / "ixi" / "t1").glob("IXI*_T1.nii.gz"))[:count]


def _shared_dataset(data_dir, root: Path) -> Path:
    """A BIDS dataset as DataLad leaves it: .git holding the original image, an MP2RAGE
    image, and a subject whose folder is a link to storage elsewhere."""
    first, second, third = _heads(data_dir, 3)
    (root / "bids").mkdir(parents=True)
    bids = root / "bids"
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "audit", "BIDSVersion": "1.9.0"}))
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "sub-01" / "anat" / "sub-01_inv-2_MP2RAGE.nii.gz").symlink_to(first)
    annex = bids / ".git" / "annex" / "objects" / "Xk" / "MD5E-s1--0a.nii.gz"
    annex.parent.mkdir(parents=True)
    annex.symlink_to(second)
    (bids / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    elsewhere = root / "storage" / "sub-02" / "anat"
    elsewhere.mkdir(parents=True)
    (elsewhere / "sub-02_T1w.nii.gz").symlink_to(third)
    (bids / "sub-02").symlink_to(elsewhere.parent)
    return bids


def test_plan_defaces_every_anatomical_image_and_skips_hidden_folders():
    files = ["sub-01/anat/sub-01_inv-2_MP2RAGE.nii.gz", "sub-01/anat/sub-01_UNIT1.nii.gz",
             "sub-01/anat/sub-01_echo-1_MEGRE.nii.gz", "sub-01/anat/sub-01_inplaneT2.nii", "sub-01/anat/sub-01_angio.nii.gz",
             "sub-01/anat/sub-01_T1map.nii.gz", ".git/annex/objects/Xk/MD5E-s1--0a.nii.gz",
             ".heudiconv/01/info/dicominfo.tsv", ".bidsignore"]
    items, _ = classify(Path("/nonexistent"), files, BIDS)
    kinds = {item.files[0]: item.kind for item in items}
    assert {kinds[f] for f in files[:5]} == {DEFACE_VOLUME}
    assert kinds["sub-01/anat/sub-01_T1map.nii.gz"] == FACE_CHECK  # defaced, or copied only without a skin surface
    assert kinds[".git/annex/objects/Xk/MD5E-s1--0a.nii.gz"] == SKIP
    assert kinds[".heudiconv/01/info/dicominfo.tsv"] == SKIP
    assert kinds[".bidsignore"] == COPY  # a hidden file of the dataset itself is part of it


def test_a_second_link_to_a_subject_is_listed_and_a_link_loop_ends(tmp_path):
    """A folder reached twice (sub-02 linked to sub-01) was listed once: sub-02 was dropped
    without a word. It is listed as the dataset shows it; a link to a folder above it is not
    followed, so the walk ends."""
    anat = tmp_path / "bids" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-01_T1w.nii.gz").write_bytes(b"head")
    (tmp_path / "bids" / "sub-02").symlink_to(tmp_path / "bids" / "sub-01")
    (anat / "up").symlink_to(tmp_path / "bids")  # a loop
    assert list_files(tmp_path / "bids") == ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-01_T1w.nii.gz"]


def test_shared_datalad_dataset_leaks_no_face(data_dir, tmp_path):
    from DeFacerLib.batch import run_batch
    from DeFacerLib.io import read_volume

    bids = _shared_dataset(data_dir, tmp_path)
    assert "sub-02/anat/sub-02_T1w.nii.gz" in list_files(bids)
    out = tmp_path / "out"
    summary = run_batch(bids, out, key_file=tmp_path / "key", workers=1)
    assert summary["files"] == 5 and summary["failed"] == 0 and summary["defaced"] == 2
    assert not (out / ".git").exists()  # the annexed original is not published
    for rel in ("sub-01/anat/sub-01_inv-2_MP2RAGE.nii.gz", "sub-02/anat/sub-02_T1w.nii.gz"):
        before, after = read_volume(bids / rel).array, read_volume(out / rel).array
        assert before.shape == after.shape and np.count_nonzero(before != after) > 10_000, rel


@pytest.mark.parametrize("sent,exit_code,said", [(signal.SIGINT, 130, "interrupted:"),
                                                   (signal.SIGTERM, 143, "interrupted by SIGTERM:")])
def test_a_stop_at_the_terminal_prints_one_line_and_resumes(data_dir, tmp_path, sent, exit_code, said):
    """Ctrl-C, and a SLURM time limit's SIGTERM, reach the whole process group, Dask's worker
    processes included: they printed KeyboardInterrupt tracebacks; the CLI promises one line,
    the manifest keeps what finished, and the same command resumes."""
    bids = tmp_path / "bids"
    for index, head in enumerate(_heads(data_dir, 4)):
        anat = bids / f"sub-{index:02d}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{index:02d}_T1w.nii.gz").symlink_to(head)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "audit", "BIDSVersion": "1.9.0"}))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "DeFacerLib", "batch", str(bids), str(out), "--workers", "2",
               "--key-file", str(tmp_path / "key"), "-q"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:  # stop once the first head is recorded
        time.sleep(0.2)
        try:
            with sqlite3.connect(out / ".defacer" / "manifest.sqlite") as db:
                if db.execute("select count(*) from items where id like '%_T1w.nii.gz'").fetchone()[0]:
                    break
        except sqlite3.Error:
            continue
    os.killpg(process.pid, sent)
    _, err = process.communicate(timeout=120)
    assert process.returncode == exit_code, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert len(err.strip().splitlines()) == 1 and said in err and "rerun the same command to resume" in err, err
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert len(list(out.glob("sub-*/anat/*_T1w.nii.gz"))) == 4


def test_failure_reason_in_the_shared_report_is_relative(data_dir, tmp_path):
    """A corrupt head fails with its one-line reason, the run exits non-zero, and the reason in
    report.csv names the file relative to the input, not the folders above it (which may name a
    patient or a site)."""
    from DeFacerLib.batch import run_batch

    bids = tmp_path / "Doe_John_MRN555" / "bids"
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True)
    head = _heads(data_dir, 1)[0].read_bytes()
    (anat / "sub-01_T1w.nii.gz").write_bytes(head[: len(head) // 2])
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "audit", "BIDSVersion": "1.9.0"}))
    out = tmp_path / "out"
    summary = run_batch(bids, out, key_file=tmp_path / "key", workers=1)
    assert summary["failed"] == 1 and summary["written"] == 1
    reason = summary["failed_items"][0]["reason"]
    assert reason.startswith("sub-01/anat/sub-01_T1w.nii.gz") and "\n" not in reason
    assert "Doe_John" not in (out / ".defacer" / "report.csv").read_text()
    assert not (out / "sub-01").exists()  # no file, and no empty subject folder either


@pytest.mark.parametrize("count", ["0", "-1"])
def test_max_items_below_one_is_a_usage_error(tmp_path, count):
    """--max-items -1 used to do all items but the last, 0 to make an output that did nothing."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "notes.txt").write_text("x\n")
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "batch", str(source), str(tmp_path / "out"),
                             "--scrub-only", "--max-items", count, "--key-file", str(tmp_path / "key")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--max-items" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_key_file_inside_the_output_is_refused_before_it_is_made(data_dir, tmp_path):
    """--key-file OUT/deid.key wrote the secret key into the folder meant for sharing (exit 0):
    with it a recipient recomputes the pseudonym of any patient ID he can guess."""
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "audit", "BIDSVersion": "1.9.0"}))
    (bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz").symlink_to(_heads(data_dir, 1)[0])
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "batch", str(bids), str(out), "--scrub-only",
                             "--workers", "1", "--key-file", str(out / "deid.key")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stderr
    assert "key file" in result.stderr and "inside the output" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "out.audit").exists()


def test_a_scheduler_that_cannot_be_reached_leaves_no_new_key(tmp_path):
    """The run made its key, then could not reach the scheduler (exit 2): the key stayed, looking
    like one that had keyed an output."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "notes.txt").write_text("x\n")
    key = tmp_path / "keys" / "deid.key"
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "batch", str(source), str(tmp_path / "out"),
                             "--scrub-only", "--scheduler", "::::", "--key-file", str(key)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "cannot reach the Dask scheduler" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not key.exists() and not (tmp_path / "keys").exists() and not (tmp_path / "out").exists()


def test_the_voxel_data_of_a_skipped_detached_header_volume_is_not_published(data_dir, tmp_path):
    """A detached-header volume (.mhd, .nhdr) is skipped, not defaced; its data file (.raw, here
    also one named otherwise in the header) holds the head's voxels, face included, and was
    copied into the published tree as "anything else" of a BIDS dataset."""
    import SimpleITK as sitk

    from DeFacerLib.batch import run_batch

    bids = tmp_path / "bids"
    anat = bids / "derivatives" / "conv" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "audit", "BIDSVersion": "1.9.0"}))
    head = sitk.ReadImage(str(_heads(data_dir, 1)[0]))
    sitk.WriteImage(head, str(anat / "sub-01_T1w.mhd"))  # + sub-01_T1w.raw
    sitk.WriteImage(head, str(anat / "sub-01_T2w.nhdr"))  # + sub-01_T2w.raw
    (anat / "sub-01_T2w.raw").rename(anat / "voxels.dat")
    nhdr = anat / "sub-01_T2w.nhdr"
    nhdr.write_text(re.sub(r"(?m)^data ?file: .*$", "data file: voxels.dat", nhdr.read_text()))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(nhdr))).any()  # a readable head with its data file

    items, _ = classify(bids, list_files(bids), BIDS)
    kinds = {item.files[0]: item.kind for item in items}
    for data in ("sub-01_T1w.raw", "voxels.dat"):
        assert kinds[f"derivatives/conv/sub-01/anat/{data}"] == SKIP, data
    summary = run_batch(bids, tmp_path / "out", key_file=tmp_path / "key", workers=1)
    published = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and ".defacer" not in p.parts)
    assert published == ["dataset_description.json"]
    assert summary["files"] == 5 and summary["skipped"] == 4 and summary["failed"] == 0


def test_data_files_named_by_pattern_list_windows_or_absolute_path_are_not_published(data_dir, tmp_path):
    """A detached header's data file line may name a Windows path (raw\\head.raw), an absolute
    one, a numbered pattern (head_%02d.raw 1 3 1 2) or a LIST of files: each was read as one
    relative name that matched no file, and the head's voxels, face included, were copied into
    the published BIDS tree (5 files, exit 0)."""
    import SimpleITK as sitk

    from DeFacerLib.batch import run_batch

    bids = tmp_path / "bids"
    (bids / "derivatives").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "audit", "BIDSVersion": "1.9.0"}))
    head = sitk.ReadImage(str(_heads(data_dir, 1)[0]))
    voxels = sitk.GetArrayFromImage(sitk.Cast(head, sitk.sitkUInt8))  # z, y, x
    thirds = np.array_split(voxels, 3)
    lines = {"windows": "ElementDataFile = raw\\head.raw", "absolute": None, "pattern": "data file: head_%02d.raw 1 3 1 2",
             "list": "data file: LIST 2\nslab_a.raw\nslab_b.raw\nslab_c.raw"}
    data = {"windows": {"raw/head.raw": voxels}, "absolute": {"scan.raw": voxels},
            "pattern": {f"head_{k + 1:02d}.raw": part for k, part in enumerate(thirds)},
            "list": {f"slab_{c}.raw": part for c, part in zip("abc", thirds)}}
    size = " ".join(str(n) for n in reversed(voxels.shape))
    for case, line in lines.items():
        folder = bids / "derivatives" / case
        for rel, part in data[case].items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(part.tobytes())
        if case in ("windows", "absolute"):
            line = line or f"ElementDataFile = {folder / 'scan.raw'}"
            (folder / "head.mhd").write_text(f"ObjectType = Image\nNDims = 3\nDimSize = {size}\nElementType = MET_UCHAR\n{line}\n")
        else:
            (folder / "head.nhdr").write_text(f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {size}\nencoding: raw\n{line}\n")

    items, _ = classify(bids, list_files(bids), BIDS)
    kinds = {item.files[0]: item.kind for item in items}
    for case in data:
        for rel in data[case]:
            assert kinds[f"derivatives/{case}/{rel}"] == SKIP, (case, rel)
    summary = run_batch(bids, tmp_path / "out", scrub_only=True, key_file=tmp_path / "key", workers=1)
    published = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and ".defacer" not in p.parts)
    assert published == ["dataset_description.json"], published
    assert summary["failed"] == 0


@pytest.mark.parametrize("option", [("--features-from", "LABELS"), ("--qa",)])
def test_scrub_only_refuses_the_options_of_a_defacing_run(tmp_path, option):
    """`batch --scrub-only --features-from DIR` (or --qa) ignored them without a word (bad-input audit)."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "notes.txt").write_text("x\n")
    (tmp_path / "labels").mkdir()
    option = [str(tmp_path / "labels") if word == "LABELS" else word for word in option]
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "batch", str(source), str(tmp_path / "out"),
                             "--scrub-only", *option, "--key-file", str(tmp_path / "key")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--scrub-only run defaces nothing" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "labels"]


def test_an_output_holding_a_link_to_an_input_folder_is_refused_and_the_input_kept(data_dir, tmp_path):
    """out/sub-01 linked to the input's sub-01 (an output folder assembled with links), --overwrite:
    the failed deface removed its output through the link, deleting the input's head, and the
    scrubbed sidecar replaced the input's own (exit 3)."""
    import shutil

    bids = tmp_path / "bids"
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "audit", "BIDSVersion": "1.9.0"}))
    shutil.copy(_heads(data_dir, 1)[0], anat / "sub-01_T1w.nii.gz")
    (anat / "sub-01_T1w.json").write_text(json.dumps({"InstitutionName": "Hammersmith Hospital", "EchoTime": 0.003}))
    before = {p: p.read_bytes() for p in anat.iterdir()}
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub-01").symlink_to(bids / "sub-01")
    result = subprocess.run([sys.executable, "-m", "DeFacerLib", "batch", str(bids), str(out), "--overwrite",
                             "--workers", "1", "--key-file", str(tmp_path / "deid.key")],
                            capture_output=True, text=True, timeout=300)
    assert {p: p.read_bytes() for p in anat.iterdir()} == before
    assert result.returncode == 4, result.stderr
    assert "link to a folder (sub-01 ->" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["sub-01"] and not (tmp_path / "out.audit").exists()


def test_an_input_reaching_the_output_through_a_link_is_refused(data_dir, tmp_path):
    """in/derivatives linked to the output: the rerun read the outputs as inputs and nested them
    in the output (out/derivatives/..., one level more on every run), exit 0."""
    import shutil

    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "audit", "BIDSVersion": "1.9.0"}))
    shutil.copy(_heads(data_dir, 1)[0], bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "DeFacerLib", "batch", str(bids), str(out), "--scrub-only", "--workers", "1",
               "--key-file", str(tmp_path / "deid.key")]
    assert subprocess.run(command, capture_output=True, text=True, timeout=300).returncode == 0
    (bids / "derivatives").symlink_to(out)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert not (out / "derivatives").exists()
    assert result.returncode == 4, result.stderr
    assert "reaches" in result.stderr and "(derivatives)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


CLOSE_INTERRUPTED = '''
import os, signal
from distributed.core import Status
from distributed.deploy.spec import SpecCluster
from distributed.diagnostics.plugin import WorkerPlugin
from DeFacerLib.batch.runner import _dask_client


class SecondCtrlC(WorkerPlugin):
    """The user's second Ctrl-C, while the cluster closes: the worker sends it as it is closed."""
    def teardown(self, worker):
        os.kill(os.getppid(), signal.SIGINT)


if __name__ == "__main__":
    try:
        with _dask_client(None, None, 1) as client:
            client.register_plugin(SecondCtrlC())
    except KeyboardInterrupt:
        print("interrupted while closing")
    print("left to close at exit:", sum(1 for c in SpecCluster._instances
                                        if getattr(c, "shutdown_on_close", False) and c.status != Status.closed))
'''


def test_a_second_ctrl_c_while_the_cluster_closes_leaves_nothing_to_the_exit(tmp_path):
    """The cluster's close cut short by a second Ctrl-C left it to Dask's own exit handler, which
    closed it again as Python exited: 10 s in which `defacer` (ignoring signals once its run has
    reported, cli.main) could not be stopped by Ctrl-C."""
    script = tmp_path / "close_interrupted.py"
    script.write_text(CLOSE_INTERRUPTED)
    repo = str(Path(__file__).resolve().parents[1])  # this checkout's DeFacerLib, as `python -m` from it imports
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert "interrupted while closing" in result.stdout, result.stdout + result.stderr
    assert "left to close at exit: 0" in result.stdout, result.stdout


def test_a_file_name_that_is_a_spreadsheet_formula_stays_text_in_report_csv(data_dir, tmp_path):
    """A dataset file named '=HYPERLINK(...)' became a live formula in the report.csv a data
    manager opens in a spreadsheet; its name and reason cells now start with an apostrophe, and
    the numbers stay numbers."""
    import csv

    from DeFacerLib.batch import run_batch

    source = tmp_path / "in"
    source.mkdir()
    head = _heads(data_dir, 1)[0].read_bytes()
    formula = '=HYPERLINK("mailto:x@example.invalid","open")'
    (source / f"{formula}_T1w.nii.gz").write_bytes(head[: len(head) // 2])  # corrupt: fails fast, with a reason
    (source / "@SUM(1+1)_T1w.nii.gz").write_bytes(head[: len(head) // 3])
    out = tmp_path / "out"
    summary = run_batch(source, out, key_file=tmp_path / "key", workers=1)
    assert summary["failed"] == 2
    with open(out / ".defacer" / "report.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["name"] for row in rows) == ["'=HYPERLINK(\"mailto:x@example.invalid\",\"open\")_T1w.nii.gz",
                                                  "'@SUM(1+1)_T1w.nii.gz"]
    assert all(row["reason"].startswith("'") and row["state"] == "failed" for row in rows)
    assert {row["files"] for row in rows} == {"1"}  # a number, not quoted
