"""The de-identification markers, rebuilt from what was actually done (PS3.15 E.1.1, PS3.16 CID 7050).

Whatever the input said (a stale PatientIdentityRemoved, an older method sequence) is
replaced: the markers describe this output only, but for what the input said of pixels passed on
unchanged (BurnedInAnnotation, and the PIXEL_OPTIONS codes of an input declaring its identity
removed: a header-only scrub of a defaced series still says its face was removed).
"""
from __future__ import annotations

from functools import lru_cache

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_dataset
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
PIXEL_OPTIONS = ("clean_pixel_data", "clean_recognizable_visual_features")  # what was done to the pixels
PIXEL_CODES = {code: field for code, _, field in METHOD_CODES if field in PIXEL_OPTIONS}
STALE_TAGS = (0x00120062, 0x00120063, 0x00120064, 0x00280303)
BURNED_IN_ANNOTATION = 0x00280301


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
    elements = ds._dict  # int keys: Dataset's ``in`` converts every name to a Tag first (~1 us each)
    for tag in STALE_TAGS:
        if tag in elements:
            del ds[tag]
    implicit_vr, little_endian = getattr(ds, "original_encoding", (None, None))
    if implicit_vr is None or little_endian is None:  # built in memory: no encoding to pre-encode for
        _set_constant_markers(ds, options, edition, version)
    else:  # read from a file: the same elements every time, encoded once and copied as raw bytes
        encoded = _encoded_markers(options, edition, version, implicit_vr, little_endian)
        if encoded is None:
            _set_constant_markers(ds, options, edition, version)
        else:
            ds._dict.update(encoded)
    if pixels_cleaned:
        ds.BurnedInAnnotation = "NO"
    elif burned_in_before:
        ds.BurnedInAnnotation = burned_in_before  # pixels untouched: what the source said still holds
    elif BURNED_IN_ANNOTATION in elements:
        del ds[BURNED_IN_ANNOTATION]


def _set_constant_markers(ds: Dataset, options: ProfileOptions, edition: str, version: str) -> None:
    """The markers that depend on the options only (identity removed, method, codes, dates flag)."""
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
    if options.retain_long_full_dates:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif options.retain_long_modified_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"


@lru_cache(maxsize=64)
def _encoded_markers(options: ProfileOptions, edition: str, version: str, implicit_vr: bool,
                     little_endian: bool) -> dict | None:
    """tag -> RawDataElement of the constant markers, encoded by pydicom's own writer and reader
    (immutable tuples, so every dataset can share them); None if one did not come back raw."""
    template = Dataset()
    _set_constant_markers(template, options, edition, version)
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit_vr, little_endian
    write_dataset(fp, template)
    fp.seek(0)
    elements = {}
    for raw in data_element_generator(fp, implicit_vr, little_endian):
        if not isinstance(raw, RawDataElement):
            return None
        elements[raw.tag] = raw._replace(value_tell=0)
    return elements
