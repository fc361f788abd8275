"""Names that fit the file system while a file named after them does not: `defacer qa` of a
defaced head of 245 characters (NAME_before_after.png is longer than 255 bytes) ended in an
internal error after the face recognition, and `defacer batch` of a BIDS head with a long acq-
label failed its item with "File name too long" once the head was defaced (its provenance record,
NAME.nii.gz.defacer.json, is 13 bytes longer than the output). A real IXI head under the long names.
Each test failed before its fix."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from DeFacerLib.errors import OutputError
from test_cli import defacer
from test_cli_volume_edge_cases import one_line_error

IXI = "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
LONG_BIDS = "sub-01_ses-1_acq-" + "x" * 220 + "_T1w.nii.gz"  # 248 bytes: a legal name; its record's is 261


# ---- defacer qa ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stem_size, too_long", [(245, "_report.html"), (240, "_before_after.png")])
def test_qa_refuses_a_report_name_too_long_before_the_work(data_dir, tmp_path, stem_size, too_long):
    """A defaced head of 240 or 245 characters: its report's file names (the picture alone at 240)
    are longer than the file system allows. Refused at once (the renders and face recognition
    took 8 s, then OSError: exit 1), with the option that names the report, and nothing in --out."""
    original = data_dir / IXI
    defaced = tmp_path / ("d" * stem_size + ".nii.gz")
    shutil.copyfile(original, defaced)  # the same grid: qa would judge the pair
    out = tmp_path / "qa"
    line = one_line_error(defacer("qa", original, defaced, "--out", out), 4, too_long, "more than the 255",
                          "--name")
    assert "bytes" in line
    assert not out.exists()


def test_qa_refuses_a_name_option_too_long(data_dir, tmp_path):
    """--name of 250 characters: the same crash; refused as `deface` refuses an output name too long."""
    original = data_dir / IXI
    out = tmp_path / "qa"
    one_line_error(defacer("qa", original, original, "--out", out, "--name", "n" * 250), 4, "n" * 250 + "_report",
                   "more than the 255")
    assert not out.exists()


def test_qa_refuses_only_what_does_not_fit(tmp_path):
    """The longest name whose picture fits (238 bytes) passes; one more byte is refused, naming the picture."""
    from DeFacerLib.qa.report import check_report_names

    fits = 255 - len("_before_after.png")
    check_report_names(tmp_path / "qa", "n" * fits)
    with pytest.raises(OutputError, match="_before_after.png has a name of 256 bytes"):
        check_report_names(tmp_path / "qa", "n" * (fits + 1))
    assert not (tmp_path / "qa").exists()


# ---- defacer batch -------------------------------------------------------------------------------

def test_batch_defaces_and_records_a_head_with_a_long_name(data_dir, tmp_path):
    """The head is defaced, its record kept (under a name that fits, found from the output's
    relative path), no record left beside the output in the shared tree, and a rerun finds it done.
    With --qa its front render is kept too (NAME.front.png failed the item after the render)."""
    source, out = tmp_path / "longv", tmp_path / "bout"
    source.mkdir()
    shutil.copyfile(data_dir / IXI, source / LONG_BIDS)
    first = defacer("batch", source, out, "--workers", "1", "--qa", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Errno" not in first.stderr + first.stdout
    output = out / LONG_BIDS
    assert output.is_file() and output.read_bytes()[:2] == b"\x1f\x8b"
    assert output.read_bytes() != (source / LONG_BIDS).read_bytes()  # defaced, not copied
    assert sorted(p.name for p in out.iterdir() if p.name != ".defacer") == [LONG_BIDS]  # no sidecar beside it
    from DeFacerLib.provenance import record_path

    record = record_path(out / ".defacer" / "provenance", LONG_BIDS)
    assert len(os.fsencode(record.name)) <= 255 and record.name.startswith(LONG_BIDS[:100])
    assert [p.name for p in (out / ".defacer" / "provenance").iterdir()] == [record.name]
    assert json.loads(record.read_text())["output"]["path"] == LONG_BIDS
    pictures = [p.name for p in (out / ".defacer" / "qa").iterdir()]
    assert len(pictures) == 1 and pictures[0].startswith(LONG_BIDS[:100]) and pictures[0].endswith(".front.png")
    rerun = defacer("batch", source, out, "--workers", "1", "--qa", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 already done, 0 to do" in rerun.stderr + rerun.stdout


def test_deface_refuses_a_qa_picture_name_too_long_before_the_work(data_dir, tmp_path):
    """`deface --qa DIR` of an output of 240 characters: STEM_before_after.png does not fit; it was
    found after the defacing and the renders. Refused at once, nothing written."""
    output = tmp_path / ("o" * 240 + ".nii.gz")
    one_line_error(defacer("deface", data_dir / IXI, output, "--qa", tmp_path / "qa"), 4, "_before_after.png",
                   "more than the 255")
    assert not output.exists() and not (tmp_path / "qa").exists()


def test_a_record_name_is_found_from_the_relative_path(tmp_path):
    """REL.defacer.json where it fits; else a cut name with a digest, so that two long names that
    start alike (runs of one acquisition) keep a record each."""
    from DeFacerLib.provenance import record_path

    folder = tmp_path / "provenance"
    assert record_path(folder, "sub-01/anat/sub-01_T1w.nii.gz") == folder / "sub-01/anat/sub-01_T1w.nii.gz.defacer.json"
    run1, run2 = (LONG_BIDS.replace("_T1w", f"_run-{run}_T1w")[:255] for run in (1, 2))
    one, two = record_path(folder, f"sub-01/anat/{run1}"), record_path(folder, f"sub-01/anat/{run2}")
    assert one != two and one.parent == folder / "sub-01" / "anat"
    assert one == record_path(folder, f"sub-01/anat/{run1}")  # the same on every call: a rerun finds it
    assert all(len(os.fsencode(path.name)) <= 255 and path.name.endswith(".defacer.json") for path in (one, two))


def test_a_record_that_cannot_fit_fails_its_item_naming_the_limit(data_dir, tmp_path, monkeypatch):
    """On a file system of short names (eCryptfs: 143 bytes) not even the cut record fits: the item
    fails before the defacing, with the limit in one line, not a raw errno, and writes nothing."""
    from DeFacerLib.batch.discover import DEFACE_VOLUME, Item
    from DeFacerLib.batch.tasks import BatchConfig, key_check_of, process_item
    from DeFacerLib.provenance import record_path

    real = os.pathconf
    monkeypatch.setattr(os, "pathconf", lambda path, name: 200 if name == "PC_NAME_MAX" else real(path, name))
    with pytest.raises(OutputError, match="more than the 200 its file system allows"):
        record_path(tmp_path / "provenance", LONG_BIDS)

    (tmp_path / "in").mkdir()
    shutil.copyfile(data_dir / IXI, tmp_path / "in" / "head.nii.gz")  # the input itself: a name that fits
    key = tmp_path / "site.key"
    key.write_text(bytes(range(32)).hex())
    config = BatchConfig(input_root=str(tmp_path / "in"), output_root=str(tmp_path / "out"),
                         audit_root=str(tmp_path / "audit"), key_file=str(key), key_check=key_check_of(bytes(range(32))))
    rel = "h" * 190 + ".nii.gz"  # the output (197 bytes) fits the limit of 200; its record cannot
    os.replace(tmp_path / "in" / "head.nii.gz", tmp_path / "in" / rel)
    outcome = process_item(Item(id="v", kind=DEFACE_VOLUME, files=(rel,), name=rel), config)
    assert outcome["state"] == "failed", outcome
    reason = outcome["reason"]
    assert "provenance record" in reason and "more than the 200 its file system allows" in reason, reason
    assert "Errno" not in reason and "\n" not in reason
    assert outcome["seconds"] < 3  # refused before the model ran
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_a_record_that_cannot_be_kept_leaves_no_sidecar_in_the_shared_tree(data_dir, tmp_path):
    """The record beside the output (deface's NAME.defacer.json) is moved into .defacer/: when that
    failed (here a file where its folder goes; before, a name too long) the item failed and its
    output was removed, but the record stayed in the data tree, naming the input."""
    from DeFacerLib.batch.discover import DEFACE_VOLUME, Item
    from DeFacerLib.batch.tasks import BatchConfig, key_check_of, process_item

    (tmp_path / "in").mkdir()
    shutil.copyfile(data_dir / IXI, tmp_path / "in" / "head.nii.gz")
    key = tmp_path / "site.key"
    key.write_text(bytes(range(32)).hex())
    out = tmp_path / "out"
    (out / ".defacer").mkdir(parents=True)
    (out / ".defacer" / "provenance").write_text("in the way\n")
    config = BatchConfig(input_root=str(tmp_path / "in"), output_root=str(out), audit_root=str(tmp_path / "audit"),
                         key_file=str(key), key_check=key_check_of(bytes(range(32))))
    outcome = process_item(Item(id="v", kind=DEFACE_VOLUME, files=("head.nii.gz",), name="head.nii.gz"), config)
    assert outcome["state"] == "failed", outcome
    assert sorted(p.name for p in out.iterdir()) == [".defacer"], sorted(p.name for p in out.iterdir())
