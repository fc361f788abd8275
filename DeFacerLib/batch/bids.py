"""BIDS specifics: which JSON sidecar fields are PHI, the dates in scans and sessions tables,
and the GeneratedBy entry.

dcm2niix and other converters copy DICOM identity fields into the sidecars. The
acquisition parameters (RepetitionTime, EchoTime, FlipAngle, SliceTiming, ...) are what
BIDS users need and are kept; who, where, when and which machine are removed.

``sub-*_scans.tsv`` and ``sub-*_sessions.tsv`` give each scan's or session's date and time
(``acq_time``): the dates policy of the DICOM profile applies to them (removed, i.e. "n/a",
by default; shifted by the subject's keyed whole-day offset with ``--dates modified``, which
keeps every interval of that subject and the time of day; kept with ``--dates full``).
"""
from __future__ import annotations

import datetime as _dt
import json
import re

from DeFacerLib import __version__

# Removed from every sidecar, at any depth. Names as dcm2niix and BIDS write them.
PHI_FIELDS = frozenset({
    # who
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight", "PatientSize",
    "OtherPatientIDs", "PatientAddress", "PatientTelephoneNumbers", "EthnicGroup", "PatientComments",
    "AccessionNumber", "StudyID", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "PhysiciansOfRecord", "RequestingPhysician", "ImageComments", "StudyComments", "AdditionalPatientHistory",
    # where and which machine
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "DeviceUID",
    # when (absolute dates; times of day without a date are kept, as BIDS does)
    "AcquisitionDateTime", "AcquisitionDate", "StudyDate", "SeriesDate", "ContentDate", "InstanceCreationDate",
    "StudyDateTime", "SeriesDateTime", "DateOfLastCalibration", "PerformedProcedureStepStartDate",
    # identifiers that link back to the PACS
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "ReferencedSOPInstanceUID",
})

GENERATED_BY_NAME = "DeFacer"

DATED_TABLE = re.compile(r"(^|/)sub-[^/_]+(_ses-[^/_]+)?_(scans|sessions)\.tsv$")
DATE_COLUMNS = ("acq_time",)
MISSING = "n/a"


def scrub_dated_table(text: str, dates: str, offset_days: int = 0) -> tuple[str, int]:
    """(the table with its DATE_COLUMNS cleaned, how many values changed). ``dates``: "remove"
    (every value "n/a"), "modified" (the date part shifted by ``offset_days``; a value that does
    not parse as BIDS datetime becomes "n/a") or "full" (kept)."""
    lines = text.splitlines(keepends=True)
    if not lines or dates == "full":
        return text, 0
    header = lines[0].rstrip("\r\n").split("\t")
    columns = [i for i, name in enumerate(header) if name in DATE_COLUMNS]
    changed = 0
    out = [lines[0]]
    for line in lines[1:]:
        body = line.rstrip("\r\n")
        cells = body.split("\t")
        for i in columns:
            if i < len(cells) and cells[i] not in ("", MISSING):
                new = MISSING if dates == "remove" else (_shift_datetime(cells[i], offset_days) or MISSING)
                changed += new != cells[i]
                cells[i] = new
        out.append("\t".join(cells) + line[len(body):])
    return "".join(out), changed


def _shift_datetime(value: str, days: int) -> str | None:
    """YYYY-MM-DD[Thh:mm:ss[.f][Z]] with the date moved by ``days``; None if it does not parse."""
    try:
        day = _dt.date.fromisoformat(value[:10])
    except ValueError:
        return None
    if len(value) > 10 and value[10] != "T":
        return None
    try:
        shifted = day + _dt.timedelta(days=days)
    except OverflowError:
        return None
    return shifted.isoformat() + value[10:]


def subject_of(rel: str) -> str:
    """The BIDS subject label a relative path belongs to ("sub-01"), or "" outside any subject."""
    first = rel.split("/", 1)[0]
    return first if first.startswith("sub-") else ""


def scrub_sidecar(data):
    """(cleaned copy, sorted names of the fields removed). Nested objects are cleaned too."""
    removed: set[str] = set()

    def clean(value):
        if isinstance(value, dict):
            kept = {}
            for key, inner in value.items():
                if key in PHI_FIELDS:
                    removed.add(key)
                else:
                    kept[key] = clean(inner)
            return kept
        if isinstance(value, list):
            return [clean(inner) for inner in value]
        return value

    return clean(data), sorted(removed)


def add_generated_by(description: dict, features: tuple[str, ...]) -> dict:
    """dataset_description.json with DeFacer appended to GeneratedBy (once, deterministic)."""
    out = dict(description)
    entries = [entry for entry in out.get("GeneratedBy", []) or []
               if not (isinstance(entry, dict) and entry.get("Name") == GENERATED_BY_NAME)]
    entries.append({
        "Name": GENERATED_BY_NAME,
        "Version": __version__,
        "Description": (f"facial features removed ({', '.join(features)}) from anatomical, PET and CT images; "
                        "PHI fields removed from the JSON sidecars and acq_time dates from the scans and sessions "
                        "tables; other files copied"),
    })
    out["GeneratedBy"] = entries
    return out


def dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
