"""Objects of a study that are not images (a structured report, an encapsulated PDF) and the
DICOMDIR that indexes them, as an archive's export holds them, through `defacer scrub` and
`defacer batch`. Each is built in tmp_path from the fake-PHI CT's patient and study."""
from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from _dicom_for_tests import fake_phi_ct, key_file, scrub
from DeFacerLib.cli.main import main

COMPREHENSIVE_SR, ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.104.1"
STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                  "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDescription")


def _of_the_ct_study(ct: Dataset, sop_class: str, modality: str) -> Dataset:
    """A new instance, in a series of its own, of the CT's patient and study."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), modality, 99, 1
    ds.SpecificCharacterSet = "ISO_IR 100"
    for keyword in STUDY_KEYWORDS:
        if keyword in ct:
            setattr(ds, keyword, ct.data_element(keyword).value)
    ds.ContentDate, ds.ContentTime = ct.StudyDate, ct.StudyTime
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _report_on(ct: Dataset, text: str) -> Dataset:
    """A Comprehensive SR whose findings, two containers deep, hold ``text``."""
    sr = _of_the_ct_study(ct, COMPREHENSIVE_SR, "SR")
    sr.ValueType, sr.ContinuityOfContent = "CONTAINER", "SEPARATE"
    sr.CompletionFlag, sr.VerificationFlag = "COMPLETE", "UNVERIFIED"
    sr.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    comment = Dataset()
    comment.RelationshipType, comment.ValueType, comment.TextValue = "CONTAINS", "TEXT", text
    comment.ConceptNameCodeSequence = Sequence([_code("121106", "DCM", "Comment")])
    findings = Dataset()
    findings.RelationshipType, findings.ValueType, findings.ContinuityOfContent = "CONTAINS", "CONTAINER", "SEPARATE"
    findings.ConceptNameCodeSequence = Sequence([_code("121070", "DCM", "Findings")])
    findings.ContentSequence = Sequence([comment])
    sr.ContentSequence = Sequence([findings])
    return sr


def _media_with_report(data_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    """A DICOMDIR file set of the CT and a report that names the CT's referring physician;
    pydicom's FileSet copies the report's content into its SR DOCUMENT record (PS3.3 F.5.24)."""
    from pydicom.fileset import FileSet

    ct = fake_phi_ct(data_dir)
    physician = str(ct.ReferringPhysicianName).split("^")[0]  # HIBBARD
    sources = tmp_path / "sources"
    sources.mkdir()
    _report_on(ct, f"Findings discussed with Dr {physician} by phone").save_as(sources / "sr.dcm",
                                                                              enforce_file_format=True)
    media = FileSet()
    for path in (data_dir / "dicom" / "fake_phi_ct" / "ctbrain1.dcm", sources / "sr.dcm"):
        media.add(path)
    media.write(tmp_path / "cd")
    assert physician.encode() in (tmp_path / "cd" / "DICOMDIR").read_bytes()
    return tmp_path / "cd", physician


def _report_text_in(dicomdir: Path) -> str:
    for record in pydicom.dcmread(dicomdir).DirectoryRecordSequence:
        if record.DirectoryRecordType == "SR DOCUMENT":
            return str(record.ContentSequence[0].ContentSequence[0].TextValue)
    raise AssertionError("no SR DOCUMENT record")


def test_a_dicomdir_report_record_loses_what_the_report_loses(tmp_path, data_dir):
    """Under Clean Structured Content the report kept its text without the referring physician's
    name, but the DICOMDIR's SR DOCUMENT record kept the same text with the name: the DICOMDIR
    was cleaned, and leak-checked, with its own PHI only (its records name no physician)."""
    media, physician = _media_with_report(data_dir, tmp_path)
    assert scrub(tmp_path, media, tmp_path / "out", "--clean-structured-content") == 0
    report = next(p for p in (tmp_path / "out").rglob("SR*") if p.is_file())
    assert physician.encode() not in report.read_bytes()
    assert physician.encode() not in (tmp_path / "out" / "DICOMDIR").read_bytes()
    assert _report_text_in(tmp_path / "out" / "DICOMDIR") == "Findings discussed with Dr  by phone"


def test_a_dicomdir_takes_its_files_phi_from_their_own_scrub(tmp_path, data_dir, monkeypatch):
    """The DICOMDIR is scrubbed after the files it indexes, with the PHI their scrub found: each
    was read a second time for it (a 10,000-file archive's scrub took twice as long), and its
    leak check still counts their PHI."""
    media, physician = _media_with_report(data_dir, tmp_path)
    reads: dict[str, int] = {}
    read = pydicom.dcmread

    def counted(source, *args, **kwargs):
        if isinstance(source, (str, Path)):  # not the DICOMDIR's own bytes, read back as it is written
            reads[Path(source).name] = reads.get(Path(source).name, 0) + 1
        return read(source, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted)
    assert scrub(tmp_path, media, tmp_path / "out", "--clean-structured-content") == 0
    indexed = [p.name for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert len(indexed) == 2 and all(reads[name] == 1 for name in indexed), reads
    assert physician.encode() not in (tmp_path / "out" / "DICOMDIR").read_bytes()
    assert _report_text_in(tmp_path / "out" / "DICOMDIR") == "Findings discussed with Dr  by phone"


def test_a_dicomdir_finds_its_files_in_another_case(tmp_path, data_dir):
    """A CD mounted on Linux shows the File IDs in lower case (or with ISO 9660's ";1"): the
    indexed files were matched exactly only, none was found, and the DICOMDIR kept the name."""
    media, physician = _media_with_report(data_dir, tmp_path)
    for path in sorted(media.rglob("*"), key=lambda p: -len(p.parts)):  # deepest first
        if path.name != "DICOMDIR":
            path.rename(path.with_name(path.name.lower() + (";1" if path.is_file() and "sr" in path.name.lower() else "")))
    assert scrub(tmp_path, media, tmp_path / "out", "--clean-structured-content") == 0
    assert physician.encode() not in (tmp_path / "out" / "DICOMDIR").read_bytes()


def test_a_batch_cleans_a_dicomdir_report_record_too(tmp_path, data_dir):
    """`defacer batch` scrubs the DICOMDIR as an item of its own, apart from the files it indexes."""
    pytest.importorskip("distributed")
    media, physician = _media_with_report(data_dir, tmp_path)
    assert main(["batch", str(media), str(tmp_path / "out"), "--key-file", str(key_file(tmp_path)), "-q",
                 "--scrub-only", "--workers", "1", "--clean-structured-content"]) == 0
    assert physician.encode() not in (tmp_path / "out" / "DICOMDIR").read_bytes()
    assert _report_text_in(tmp_path / "out" / "DICOMDIR") == "Findings discussed with Dr  by phone"


def test_a_dicomdir_with_a_report_naming_the_patient_is_stopped_when_dates_are_kept(tmp_path, data_dir):
    """With full dates kept, a report's Date item holding the birth date is left (C keeps dates):
    the report's leak check stopped the run, and the DICOMDIR's copy of it must count too."""
    media, _ = _media_with_report(data_dir, tmp_path)
    ct = fake_phi_ct(data_dir)
    sr = pydicom.dcmread(next(p for p in media.rglob("SR*") if p.is_file()))
    born = Dataset()
    born.RelationshipType, born.ValueType, born.Date = "HAS OBS CONTEXT", "DATE", ct.PatientBirthDate
    born.ConceptNameCodeSequence = Sequence([_code("121031", "DCM", "Subject Birth Date")])
    index = pydicom.dcmread(media / "DICOMDIR")
    record = next(r for r in index.DirectoryRecordSequence if r.DirectoryRecordType == "SR DOCUMENT")
    record.ContentSequence.append(born)
    index.save_as(media / "DICOMDIR", enforce_file_format=False)
    assert sr.SOPInstanceUID == record.ReferencedSOPInstanceUIDInFile
    assert scrub(tmp_path, media, tmp_path / "out", "--clean-structured-content", "--dates", "full") != 0
    failed = (tmp_path / "out.audit.failed" / "summary.json").read_text()
    assert '"file": "DICOMDIR"' in failed


def test_an_encapsulated_pdf_says_the_length_of_the_dummy_that_replaced_it(tmp_path, data_dir):
    """Encapsulated Document (D) became a 2-byte dummy, Encapsulated Document Length still said
    the PDF's length: a reader trusting the length read past the value's end."""
    (tmp_path / "in").mkdir()
    _pdf_of(fake_phi_ct(data_dir)).save_as(tmp_path / "in" / "report.dcm", enforce_file_format=True)
    assert scrub(tmp_path, tmp_path / "in", tmp_path / "out") == 0
    written = tmp_path / "out" / "report.dcm"
    out = pydicom.dcmread(written)
    assert b"SIMPSON" not in written.read_bytes() and b"%PDF" not in written.read_bytes()
    assert out.EncapsulatedDocumentLength == len(out.EncapsulatedDocument) > 0


def _pdf_of(ct: Dataset, burned_in: str = "YES") -> Dataset:
    pdf = f"%PDF-1.4\n% report for {ct.PatientName} {ct.PatientID}\n%%EOF\n".encode()
    doc = _of_the_ct_study(ct, ENCAPSULATED_PDF, "DOC")
    doc.MIMETypeOfEncapsulatedDocument, doc.DocumentTitle = "application/pdf", "Report"
    doc.BurnedInAnnotation = burned_in
    doc.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    doc.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)
    doc.EncapsulatedDocumentLength = len(pdf)
    return doc


def test_an_encapsulated_pdf_saying_burned_in_is_no_image_to_look_at(tmp_path, data_dir):
    """A PDF's Burned In Annotation YES speaks of the document, which D replaced: the run warned
    that its "pixels" show text and told the user to rerun with --clean-pixel-data."""
    (tmp_path / "in").mkdir()
    _pdf_of(fake_phi_ct(data_dir)).save_as(tmp_path / "in" / "report.dcm", enforce_file_format=True)
    assert scrub(tmp_path, tmp_path / "in", tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out.audit" / "summary.json").read_text())
    assert summary["written"] == 1 and summary["burned_in_annotation"] == []


def test_clean_pixel_data_claims_nothing_of_objects_without_pixels(tmp_path, data_dir):
    """A report and a DICOMDIR have no pixels: each was marked 113101 (Clean Pixel Data) and
    Burned In Annotation NO, an attribute of neither IOD, and counted as a file cleaned."""
    from DeFacerLib.dicom.pixels_ocr import tesseract_available

    if not tesseract_available():
        pytest.skip("Tesseract OCR is not installed")
    media, _ = _media_with_report(data_dir, tmp_path)
    (media / "PT000000" / "ST000000" / "SE000000").rename(tmp_path / "ct_series")  # the report and its DICOMDIR only
    assert scrub(tmp_path, media, tmp_path / "out", "--clean-pixel-data") == 0
    summary = json.loads((tmp_path / "out.audit" / "summary.json").read_text())
    assert summary["written"] == 2 and summary["pixels_cleaned"] == 0
    for path in (p for p in (tmp_path / "out").rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == ["113100"], path.name
        assert "BurnedInAnnotation" not in ds, path.name


def _verified_report_on(ct: Dataset) -> Dataset:
    """A report a radiologist signed: VERIFIED needs the Verifying Observer Sequence (Type 1C,
    one item or more, each with the observer's name, organisation and date-time, Type 1)."""
    sr = _report_on(ct, "No acute findings")
    sr.VerificationFlag = "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName, observer.VerifyingOrganization = "WELBY^MARCUS", "ST ELSEWHERE RADIOLOGY"
    observer.VerificationDateTime = "20240312101500"
    observer.VerifyingObserverIdentificationCodeSequence = Sequence([_code("RAD-55012", "L", "WELBY MARCUS")])
    sr.VerifyingObserverSequence = Sequence([observer])
    sr.InstitutionCodeSequence = Sequence([_code("HOSP-7731", "L", "ST ELSEWHERE")])
    return sr


def test_a_verified_report_keeps_its_verifying_observer_with_dummy_values(tmp_path, data_dir):
    """Action D on a sequence asks for a non-zero length value: the Verifying Observer Sequence,
    whose every attribute has a row of its own, keeps its item with dummies (it was emptied, and
    a VERIFIED report without its verifier is not a valid SR). A D sequence holding attributes
    the table keeps (the Institution Code Sequence's code value) is still emptied."""
    (tmp_path / "in").mkdir()
    _verified_report_on(fake_phi_ct(data_dir)).save_as(tmp_path / "in" / "sr.dcm", enforce_file_format=True)
    assert scrub(tmp_path, tmp_path / "in", tmp_path / "out") == 0
    written = next(p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".json")
    report = pydicom.dcmread(written)
    assert report.VerificationFlag == "VERIFIED" and len(report.VerifyingObserverSequence) == 1
    observer = report.VerifyingObserverSequence[0]
    assert (str(observer.VerifyingObserverName), observer.VerifyingOrganization) == ("ANONYMIZED", "ANONYMIZED")
    assert observer.VerificationDateTime == "19000101000000"
    assert "VerifyingObserverIdentificationCodeSequence" in observer
    assert len(observer.VerifyingObserverIdentificationCodeSequence) == 0
    assert len(report.InstitutionCodeSequence) == 0
    for secret in (b"WELBY", b"ELSEWHERE", b"RAD-55012", b"HOSP-7731", b"20240312"):
        assert secret not in written.read_bytes(), secret
