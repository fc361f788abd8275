"""PHI outside the de-identified files: what the console and the shared batch reports say about
a file that failed. Each test failed before its fix."""
from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from DeFacerLib.cli.main import main

KEY = bytes(range(32))
NAME = "ZZLEAKNAME^ALICE"  # a marker no rule or path holds, so any hit is the header's


def _key(tmp_path: Path) -> Path:
    key = tmp_path / "project.key"
    key.write_text(KEY.hex() + "\n")
    key.chmod(0o600)
    return key


def test_a_scrub_stopped_by_the_leak_check_prints_no_phi(data_dir, tmp_path, capsys):
    """A kept attribute (Manufacturer) holding the patient's name stops the run; the error on
    standard error quoted the name itself ("still holds 'ZZLEAKNAME'"), and standard error goes
    to job logs. It names the attribute; the private failed audit keeps the value."""
    source = tmp_path / "in"
    source.mkdir()
    ds = pydicom.dcmread(data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm")
    ds.PatientName = NAME
    ds.Manufacturer = NAME.split("^")[0]
    ds.save_as(source / "a.dcm")
    out = tmp_path / "out"
    assert main(["scrub", str(source), str(out), "--key-file", str(_key(tmp_path))]) == 5
    console = capsys.readouterr()
    assert "(Manufacturer) still holds a value from PatientName" in console.err
    assert "ZZLEAK" not in console.err + console.out
    log = out.with_name("out.audit.failed") / "actions.jsonl"
    assert "still holds 'ZZLEAKNAME' from PatientName" in log.read_text()
    assert not out.exists()


def _shared_reports(out: Path) -> str:
    """Every byte of what a batch publishes beside the data (.defacer/), as text."""
    return "".join(p.read_bytes().decode("latin-1") for p in sorted((out / ".defacer").rglob("*")) if p.is_file())


def test_a_failed_file_named_by_its_uid_is_not_named_in_the_shared_batch_reports(data_dir, tmp_path):
    """A PACS export names files by their SOP Instance UID. One that fails (here the leak check)
    is not published, but its path went into report.csv, report.html, summary.json and the
    manifest, shared with the data: the original UID, published nowhere else. The reports say a
    file's path holds PHI; the private audit names it."""
    pytest.importorskip("distributed")
    from DeFacerLib.batch import run_batch

    source = tmp_path / "in" / "study"
    source.mkdir(parents=True)
    ds = pydicom.dcmread(data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm")
    ds.PatientName = NAME
    ds.Manufacturer = NAME.split("^")[0]
    uid = str(ds.SOPInstanceUID)
    ds.save_as(source / f"{uid}.dcm")
    out = tmp_path / "out"
    summary = run_batch(tmp_path / "in", out, key_file=_key(tmp_path), workers=1)
    assert summary["failed"] == 1 and summary["written"] == 0
    assert "a file whose path holds PHI of its header" in summary["failed_items"][0]["reason"]
    shared = _shared_reports(out)
    assert "manifest.sqlite" in str(list((out / ".defacer").iterdir())) and "leak check" in shared
    assert uid not in shared and "ZZLEAK" not in shared
    audit = "".join(p.read_text() for p in (tmp_path / "out.audit").rglob("actions.jsonl"))
    assert f"study/{uid}.dcm" in audit


def test_a_head_series_with_damaged_files_says_which(data_dir, tmp_path):
    """Two copies of a slice cut short in a head series: the batch refused the series (right: no
    series is published without a file) with "defacing wrote 176 files for 178 inputs", naming
    none. It names the first in the reports unless its path holds PHI (here its SOP Instance
    UID), and lists them all in the item's private audit."""
    pytest.importorskip("distributed")
    from DeFacerLib.batch import run_batch

    trio = data_dir / "dicom" / "siemens_trio_mprage_1mm"
    series = tmp_path / "in" / "mprage"
    series.mkdir(parents=True)
    for path in sorted(trio.glob("*.dcm")):
        (series / path.name).symlink_to(path)
    slice_50 = trio / "00050.dcm"
    uid = str(pydicom.dcmread(slice_50, stop_before_pixels=True).SOPInstanceUID)
    for name in (f"{uid}.dcm", "broken.dcm"):
        (series / name).write_bytes(slice_50.read_bytes()[:30000])  # the header, part of the pixels
    out = tmp_path / "out"
    summary = run_batch(tmp_path / "in", out, key_file=_key(tmp_path), workers=1)
    assert summary["written"] == 0 and summary["failed"] == 178
    reason = summary["failed_items"][0]["reason"]
    assert "2 of its 178 files could not be read as images of the series" in reason, reason
    assert "(first: a file whose path holds PHI of its header" in reason, reason
    assert uid not in _shared_reports(out)
    listed = json.loads(next((tmp_path / "out.audit").rglob("files_not_read.json")).read_text())
    assert listed == [f"mprage/{uid}.dcm", "mprage/broken.dcm"]


def test_a_slice_position_holding_text_is_not_quoted(data_dir, tmp_path):
    """A damaged ImagePositionPatient was quoted whole in the error ("has ImagePositionPatient
    ZZLEAKNAME\\1\\2, not 3 numbers"), which batch puts in its shared reports. Numbers are still
    shown; text is not."""
    from DeFacerLib.errors import InputError
    from DeFacerLib.io import read_volume

    trio = data_dir / "dicom" / "siemens_trio_mprage_1mm"
    series = tmp_path / "series"
    series.mkdir()
    for name in ("00060.dcm", "00061.dcm", "00062.dcm"):
        ds = pydicom.dcmread(trio / name)
        if name == "00061.dcm":
            tag = pydicom.tag.Tag("ImagePositionPatient")
            ds[tag] = pydicom.dataelem.RawDataElement(tag, "DS", 14, b"ZZLEAKNAME\\1\\2", 0, False, True)
        ds.save_as(series / name)
    with pytest.raises(InputError) as error:
        read_volume(series)
    assert "00061.dcm has ImagePositionPatient (text that is not numbers), not 3 numbers" in str(error.value)
    assert "ZZLEAK" not in str(error.value)
