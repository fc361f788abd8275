"""The de-identification markers, rebuilt from what was actually done (PS3.15 E.1.1, PS3.16 CID 7050).

Whatever the input said (a stale PatientIdentityRemoved, an older method sequence) is
replaced: the markers describe this output only.
"""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from DeFacerLib.dicom.profile import ProfileOptions

# (code value, meaning, ProfileOptions field or None for the Basic profile); PS3.16 CID 7050,
# checked against pydicom's DCM concept dictionary.
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile", None),
    ("113101", "Clean Pixel Data Option", "clean_pixel_data"),
    ("113102", "Clean Recognizable Visual Features Option", "clean_recognizable_visual_features"),
    ("113103", "Clean Graphics Option", "clean_graphics"),
    ("113104", "Clean Structured Content Option", "clean_structured_content"),
    ("113105", "Clean Descriptors Option", "clean_descriptors"),
    ("113106", "Retain Longitudinal Temporal Information Full Dates Option", "retain_long_full_dates"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option", "retain_long_modified_dates"),
    ("113108", "Retain Patient Characteristics Option", "retain_patient_characteristics"),
    ("113109", "Retain Device Identity Option", "retain_device_identity"),
    ("113110", "Retain UIDs Option", "retain_uids"),
    ("113111", "Retain Safe Private Option", "retain_safe_private"),
    ("113112", "Retain Institution Identity Option", "retain_institution_identity"),
)
STALE_TAGS = (0x00120062, 0x00120063, 0x00120064, 0x00280303)


def applied_codes(options: ProfileOptions) -> list[tuple[str, str]]:
    return [(code, meaning) for code, meaning, field in METHOD_CODES if field is None or getattr(options, field)]


def method_text(options: ProfileOptions, edition: str, version: str) -> list[str]:
    """DeidentificationMethod (LO, 64 characters per value, one value per thing done)."""
    values = [f"DeFacer {version}", f"DICOM PS3.15 {edition} Basic Profile"]
    values += [meaning[:64] for code, meaning in applied_codes(options)[1:]]
    return values


def set_markers(ds: Dataset, options: ProfileOptions, *, edition: str, version: str,
                pixels_cleaned: bool, burned_in_before: str | None) -> None:
    """Write PatientIdentityRemoved, the method and its codes, BurnedInAnnotation, dates flag."""
    for tag in STALE_TAGS:
        if tag in ds:
            del ds[tag]
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = method_text(options, edition, version)
    items = []
    for code, meaning in applied_codes(options):
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if pixels_cleaned:
        ds.BurnedInAnnotation = "NO"
    elif burned_in_before:
        ds.BurnedInAnnotation = burned_in_before  # pixels untouched: what the source said still holds
    elif "BurnedInAnnotation" in ds:
        del ds.BurnedInAnnotation
    if options.retain_long_full_dates:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif options.retain_long_modified_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"
