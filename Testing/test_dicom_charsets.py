"""DICOM text in other character sets, and names and locales that are not UTF-8: the scrub must
find the patient's name wherever the file's Specific Character Set puts it, and write its audit
trail whatever the terminal's locale."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from _dicom_for_tests import fake_phi_ct, key_file, scrub

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("charset, person, kept", [
    ("ISO_IR 144", "ГУНТЕР^ИВАН", "ГУНТЕР scanner"),  # Cyrillic
    ("GB18030", "王^小东", "小东 scanner"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎", "山田 CT"),  # Japanese, code extensions
])
def test_a_name_in_a_sequence_item_is_read_in_the_files_character_set(tmp_path, data_dir, charset, person, kept):
    """An item without its own Specific Character Set is in its parent's; the scrub read its
    names as Latin-1, the leak check looked for that mojibake, and a kept attribute naming the
    requesting physician in Cyrillic, Chinese or kanji was published (exit 0)."""
    source = tmp_path / "in"
    source.mkdir()
    ds = fake_phi_ct(data_dir)
    ds.SpecificCharacterSet = charset
    ds.PatientName = "DOE^JOHN"
    ds.Manufacturer = kept  # kept by the profile
    item = Dataset()
    item.RequestingPhysician = person
    ds.RequestAttributesSequence = Sequence([item])  # removed by the profile: its names are PHI
    ds.save_as(source / "ct.dcm")
    assert scrub(tmp_path, source, tmp_path / "out") == 5
    assert not (tmp_path / "out").exists()


def _declared_utf8_holding_latin1(data_dir: Path, folder: Path) -> Path:
    """A real file saying ISO_IR 192 whose text is Latin-1 (a converter that got it wrong)."""
    ds = fake_phi_ct(data_dir)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "MÜLLER^JÜRGEN"
    ds.Manufacturer = "MÜLLER scanner"  # kept by the profile
    ds.SeriesDescription = "JÜRGEN MÜLLER T1"  # cleaned under --clean-descriptors
    folder.mkdir()
    path = folder / "ct.dcm"
    ds.save_as(path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"ISO_IR 100", b"ISO_IR 192", 1))
    return path


def test_latin1_text_in_a_file_that_says_utf8_is_found(tmp_path, data_dir):
    """Undecodable UTF-8 became U+FFFD in the PHI strings ('M\\ufffdLLER'), which the Latin-1
    bytes of the kept Manufacturer never hold: the name was published (exit 0)."""
    source = tmp_path / "in"
    _declared_utf8_holding_latin1(data_dir, source)
    assert scrub(tmp_path, source, tmp_path / "out") == 5
    assert not (tmp_path / "out").exists()


def test_clean_descriptors_removes_latin1_text_from_a_file_that_says_utf8(tmp_path, data_dir):
    """Cleaning reads the description as pydicom decodes it ('J\\ufffdRGEN M\\ufffdLLER T1'),
    which held none of the PHI strings: it was kept and published."""
    source = tmp_path / "in"
    ds = pydicom.dcmread(_declared_utf8_holding_latin1(data_dir, source))
    ds.Manufacturer = "ACME"
    ds.save_as(source / "ct.dcm")
    assert scrub(tmp_path, source, tmp_path / "out", "--clean-descriptors") == 0
    written = pydicom.dcmread(tmp_path / "out" / "ct.dcm")
    assert written.SeriesDescription == "T1"


def test_a_folder_named_in_latin1_after_the_patient_is_reported(tmp_path, data_dir):
    """A Windows archive unpacked on Linux keeps Latin-1 folder names ('J\\xfcrgen'), which
    Python holds as 'J\\udcfcrgen': the path check missed the patient's name in it."""
    source = tmp_path / "in"
    folder = os.fsdecode(bytes(source) + b"/J\xfcrgen")
    os.makedirs(folder)
    ds = fake_phi_ct(data_dir)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "MÜLLER^JÜRGEN"
    ds.save_as(os.path.join(folder, "1.dcm"))
    assert scrub(tmp_path, source, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out.audit" / "summary.json").read_text())
    assert [entry["holds"] for entry in summary["paths_holding_phi"]] == ["'Jürgen' from PatientName"]


def _ascii_locale_scrub(tmp_path: Path, source: Path) -> subprocess.CompletedProcess:
    """``defacer scrub`` under an ASCII locale without Python's UTF-8 mode (LC_ALL=C, PYTHONUTF8=0)."""
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "DeFacerLib", "scrub", str(source), str(tmp_path / "out"),
                           "--key-file", str(key_file(tmp_path)), "-q"], capture_output=True, env=env, cwd=REPO,
                          timeout=300)


def test_a_utf8_folder_named_after_the_patient_is_reported_under_an_ascii_locale(tmp_path, data_dir):
    """Under an ASCII locale Python holds the UTF-8 folder 'Jürgen' as 'J\\udcc3\\udcbcrgen': the
    path check missed the patient's name in it."""
    source = tmp_path / "in"
    (source / "Jürgen").mkdir(parents=True)
    ds = fake_phi_ct(data_dir)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "MÜLLER^JÜRGEN"
    ds.save_as(source / "Jürgen" / "1.dcm")
    run = _ascii_locale_scrub(tmp_path, source)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out.audit" / "summary.json").read_text(encoding="utf-8"))
    assert [entry["holds"] for entry in summary["paths_holding_phi"]] == ["'Jürgen' from PatientName"]


@pytest.mark.parametrize("charset, patient_id", [("ISO_IR 100", "MÜLLER01"), (["", "ISO 2022 IR 87"], "山田001")])
def test_the_audit_mapping_is_utf8_under_an_ascii_locale(tmp_path, data_dir, charset, patient_id):
    """patid_mapping.csv was written in the locale's encoding: under an ASCII locale (LC_ALL=C
    without Python's UTF-8 mode) a non-ASCII Patient ID was an internal error (exit 1)."""
    source = tmp_path / "in"
    source.mkdir()
    ds = fake_phi_ct(data_dir)
    ds.SpecificCharacterSet = charset
    ds.PatientID = patient_id
    ds.save_as(source / "ct.dcm")
    run = _ascii_locale_scrub(tmp_path, source)
    assert run.returncode == 0, run.stderr
    mapping = (tmp_path / "out.audit" / "patid_mapping.csv").read_text(encoding="utf-8")
    assert mapping.splitlines()[1].startswith(f"{patient_id},DEFACER-")


def test_info_of_a_dicom_series_prints_under_an_ascii_locale(tmp_path, data_dir):
    """The table cut the series UID with "…": under an ASCII locale that was an internal error
    (exit 1), and anywhere the UID shown could not be copied to --series."""
    series = data_dir / "dicom" / "siemens_trio_mprage_1mm"
    uid = pydicom.dcmread(series / "00001.dcm", stop_before_pixels=True).SeriesInstanceUID
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "DeFacerLib", "info", str(series)], capture_output=True, env=env,
                         cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    folded = "".join(line.split("|")[2].strip() for line in run.stdout.decode("ascii").splitlines()
                     if line.count("|") == 3 and line.split("|")[1].strip() in ("series_uid", ""))
    assert folded.startswith(uid)


def test_a_library_warning_is_one_line_and_quiet_under_q(tmp_path, data_dir):
    """pydicom warns of a character set it does not know in Python's two lines (its file and its
    source line) around DeFacer's one-line messages; now one ``defacer: warning:`` line, and
    nothing under -q, where only the outcome is wanted."""
    ds = fake_phi_ct(data_dir)
    ds.SpecificCharacterSet = "ISO_IR 999"
    ds.save_as(tmp_path / "unknown_charset.dcm")
    for quiet in ((), ("-q",)):
        out = tmp_path / f"out{len(quiet)}.dcm"
        run = subprocess.run([sys.executable, "-m", "DeFacerLib", "scrub", str(tmp_path / "unknown_charset.dcm"),
                              str(out), "--key-file", str(key_file(tmp_path)), *quiet],
                             capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 0 and out.is_file(), run.stderr
        expected = [] if quiet else ["defacer: warning: Unknown encoding 'ISO_IR 999' - using default encoding instead"]
        assert run.stderr.splitlines() == expected
