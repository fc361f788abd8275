"""`defacer scrub`: dates of every PS3.5 form, UIDs the profile table has no row for, and leak
check false alarms that blocked a patient on every run. Each test failed before its fix."""
from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from DeFacerLib.cli.main import main
from DeFacerLib.dicom.dates import shift_da, shift_dt

KEY = bytes(range(32))
VENDOR_UID = "1.3.12.2.1107.5.1.4.65515.30000023010101172162100000007"
WELL_KNOWN_PALETTE = "1.2.840.10008.1.5.1"  # PS3.6 Annex A: the Hot Iron colour palette instance


def _scrub(tmp_path: Path, source: Path, output: Path, *flags: str) -> int:
    key = tmp_path / "project.key"
    key.write_text(KEY.hex() + "\n")
    key.chmod(0o600)  # private, as DeFacer makes its keys (one others can read is warned about)
    return main(["scrub", str(source), str(output), "--key-file", str(key), "-q", *flags])


def _leaks_found(output: Path) -> list[str]:
    """What the leak check found, value included, as the failed run's private audit keeps it
    (standard error names the attribute only)."""
    log = output.with_name(output.name + ".audit.failed") / "actions.jsonl"
    return [leak for line in log.read_text().splitlines() for leak in json.loads(line).get("leaks", [])]


def _ct(data_dir: Path, tmp_path: Path, **values) -> Path:
    """The fake-PHI CT slice with ``values`` set, in a folder of its own."""
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    ds = pydicom.dcmread(data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm")
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(folder / "ct.dcm")
    return folder


@pytest.mark.parametrize("value, days, want", [
    ("2019", -3595, "2009"),  # a year alone moves with the middle of the year (was the dummy date)
    ("201903", -3595, "200905"),
    ("2019+0100", -1500, "2015+0100"),
    ("20190315101112.123456-0500", -10, "20190305101112.123456-0500"),
    ("20190315", 0, "20190315"),
    ("20190315JOHN", -10, None),  # trailing text was kept: it may name someone
    ("20190315.5", -10, None),
    ("2019031510111", -10, None),
    ("201913", -10, None),
])
def test_datetimes_of_every_form_shift_or_are_refused(value, days, want):
    assert shift_dt(value, days) == want


def test_dates_before_the_year_1000_keep_eight_digits():
    assert shift_da("00010105", -4) == "00010101"
    assert shift_da("09990315", -10) == "09990305"


def test_a_year_only_datetime_is_shifted_with_the_patients_dates(tmp_path, data_dir):
    source = _ct(data_dir, tmp_path, AcquisitionDateTime="2019", StudyDate="20190702")
    assert _scrub(tmp_path, source, tmp_path / "out", "--dates", "modified") == 0
    out = pydicom.dcmread(tmp_path / "out" / "ct.dcm")
    assert len(out.AcquisitionDateTime) == 4 and out.AcquisitionDateTime == out.StudyDate[:4] != "2019"


def test_instance_uids_the_table_has_no_row_for_are_replaced(tmp_path, data_dir):
    """SOP Instance UID of Concatenation Source has no row in Table E.1-1 (2024b): the original
    UID (a Siemens one, with the acquisition's date and time in it) was published as it was."""
    source = _ct(data_dir, tmp_path, SOPInstanceUIDOfConcatenationSource=VENDOR_UID,
                 ReferencedColorPaletteInstanceUID=WELL_KNOWN_PALETTE)
    assert _scrub(tmp_path, source, tmp_path / "out") == 0
    out = pydicom.dcmread(tmp_path / "out" / "ct.dcm")
    assert out.SOPInstanceUIDOfConcatenationSource.startswith("2.25.")
    assert out.ReferencedColorPaletteInstanceUID == WELL_KNOWN_PALETTE  # the standard's own: still resolves
    assert out.SOPClassUID == pydicom.dcmread(source / "ct.dcm").SOPClassUID

    assert _scrub(tmp_path, source, tmp_path / "kept", "--retain-uids") == 0
    assert pydicom.dcmread(tmp_path / "kept" / "ct.dcm").SOPInstanceUIDOfConcatenationSource == VENDOR_UID


@pytest.mark.parametrize("keyword, value", [("PatientID", "10008"), ("StudyID", "840")])
def test_an_id_equal_to_a_part_of_the_standards_uids_is_no_leak(tmp_path, data_dir, keyword, value):
    """Every SOP class and transfer syntax UID is 1.2.840.10008.*: such an ID failed the leak
    check (exit 5) on every run, with every key."""
    source = _ct(data_dir, tmp_path, **{keyword: value})
    assert _scrub(tmp_path, source, tmp_path / "out") == 0


def test_a_shifted_date_equal_to_another_input_date_is_no_leak(tmp_path, data_dir):
    """The shift is the same for a patient on every run, so a removed date that happened to
    equal a shifted one failed that patient for good (about 1 in 3300 per pair of dates)."""
    source = _ct(data_dir, tmp_path)
    assert _scrub(tmp_path, source, tmp_path / "first", "--dates", "modified") == 0
    shifted_study_date = pydicom.dcmread(tmp_path / "first" / "ct.dcm").StudyDate
    source = _ct(data_dir, tmp_path, DateOfLastCalibration=shifted_study_date)
    assert _scrub(tmp_path, source, tmp_path / "out", "--dates", "modified") == 0
    out = pydicom.dcmread(tmp_path / "out" / "ct.dcm")
    assert out.StudyDate == shifted_study_date and "DateOfLastCalibration" not in out


def test_a_real_date_left_in_kept_text_is_still_a_leak(tmp_path, data_dir, capsys):
    """The guard of the fix above: the study's own date, kept in a text the profile keeps."""
    ds = pydicom.dcmread(data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm")
    source = _ct(data_dir, tmp_path, Manufacturer=f"ACME {ds.StudyDate}")
    assert _scrub(tmp_path, source, tmp_path / "out", "--dates", "modified") == 5
    assert "(Manufacturer) still holds a value from" in capsys.readouterr().err
    assert any(ds.StudyDate in leak for leak in _leaks_found(tmp_path / "out"))


def test_a_device_numbering_its_studies_under_the_standards_root_is_still_pseudonymised(tmp_path, data_dir):
    """Only the UIDs the standard registers are its own: a non-conformant device's study UID
    under 1.2.840.10008 was kept, and the leak check looked away."""
    study = "1.2.840.10008.99.20190315.4711.1"
    source = _ct(data_dir, tmp_path, StudyInstanceUID=study)
    assert _scrub(tmp_path, source, tmp_path / "out") == 0
    assert pydicom.dcmread(tmp_path / "out" / "ct.dcm").StudyInstanceUID.startswith("2.25.")


def test_a_removed_date_equal_to_a_shifted_one_is_still_found_in_kept_text(tmp_path, data_dir, capsys):
    """The exemption above left that input date out of the whole check: kept text holding it was
    published (exit 0)."""
    source = _ct(data_dir, tmp_path)
    assert _scrub(tmp_path, source, tmp_path / "first", "--dates", "modified") == 0
    shifted_study_date = pydicom.dcmread(tmp_path / "first" / "ct.dcm").StudyDate
    source = _ct(data_dir, tmp_path, DateOfLastCalibration=shifted_study_date, Manufacturer=f"ACME {shifted_study_date}")
    assert _scrub(tmp_path, source, tmp_path / "out", "--dates", "modified") == 5
    assert "still holds a value from DateOfLastCalibration" in capsys.readouterr().err
    assert f"(0008,0070) (Manufacturer) still holds '{shifted_study_date}' from DateOfLastCalibration" in _leaks_found(tmp_path / "out")
