"""BIDS specifics: which JSON sidecar fields are PHI, and the GeneratedBy entry.

dcm2niix and other converters copy DICOM identity fields into the sidecars. The
acquisition parameters (RepetitionTime, EchoTime, FlipAngle, SliceTiming, ...) are what
BIDS users need and are kept; who, where, when and which machine are removed.
"""
from __future__ import annotations

import json

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
                        "PHI fields removed from the JSON sidecars; other files copied"),
    })
    out["GeneratedBy"] = entries
    return out


def dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
