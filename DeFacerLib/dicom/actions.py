"""What each action does to one data element, by VR: dummy values, zeroing, cleaning text.

``D`` puts a value of the right VR that says nothing (a date of 19000101, "ANONYMIZED"),
``Z`` leaves the attribute present with zero length, ``C`` cleans: dates shift by the
patient's keyed offset, text loses every PHI string of the input and anything that looks
like a date, AE titles and person names become keyed tokens.
"""
from __future__ import annotations

import re

from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from DeFacerLib.dicom import dates
from DeFacerLib.dicom.uids import is_standard_uid, keyed_uid, short_token

TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "CS", "UR", "AE", "AS", "PN", "DA", "DT", "TM", "DS", "IS", "UI"}
FREE_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC"}
BYTES_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW"}
NUMBER_VRS = {"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT", "US or SS", "US or OW", "US or SS or OW"}
DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR = {
    "AE": "DEFACER",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "PN": "ANONYMIZED",
    "UR": "https://anonymized.invalid",
}
MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240, "UC": 0, "UT": 0}
DATE_LIKE = re.compile(
    r"(?<!\d)(?:(?:19|20)\d{2}[-/.]?(?:0[1-9]|1[0-2])[-/.]?(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)?\d{2}"
    r"|(?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:19|20)?\d{2})(?!\d)"
)


def element_vr(elem: DataElement) -> str:
    return str(elem.VR)


def zero(elem: DataElement) -> None:
    elem.value = Sequence([]) if elem.VR == "SQ" else (b"" if elem.VR in BYTES_VRS else None)


def dummy(elem: DataElement, key: bytes) -> None:
    vr = elem.VR
    if vr == "SQ":
        elem.value = Sequence([])
    elif vr == "UI":
        replace_uids(elem, key)
    elif vr in DUMMY_BY_VR:
        elem.value = DUMMY_BY_VR[vr]
    elif vr in FREE_TEXT_VRS:
        elem.value = DUMMY_TEXT
    elif vr in NUMBER_VRS:
        elem.value = 0
    elif vr in BYTES_VRS:
        elem.value = b"\x00\x00"
    else:
        elem.value = None


def _values(elem: DataElement) -> list:
    value = elem.value
    if value is None:
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def _set_values(elem: DataElement, values: list) -> None:
    elem.value = values[0] if len(values) == 1 else values


def replace_uids(elem: DataElement, key: bytes, namespace: str = "uid", mapping: dict | None = None) -> None:
    """Every UID value becomes its keyed ``2.25.`` UID (empty stays empty, the standard's own stay)."""
    values = _values(elem)
    if not values:
        return
    if isinstance(values[0], bytes):  # a UID read with VR UN
        values = [v.decode("ascii", "replace").strip("\x00 ") for v in values]
    new = []
    for old in values:
        old = str(old).strip()
        if not old or is_standard_uid(old):
            new.append(old)
            continue
        uid = keyed_uid(key, old, namespace)
        if mapping is not None:
            mapping[old] = uid
        new.append(uid)
    _set_values(elem, new)


def map_uid(key: bytes, old: str, mapping: dict | None, namespace: str = "uid") -> str:
    old = old.strip().strip("\x00")
    if not old or is_standard_uid(old):
        return old
    new = keyed_uid(key, old, namespace)
    if mapping is not None:
        mapping[old] = new
    return new


def shift_dates(elem: DataElement, offset_days: int) -> list[str] | None:
    """Shift DA/DT values in place and return them; None when some value could not be parsed
    (the caller dummies it)."""
    shift = dates.shift_da if elem.VR == "DA" else dates.shift_dt
    values = [str(v) for v in _values(elem)]
    shifted = [shift(v, offset_days) for v in values]
    if any(s is None for s in shifted):
        return None
    if shifted:
        _set_values(elem, shifted)
    return shifted


def clean_text_value(text: str, phi_pattern: re.Pattern | None, old_uids: tuple = ()) -> str:
    """Text without the input's PHI strings, its replaced UIDs (``old_uids``, longest first:
    literal digits and dots, no pattern needed) and anything that looks like a date."""
    for uid in old_uids:
        text = text.replace(uid, "")
    if phi_pattern is not None:
        text = phi_pattern.sub("", text)
    return DATE_LIKE.sub("", text).strip()


def clean_text(elem: DataElement, phi_pattern: re.Pattern | None, key: bytes, old_uids=()) -> None:
    """Clean one element in place: text keeps its non-identifying words, others get tokens."""
    vr = elem.VR
    if vr == "AE":
        values = [str(v) for v in _values(elem)]
        _set_values(elem, ["DEFACER" + short_token(key, v, "ae") for v in values] if values else [])
    elif vr == "PN":
        values = [str(v) for v in _values(elem)]
        _set_values(elem, ["ANON^" + short_token(key, v, "person") for v in values if v] or [""])
    elif vr in FREE_TEXT_VRS or vr in ("CS", "UR"):
        old_uids = tuple(sorted(old_uids, key=len, reverse=True))
        values = [clean_text_value(str(v), phi_pattern, old_uids) for v in _values(elem)]
        limit = MAX_LENGTH.get(vr, 0)
        if limit:
            values = [v[:limit] for v in values]
        if values:
            _set_values(elem, values)
    elif vr in BYTES_VRS and isinstance(elem.value, bytes):
        elem.value = bytes(len(elem.value))  # overlay/curve bit planes: blank, same size
