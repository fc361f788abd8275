"""De-identify one pydicom Dataset in place, to PS3.15 Annex E, and prove it with a leak check.

One walk applies the compiled action table everywhere: nested sequences at any depth, the
file meta, private blocks (removed, or only the safe-private list kept), overlay (60xx) and
curve (50xx) repeating groups. Before the walk the input's PHI strings are collected so
that cleaned text can lose them and the leak check can look for them afterwards.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.dataset import Dataset

from DeFacerLib.dicom import actions
from DeFacerLib.dicom.leakcheck import IDENTIFYING_TAGS, Leak, PhiSet, collect_strings, find_leaks
from DeFacerLib.dicom.markers import set_markers
from DeFacerLib.dicom.profile import (
    CLEAN, DUMMY, KEEP, REMOVE, UID, UID_SEQUENCE, ZERO, ActionTable, ProfileOptions, compile_actions,
    load_profile, load_safe_private,
)
from DeFacerLib.dicom.uids import date_offset_days, keyed_uid, pseudonym

PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
SOP_INSTANCE_UID, SERIES_INSTANCE_UID = 0x00080018, 0x0020000E
# File meta attributes that name the sending/receiving systems: removed (not in Table E.1-1).
META_REMOVED = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
NEW_SERIES_NAMESPACE = "defaced"


@dataclass
class ScrubResult:
    """What happened to one dataset: actions taken, PHI found, leaks left, mappings made."""

    actions: list[tuple[str, int, str]] = field(default_factory=list)  # (parent path, tag, action)
    kept: int = 0
    phi: PhiSet = field(default_factory=PhiSet)
    leaks: list[Leak] = field(default_factory=list)
    uid_map: dict[str, str] = field(default_factory=dict)
    patient: tuple[str, str] | None = None  # (old id, pseudonym)
    date_offset_days: int | None = None
    pixels_cleaned: dict | None = None

    def action_rows(self) -> list[list[str]]:
        """[path, keyword, action] per attribute acted on (for the JSON-lines log)."""
        return [[f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X})", keyword_for_tag(tag) or "", action]
                for prefix, tag, action in self.actions]


@dataclass
class Scrubber:
    """Options + key, compiled once; ``scrub(ds)`` for every dataset of a run."""

    options: ProfileOptions
    key: bytes
    version: str = ""
    table: ActionTable = None
    # UIDs that become part of the NEW (defaced) series wherever they appear, references
    # included, so that instances of a defaced series keep pointing at each other.
    renamed_uids: frozenset = frozenset()

    def __post_init__(self):
        self.table = compile_actions(self.options)
        self.edition = load_profile()["edition"]
        self.safe_private = load_safe_private() if self.table.private_action == CLEAN else {}
        if not self.version:
            from DeFacerLib import __version__

            self.version = __version__

    def scrub(self, ds: Dataset, *, defaced: bool = False, where: str = "") -> ScrubResult:
        """De-identify ``ds`` in place. With ``defaced`` the file starts a new series (new SOP
        Instance and Series UIDs in their own keyed namespace) and 113102 is recorded."""
        result = ScrubResult()
        patient = _patient_key(ds)
        result.date_offset_days = date_offset_days(self.key, patient)
        alias = pseudonym(self.key, patient, self.options.pseudonym_format)
        result.patient = (str(ds.get("PatientID", "") or patient), alias)
        burned_in = str(ds.get("BurnedInAnnotation", "") or "") or None
        walk = _Walk(self, result, alias)
        walk.items(ds, "", clean=False)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            walk.items(meta, "meta.", clean=False)
            for tag in META_REMOVED:
                if tag in meta:
                    del meta[tag]
        walk.finish()
        if defaced:
            for tag in (SOP_INSTANCE_UID, SERIES_INSTANCE_UID):
                old = str(_original_uid(tag, ds, result))
                if old:
                    new = keyed_uid(self.key, old, NEW_SERIES_NAMESPACE)
                    ds[tag].value = new
                    result.uid_map[f"{old} (defaced)"] = new
        if meta is not None and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if self.options.clean_pixel_data:
            from DeFacerLib.dicom.pixels_ocr import clean_burned_in_text

            result.pixels_cleaned = clean_burned_in_text(ds, where or "dataset")
        options = self.options.with_(clean_recognizable_visual_features=True) if defaced else self.options
        set_markers(ds, options, edition=self.edition, version=self.version,
                    pixels_cleaned=result.pixels_cleaned is not None, burned_in_before=burned_in)
        result.leaks = find_leaks(ds, result.phi, skip_uids=self.options.retain_uids)
        return result

    # -- helpers ---------------------------------------------------------------------------
    def action_of(self, tag: int) -> str:
        group = tag >> 16
        if group & 0xFF00 == 0x5000 and not group & 1:
            return self.table.curve_action
        if group & 0xFF00 == 0x6000 and not group & 1:
            entry = self.table.overlay.get(tag & 0xFFFF)
            if entry is None:  # overlay rows, columns, origin...: go with the overlay data
                data_action = self.table.overlay.get(0x3000, (REMOVE, None))[0]
                return REMOVE if data_action == REMOVE else KEEP
            return entry[0]
        entry = self.table.exact.get(tag)
        return entry[0] if entry is not None else KEEP


class _Walk:
    """One pass applying the actions; collects the PHI it removes and records what was done.

    Cleaning (C) of text needs every PHI string of the file, so those elements are queued
    and cleaned after the pass. Raw elements are only converted by pydicom when their value
    is needed: the scrub should cost little more than reading and writing the file.
    """

    def __init__(self, scrubber: Scrubber, result: ScrubResult, alias: str):
        self.s = scrubber
        self.key = scrubber.key
        self.r = result
        self.alias = alias
        self.pending: list[tuple[DataElement, str]] = []  # (element, path) cleaned after the pass

    @property
    def phi_pattern(self) -> re.Pattern | None:
        """Names, IDs and dates of the input, for cleaning text (compiled on first use)."""
        return self.r.phi.clean_pattern()

    def record(self, prefix: str, number: int, action: str) -> None:
        self.r.actions.append((prefix, number, action))

    def finish(self) -> None:
        for elem, prefix in self.pending:
            self._clean(elem)
            self.record(prefix, int(elem.tag), CLEAN)
        self.pending.clear()

    def collect(self, ds: Dataset, tag, number: int, raw, vr: str | None, action: str, encoding: str | None) -> None:
        vr = vr or _dictionary_vr(number)
        if vr in ("PN", "DA", "DT", "UI") or number in IDENTIFYING_TAGS:
            where = keyword_for_tag(number) or f"({number >> 16:04X},{number & 0xFFFF:04X})"
            collect_strings(self.r.phi, vr, _strings(ds, tag, raw, encoding), action, where)

    def collect_all(self, ds: Dataset) -> None:
        """Everything inside a removed or emptied sequence is PHI to look for."""
        encoding = _single_byte_encoding(ds)
        for tag, raw in list(ds._dict.items()):
            number = int(tag)
            if number >> 16 & 1:
                continue
            if _maybe_sequence(raw, number):
                elem = ds[tag]
                if elem.VR == "SQ":
                    for item in elem.value or []:
                        self.collect_all(item)
                    continue
            self.collect(ds, tag, number, raw, raw.VR, self.s.action_of(number), encoding)

    def items(self, ds: Dataset, prefix: str, clean: bool) -> None:
        encoding = _single_byte_encoding(ds)
        exact = self.s.table.exact
        action_of = self.s.action_of
        elements = ds._dict  # pydicom's tag -> element map: read without converting values
        for tag, raw in list(elements.items()):
            number = int(tag)
            if number >> 16 & 1:
                if self.s.safe_private and self._private(ds, tag, number):
                    self.record(prefix, number, KEEP)
                else:
                    del ds[tag]
                    self.record(prefix, number, REMOVE)
                continue
            action = action_of(number)
            if action == KEEP:
                if _maybe_sequence(raw, number):
                    elem = ds[tag]
                    if elem.VR == "SQ":
                        for index, item in enumerate(elem.value or []):
                            self.items(item, f"{prefix}{_tag_text(number)}[{index}].", clean)
                        continue
                if clean:
                    self.pending.append((ds[tag], prefix))
                elif number in exact:  # a table row an option retains
                    for value in _strings(ds, tag, raw, encoding) if not _binary(raw) else []:
                        self.r.phi.allow(value)
                    self.record(prefix, number, KEEP)
                else:
                    self.r.kept += 1
                continue
            is_raw = isinstance(raw, RawDataElement)
            vr = (raw.VR or _dictionary_vr(number)) if is_raw else raw.VR
            if vr == "UN" or vr == "SQ" or (is_raw and action == CLEAN and vr not in ("DA", "DT", "PN")):
                raw = ds[tag]
                vr = raw.VR
                is_raw = False
            if vr == "SQ":
                if action in (UID_SEQUENCE, CLEAN):
                    for index, item in enumerate(raw.value or []):
                        self.items(item, f"{prefix}{_tag_text(number)}[{index}].", clean=clean or action == CLEAN)
                else:
                    for item in raw.value or []:
                        self.collect_all(item)
                    if action == REMOVE:
                        del ds[tag]
                    else:
                        raw.value = Sequence([])
                self.record(prefix, number, action)
                continue
            if action != CLEAN or vr in ("DA", "DT", "PN"):
                self.collect(ds, tag, number, raw, vr, action, encoding)
            if action == REMOVE:
                del ds[tag]
            elif number in (PATIENT_NAME, PATIENT_ID) and action in (ZERO, DUMMY, CLEAN):
                self._put(ds, tag, raw, vr, [self.alias])
                action = DUMMY
            elif action == ZERO:
                self._put(ds, tag, raw, vr, [])
            elif vr == "UI" and action in (DUMMY, UID, UID_SEQUENCE, CLEAN):
                values = _strings(ds, tag, raw, encoding)
                renamed = self.s.renamed_uids
                self._put(ds, tag, raw, vr, [
                    actions.map_uid(self.key, v, self.r.uid_map,
                                    NEW_SERIES_NAMESPACE if v.strip().strip("\x00") in renamed else "uid")
                    for v in values
                ])
                action = UID
            elif action == CLEAN:
                self.pending.append((ds[tag], prefix))
                continue
            elif is_raw and vr in actions.DUMMY_BY_VR:  # D: a dummy value of the VR
                self._put(ds, tag, raw, vr, [actions.DUMMY_BY_VR[vr]])
            elif is_raw and vr in actions.FREE_TEXT_VRS:
                self._put(ds, tag, raw, vr, [actions.DUMMY_TEXT])
            else:
                new = DataElement(tag, vr, None)
                actions.dummy(new, self.key)
                ds[tag] = new
            self.record(prefix, number, action)

    @staticmethod
    def _put(ds: Dataset, tag, raw, vr: str, values: list[str]) -> None:
        """Replace a value; a raw element stays raw (encoded here, written as-is by pydicom)."""
        if isinstance(raw, RawDataElement) and vr not in actions.BYTES_VRS and vr not in actions.NUMBER_VRS:
            data = "\\".join(values).encode("ascii")
            if len(data) % 2:
                data += b"\x00" if vr == "UI" else b" "
            ds._dict[tag] = raw._replace(length=len(data), value=data)
        elif not values:
            ds[tag] = DataElement(tag, vr, b"" if vr in actions.BYTES_VRS else None)
        else:
            ds[tag] = DataElement(tag, vr, values[0] if len(values) == 1 else values)

    def _clean(self, elem) -> None:
        vr = elem.VR
        if vr in ("DA", "DT"):
            if self.s.options.retain_long_full_dates:
                return
            if not (self.s.options.retain_long_modified_dates and actions.shift_dates(elem, self.r.date_offset_days)):
                actions.dummy(elem, self.key)
        elif vr == "TM":
            if not (self.s.options.retain_long_full_dates or self.s.options.retain_long_modified_dates):
                actions.dummy(elem, self.key)
        elif vr == "UI":
            actions.replace_uids(elem, self.key, mapping=self.r.uid_map)
        else:
            actions.clean_text(elem, self.phi_pattern, self.key)

    def _private(self, ds: Dataset, tag, number: int) -> bool:
        """Keep a private element only under Retain Safe Private and when it is on the list."""
        if not self.s.safe_private:
            return False
        group, element = number >> 16, number & 0xFFFF
        if 0x0010 <= element <= 0x00FF:  # a private creator: kept when its block keeps something
            creator = str(ds[tag].value or "").strip()
            return any(c == creator and g == group for c, g, _ in self.s.safe_private)
        block = element >> 8
        creator_tag = (group << 16) | block
        if creator_tag not in ds:
            return False
        creator = str(ds[creator_tag].value or "").strip()
        return (creator, group, element & 0xFF) in self.s.safe_private


def _maybe_sequence(raw, number: int) -> bool:
    if not isinstance(raw, RawDataElement):
        return raw.VR == "SQ"
    if raw.VR == "SQ":
        return True
    if raw.VR in (None, "UN"):
        try:
            return dictionary_VR(number) == "SQ"
        except KeyError:
            return False
    return False


def _binary(raw) -> bool:
    return raw.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN", "SQ", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "AT")


def _dictionary_vr(number: int) -> str:
    try:
        return dictionary_VR(number)
    except KeyError:
        return "UN"


def _tag_text(number: int) -> str:
    return f"({number >> 16:04X},{number & 0xFFFF:04X})"


def _single_byte_encoding(ds: Dataset) -> str | None:
    """The Python codec for raw string bytes, when one codec decodes them all (else None)."""
    raw = ds.get_item(0x00080005) if 0x00080005 in ds else None
    if raw is None:
        return "latin-1"
    value = raw.value if not isinstance(raw, RawDataElement) else (raw.value or b"").decode("ascii", "replace")
    text = "\\".join(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else str(value or "")
    text = text.strip().strip("\x00").strip()
    if text in ("", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6"):
        return "latin-1"
    if text == "ISO_IR 192":
        return "utf-8"
    return None


def _strings(ds: Dataset, tag, raw, encoding: str | None) -> list[str]:
    """An element's values as strings, from the raw bytes when the encoding allows."""
    if isinstance(raw, RawDataElement) and encoding is not None:
        data = raw.value or b""
        if isinstance(data, bytes):
            return [v.strip(" \x00") for v in data.decode(encoding, "replace").split("\\")]
    value = ds[tag].value
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [v.decode("latin-1", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _patient_key(ds: Dataset) -> str:
    """What identifies the patient for pseudonyms and date offsets: ID, else name, else study."""
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return value
    return "unknown-patient"


def _original_uid(tag: int, ds: Dataset, result: ScrubResult) -> str:
    """The input UID of ``tag`` (before U replaced it), from the mapping just made."""
    current = str(ds[tag].value) if tag in ds else ""
    for old, new in result.uid_map.items():
        if new == current:
            return old
    return current
