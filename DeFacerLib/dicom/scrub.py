"""De-identify one pydicom Dataset in place, to PS3.15 Annex E, and prove it with a leak check.

One walk applies the compiled action table everywhere: nested sequences at any depth, the
file meta, private blocks (removed, or only the safe-private list kept), overlay (60xx) and
curve (50xx) repeating groups. Before the walk the input's PHI strings are collected so
that cleaned text can lose them and the leak check can look for them afterwards.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.datadict import DicomDictionary, dictionary_VR, keyword_for_tag
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence
from pydicom.sequence import Sequence
from pydicom.dataset import Dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from DeFacerLib import __version__
from DeFacerLib.dicom import actions
from DeFacerLib.dicom.leakcheck import IDENTIFYING_TAGS, Leak, PhiSet, collect_strings, find_leaks
from DeFacerLib.dicom.pixels_text_segments import strip_text_segments
from DeFacerLib.dicom.markers import BURNED_IN_ANNOTATION, PIXEL_CODES, set_markers
from DeFacerLib.dicom.profile import (
    CLEAN, DUMMY, KEEP, REMOVE, UID, UID_SEQUENCE, ZERO, ActionTable, ProfileOptions, compile_actions,
    listed_tags, load_profile, load_safe_private,
)
from DeFacerLib.dicom.uids import date_offset_days, keyed_uid, pseudonym

PATIENT_NAME, PATIENT_ID, ISSUER_OF_PATIENT_ID = 0x00100010, 0x00100020, 0x00100021
STUDY_INSTANCE_UID = 0x0020000D
SOP_CLASS_UID, SOP_INSTANCE_UID, SERIES_INSTANCE_UID = 0x00080016, 0x00080018, 0x0020000E
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
# Pixel Data, Float and Double Float Pixel Data, Spectroscopy Data: what an image's Rows and
# Columns describe, and what Clean Pixel Data and Burned In Annotation speak of
IMAGE_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009, 0x56000020)
# The file meta keeps only what reading the file needs (PS3.10 7.1: group length, version, SOP
# class and instance, transfer syntax, implementation). The rest names the systems that sent,
# received and stored the file (AE titles, presentation addresses such as dicom://ct1.hospital.org,
# a real-time video source, private information); none has a row in Table E.1-1. A list of what
# to remove missed the presentation addresses.
META_KEPT = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})
# The file meta names the implementation that wrote the file (PS3.10 7.1): DeFacer, through
# pydicom, not the scanner or PACS the input came from (a site's own version name, HOMERPACS_1,
# was published, and the file claimed to be the vendor's).
IMPLEMENTATION_CLASS_UID = PYDICOM_IMPLEMENTATION_UID
IMPLEMENTATION_VERSION_NAME = f"DEFACER_{__version__}"[:16]  # SH: 16 characters at most
NEW_SERIES_NAMESPACE = "defaced"
DEFACED_ROW_SUFFIX = " (defaced)"
# Overlay Description and Overlay Label: free text the table has no row for; cleaned like
# Overlay Comments when Clean Graphics keeps the overlay (kept as-is they may name the patient).
OVERLAY_TEXT_ELEMENTS = (0x0022, 0x1500)
PREAMBLE = bytes(128)  # the file preamble written: zeros (PS3.10 7.1), never the input's
# UI attributes that name an instance, a frame of reference or an event, which Table E.1-1
# (2024b) has no row for: kept as they are they carry the original UID (and the dates and serial
# numbers vendors put in it) and point at the old UID while the instance they name gets a new one.
# SOP Class, Transfer Syntax, coding scheme and context UIDs are the standard's own and stay.
UNLISTED_INSTANCE_UIDS = frozenset(
    tag for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items()
    if vr == "UI" and tag >> 16 not in (0x0000, 0x0002) and (
        "InstanceUID" in keyword or keyword.endswith("FrameOfReferenceUID") or keyword in (
            "RadiopharmaceuticalAdministrationEventUID", "FindingsGroupUIDTrial", "ReferencedFindingsGroupUIDTrial",
            "AssertionUID", "ReferencedAssertionUID", "ModelGroupUID", "ReferencedFiducialUID",
            "VolumetricPresentationInputSetUID", "TableTopPositionAlignmentUID"))
)
# The leak check's own net, independent of the compiled actions: a person name, a date or an
# identifier (leakcheck.IDENTIFYING_TAGS that Table E.1-1 lists) that no rule acted on is PHI to
# look for. Every such dictionary attribute has a rule (profile.unlisted_rows), so this only
# fires when a rule is missing, or for an attribute newer than pydicom's dictionary.
NET_VRS = frozenset({"PN", "DA", "DT"})
NET_TAGS = IDENTIFYING_TAGS & listed_tags()
PRIVATE = "private"  # tag-info action of odd groups: the private rules decide, not the table
CACHE_MAX = 4096  # patients remembered per run (bounded memory on huge trees)
# Sequences remembered per run: small ones only (references, code items repeat from file to
# file; a per-frame functional group sequence is large and unique), in a bounded total.
SEQUENCE_CACHE_MAX_BYTES = 64 << 10
SEQUENCE_CACHE_TOTAL_BYTES = 32 << 20
# Elements remembered per run (value bytes up to 1 KiB each): <= 16 MiB.
ELEMENT_MEMO_MAX = 16384
ELEMENT_MEMO_MAX_BYTES = 1024
# Values read by ``peek_value`` (small, a handful per file): bounded like the memos above.
_PEEKED: dict = {}
PEEK_MEMO_MAX = 4096
# Action-log rows by the actions that made them (a few hundred rows each).
_ACTION_ROWS: dict = {}
ACTION_ROWS_MEMO_MAX = 256


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
    pixels_not_cleaned: str = ""  # why Clean Pixel Data left the pixels (pixels_ocr.ocr_skip_reason)
    faces_filled: dict | None = None  # Clean Recognizable Visual Features (pixels_faces.fill_faces)
    faces_not_checked: str = ""  # why it left the pixels (pixels_faces.faces_skip_reason)
    text_segments_removed: int = 0  # JPEG/JPEG 2000 comment and application segments (pixels_text_segments)

    def action_rows(self) -> list[list[str]]:
        """[path, keyword, action] per attribute acted on (for the JSON-lines log). Read-only:
        every file of a series has the same actions, so one list serves them all."""
        key = tuple(self.actions)
        rows = _ACTION_ROWS.get(key)
        if rows is None:
            rows = [list(_action_row(prefix, tag, action)) for prefix, tag, action in self.actions]
            if len(_ACTION_ROWS) >= ACTION_ROWS_MEMO_MAX:
                _ACTION_ROWS.clear()
            _ACTION_ROWS[key] = rows
        return rows


@lru_cache(maxsize=65536)
def _action_row(prefix: str, tag: int, action: str) -> tuple[str, str, str]:
    """One log row; the same few hundred rows recur in every file of a series."""
    return f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X})", keyword_for_tag(tag) or "", action


@lru_cache(maxsize=65536)
def _where(number: int) -> str:
    """The attribute a PHI string came from, for leak reports."""
    return keyword_for_tag(number) or f"({number >> 16:04X},{number & 0xFFFF:04X})"


@dataclass
class _Effects:
    """What scrubbing one raw sequence or element did to the result, to replay when the same
    bytes recur in this run."""

    actions: list
    kept: int
    sources: dict
    uids: dict
    allowed: set
    uid_map: dict

    def replay(self, result: "ScrubResult") -> None:
        """Empty parts are skipped: a series replays dozens of effects per file, most of them small."""
        if self.actions:
            result.actions += self.actions
        result.kept += self.kept
        phi = result.phi
        if self.sources:
            for value, where in self.sources.items():
                phi.sources.setdefault(value, where)
        if self.uids:
            for value, where in self.uids.items():
                phi.uids.setdefault(value, where)
        if self.allowed:
            phi.allowed |= self.allowed
        if self.uid_map:
            result.uid_map.update(self.uid_map)


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
        # Per-run caches, all exact: the decision for a tag (from the table), the patient's
        # keyed alias and date offset, a scrubbed raw sequence and a scrubbed raw element by
        # their input bytes.
        self.tag_info: dict[int, tuple[str, bool, str | None]] = {}
        self.patients: dict[str, tuple[int, str]] = {}
        self.sequences: dict[tuple, tuple[RawDataElement, _Effects]] = {}
        self.sequence_bytes = 0
        self.elements: dict[tuple, tuple[bytes | None, str, _Effects | None]] = {}
        self.edition = load_profile()["edition"]
        self.safe_private = load_safe_private() if self.table.private_action == CLEAN else {}
        if not self.version:
            from DeFacerLib import __version__

            self.version = __version__

    def scrub(self, ds: Dataset, *, defaced: bool = False, where: str = "",
              known_phi: PhiSet | None = None) -> ScrubResult:
        """De-identify ``ds`` in place. With ``defaced`` the file starts a new series (new SOP
        Instance and Series UIDs in their own keyed namespace) and 113102 is recorded.
        ``known_phi``: PHI of other files that ``ds`` may copy (a DICOMDIR's indexed files), taken
        out of its cleaned text and looked for by its leak check as its own."""
        result = ScrubResult()
        if known_phi is not None:
            result.phi.include(known_phi)
        patient = _patient_key(ds)
        result.date_offset_days, alias = self._patient(patient)
        result.patient = (str(peek_value(ds, PATIENT_ID, "") or patient), alias)
        burned_in = str(peek_value(ds, BURNED_IN_ANNOTATION, "") or "") or None
        options = self.options
        pixel_options = _pixel_options_before(ds)
        if options.clean_pixel_data and not any(tag in ds._dict for tag in IMAGE_DATA_TAGS):
            # a report, a presentation state, a DICOMDIR: no pixels, so no 113101 and no
            # BurnedInAnnotation NO (not part of their IODs) to claim, nor one more "cleaned" file
            options = options.with_(clean_pixel_data=False)
        if options.clean_pixel_data:  # judged on the header as it came
            from DeFacerLib.dicom.pixels_ocr import ocr_skip_reason

            result.pixels_not_cleaned = ocr_skip_reason(peek_value(ds, SOP_CLASS_UID, ""), peek_value(ds, IMAGE_TYPE, ""),
                                                        burned_in, "clean_recognizable_visual_features" in pixel_options)
            if result.pixels_not_cleaned:
                options = options.with_(clean_pixel_data=False)  # 113101 is not claimed for these pixels
        if options.clean_recognizable_visual_features and not defaced:  # a defaced series' faces are gone already
            from DeFacerLib.dicom.pixels_faces import faces_skip_reason

            if not any(tag in ds._dict for tag in IMAGE_DATA_TAGS):
                options = options.with_(clean_recognizable_visual_features=False)  # no pixels: nothing to claim
            else:
                result.faces_not_checked = faces_skip_reason(peek_value(ds, SOP_CLASS_UID, ""))
                if result.faces_not_checked:
                    options = options.with_(clean_recognizable_visual_features=False)  # 113102 not claimed
        walk = _Walk(self, result, alias)
        walk.items(ds, "", clean=False)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            walk.items(meta, "meta.", clean=False)
            for tag in [tag for tag in meta._dict if tag not in META_KEPT]:
                del meta[tag]
            meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
            meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        walk.finish()
        _match_document_length(ds)
        if defaced:
            for tag in (SOP_INSTANCE_UID, SERIES_INSTANCE_UID):
                old = str(_original_uid(tag, ds, result)).removesuffix(DEFACED_ROW_SUFFIX)
                if old:
                    ds[tag].value = defaced_uid(self.key, old, result.uid_map)
            mark_derived(ds)
        if meta is not None and SOP_INSTANCE_UID in ds._dict:
            _copy_sop_instance_uid(ds, meta)
        if any(getattr(ds, "preamble", None) or b""):  # free bytes before "DICM": anything, a name too
            ds.preamble = PREAMBLE
        result.text_segments_removed = strip_text_segments(ds)
        if options.clean_pixel_data:
            from DeFacerLib.dicom.pixels_ocr import clean_burned_in_text

            result.pixels_cleaned = clean_burned_in_text(ds, where or "dataset")
        if options.clean_recognizable_visual_features and not defaced:
            from DeFacerLib.dicom.pixels_faces import fill_faces

            result.faces_filled = fill_faces(ds, where or "dataset")
        if defaced:
            pixel_options.add("clean_recognizable_visual_features")
        options = options.with_(**dict.fromkeys(pixel_options, True)) if pixel_options else options
        set_markers(ds, options, edition=self.edition, version=self.version,
                    pixels_cleaned=result.pixels_cleaned is not None, burned_in_before=burned_in)
        result.leaks = find_leaks(ds, result.phi, skip_uids=self.options.retain_uids)
        return result

    # -- helpers ---------------------------------------------------------------------------
    def _patient(self, patient: str) -> tuple[int, str]:
        """(date offset in days, pseudonym) of a patient: two HMACs, once per patient per run."""
        found = self.patients.get(patient)
        if found is None:
            if len(self.patients) >= CACHE_MAX:
                self.patients.clear()
            found = (date_offset_days(self.key, patient), pseudonym(self.key, patient, self.options.pseudonym_format))
            self.patients[patient] = found
        return found

    def remember_sequence(self, key: tuple, encoded: RawDataElement, effects: _Effects) -> None:
        size = len(key[2]) + len(encoded.value)
        if self.sequence_bytes + size > SEQUENCE_CACHE_TOTAL_BYTES:
            self.sequences.clear()
            self.sequence_bytes = 0
        self.sequences[key] = (encoded, effects)
        self.sequence_bytes += size

    def remember_element(self, key: tuple, outcome: tuple) -> None:
        if len(self.elements) >= ELEMENT_MEMO_MAX:
            self.elements.clear()
        self.elements[key] = outcome

    def info_of(self, number: int) -> tuple[str, bool, str | None]:
        """(action, is a table row, dictionary VR) of a tag, decided by the table once per run."""
        info = self.tag_info.get(number)
        if info is None:
            action = PRIVATE if number >> 16 & 1 else self.action_of(number)
            try:
                dict_vr = dictionary_VR(number)
            except KeyError:
                dict_vr = None
            info = (action, number in self.table.exact, dict_vr)
            self.tag_info[number] = info
        return info

    def action_of(self, tag: int) -> str:
        group = tag >> 16
        if group & 0xFF00 == 0x5000 and not group & 1:
            return self.table.curve_action
        if group & 0xFF00 == 0x6000 and not group & 1:
            entry = self.table.overlay.get(tag & 0xFFFF)
            if entry is None:  # overlay rows, columns, origin...: go with the overlay data
                data_action = self.table.overlay.get(0x3000, (REMOVE, None))[0]
                if data_action == REMOVE:
                    return REMOVE
                return CLEAN if tag & 0xFFFF in OVERLAY_TEXT_ELEMENTS else KEEP
            return entry[0]
        entry = self.table.exact.get(tag)
        if entry is None and not self.options.retain_uids and tag in UNLISTED_INSTANCE_UIDS:
            return UID  # an instance's own UID the table has no row for: replaced like its listed kin
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
        # a public attribute is what the dictionary says it is: a Patient's Name written as LO
        # still names the patient, and its parts are looked for like a PN's
        dictionary_vr = _dictionary_vr(number)
        vr = dictionary_vr if (not number >> 16 & 1 and dictionary_vr in NET_VRS) or not vr else vr
        if vr in ("PN", "DA", "DT", "UI") or number in IDENTIFYING_TAGS:
            collect_strings(self.r.phi, vr, _strings(ds, tag, raw, encoding), action, _where(number))

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

    def decides_every_attribute(self, item: Dataset) -> bool:
        """Whether the table has a row (or an option) for every attribute of a sequence item, and
        of the items of its sequences. D on a sequence asks for a non-empty value: such a
        sequence keeps its items, each attribute scrubbed by its own row (a VERIFIED report's
        Verifying Observer Sequence, Type 1, keeps its item with a dummy name, organisation and
        date-time); any other is emptied, since what it holds under a kept attribute (a
        person's ID as a code value) is not known to be harmless."""
        for tag, raw in item._dict.items():
            number = int(tag)
            action, listed, _ = self.s.info_of(number)
            if action != KEEP:
                continue
            if _maybe_sequence(raw, number) and item[tag].VR == "SQ":  # kept sequences are scrubbed item by item
                if not all(self.decides_every_attribute(inner) for inner in item[tag].value or []):
                    return False
            elif not listed:
                return False
        return True

    def sequence(self, ds: Dataset, tag, number: int, raw, prefix: str, clean: bool) -> None:
        """Scrub every item of a sequence. A raw sequence whose bytes this run has already
        scrubbed is not parsed again: its scrubbed bytes and the effects on the result are
        replayed (they depend only on those bytes, the key, the options and the alias). A
        scrubbed raw sequence goes back raw, so the writer copies it instead of re-encoding."""
        key = None
        if (isinstance(raw, RawDataElement) and raw.VR in ("SQ", None) and not clean and isinstance(raw.value, bytes)
                and len(raw.value) <= SEQUENCE_CACHE_MAX_BYTES):
            charset = ds.original_character_set or ds._character_set
            key = (number, prefix, raw.value, raw.VR, raw.is_implicit_VR, raw.is_little_endian,
                   charset if isinstance(charset, str) else tuple(charset), self.alias)
            found = self.s.sequences.get(key)
            if found is not None:
                ds._dict[tag] = found[0]
                found[1].replay(self.r)
                return
        elem = ds[tag]
        outer, pending = self.r, len(self.pending)
        if key is not None:
            self.r = ScrubResult(phi=PhiSet())
        try:
            for index, item in enumerate(elem.value or []):
                self.items(item, f"{prefix}{_tag_text(number)}[{index}].", clean)
        finally:
            inner, self.r = self.r, outer
        if key is None:
            return
        effects = _Effects(actions=inner.actions, kept=inner.kept, sources=inner.phi.sources,
                           uids=inner.phi.uids, allowed=inner.phi.allowed, uid_map=inner.uid_map)
        effects.replay(outer)
        if len(self.pending) != pending:  # text queued for cleaning with this file's PHI: keep it parsed
            return
        encoded = _encode_sequence(ds, elem, raw)
        ds._dict[tag] = encoded
        self.s.remember_sequence(key, encoded, effects)

    def items(self, ds: Dataset, prefix: str, clean: bool) -> None:
        """Scrub one dataset or item. An item naming a patient of its own (a DICOMDIR's PATIENT
        records) gets that patient's pseudonym, the one its image files get, not the file's."""
        if not prefix or (PATIENT_ID not in ds._dict and PATIENT_NAME not in ds._dict):
            self._items(ds, prefix, clean)
            return
        outer, self.alias = self.alias, self.s._patient(_patient_key(ds))[1]
        try:
            self._items(ds, prefix, clean)
        finally:
            self.alias = outer

    def _items(self, ds: Dataset, prefix: str, clean: bool) -> None:
        encoding = _single_byte_encoding(ds)
        info_of = self.s.info_of
        tag_info = self.s.tag_info
        remembered = self.s.elements
        elements = ds._dict  # pydicom's tag -> element map: read without converting values
        kept = 0  # added to the result at the end (a sequence below swaps self.r, then restores it)
        for tag, raw in list(elements.items()):
            number = int(tag)  # an int key: BaseTag's == is Python code, slow in dict lookups
            info = tag_info.get(number) or info_of(number)
            action = info[0]
            if action == PRIVATE:
                if self.s.safe_private and self._private(ds, tag, number):
                    self.record(prefix, number, KEEP)
                else:
                    del ds[tag]
                    self.record(prefix, number, REMOVE)
                continue
            is_raw = isinstance(raw, RawDataElement)
            vr = raw.VR
            if action == KEEP:
                if vr == "SQ" or (is_raw and vr in (None, "UN") and info[2] == "SQ"):
                    elem = ds[tag]
                    if elem.VR == "SQ":
                        self.sequence(ds, tag, number, raw, prefix, clean)
                        continue
                if clean:
                    self.pending.append((ds[tag], prefix))
                elif info[1]:  # a table row an option retains
                    # a kept UID is never searched (find_leaks' skip_uids), so it need not excuse
                    # the dates and serial numbers vendors write into UIDs anywhere else
                    if not _binary(raw) and (vr or info[2]) != "UI":
                        for value in _strings(ds, tag, raw, encoding):
                            self.r.phi.allow(value)
                    self.record(prefix, number, KEEP)
                else:
                    kept += 1
                    if (vr or info[2]) in NET_VRS or number in NET_TAGS:
                        # no rule kept a name, a date or an identifier on purpose: look for it
                        # in the output, so that a rule missing from the table fails the run
                        self.collect(ds, tag, number, raw, vr or info[2], KEEP, encoding)
                continue
            if is_raw:
                vr = vr or (info[2] or "UN")
                # Seen before in this run: the key ``remembered_element`` stores under, which only
                # ever holds raw, small, non-sequence elements under X, Z, D or U, so a hit is
                # exactly the element that path would replay (checked here, before its conditions).
                found = remembered.get((number, action, raw.value, vr, encoding, self.alias))
                if found is not None:
                    self.replay_element(ds, tag, raw, found)
                    self.r.actions.append((prefix, number, found[1]))
                    continue
            if vr == "SQ" and action in (UID_SEQUENCE, CLEAN):  # before converting: maybe seen already
                self.sequence(ds, tag, number, raw, prefix, clean=clean or action == CLEAN)
                self.record(prefix, number, action)
                continue
            if vr == "UN" or vr == "SQ" or (is_raw and action == CLEAN and vr not in ("DA", "DT", "PN")):
                before = raw
                raw = ds[tag]
                vr = raw.VR
                is_raw = False
            if vr == "SQ":
                if action in (UID_SEQUENCE, CLEAN) or (action == DUMMY and raw.value and all(
                        self.decides_every_attribute(item) for item in raw.value)):
                    self.sequence(ds, tag, number, before, prefix, clean=clean or action == CLEAN)
                else:
                    for item in raw.value or []:
                        self.collect_all(item)
                    if action == REMOVE:
                        del ds[tag]
                    else:
                        raw.value = Sequence([])
                self.record(prefix, number, action)
                continue
            if is_raw and action != CLEAN and encoding is not None and isinstance(raw.value, bytes) \
                    and len(raw.value) <= ELEMENT_MEMO_MAX_BYTES:
                self.remembered_element(ds, tag, number, raw, vr, action, encoding, prefix)
                continue
            action = self.element(ds, tag, number, raw, vr, is_raw, action, encoding, prefix)
            if action is not None:
                self.record(prefix, number, action)
        self.r.kept += kept

    def element(self, ds: Dataset, tag, number: int, raw, vr: str, is_raw: bool, action: str, encoding: str | None,
                prefix: str) -> str | None:
        """Apply X, Z, D, U or C to one (non-sequence) element; the action to record (None: queued)."""
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
                defaced_uid(self.key, v.strip().strip("\x00"), self.r.uid_map) if v.strip().strip("\x00") in renamed
                else actions.map_uid(self.key, v, self.r.uid_map) for v in values
            ])
            action = UID
        elif action == CLEAN:
            self.pending.append((ds[tag], prefix))
            return None
        elif is_raw and vr in actions.DUMMY_BY_VR:  # D: a dummy value of the VR
            self._put(ds, tag, raw, vr, [actions.DUMMY_BY_VR[vr]])
        elif is_raw and vr in actions.FREE_TEXT_VRS:
            self._put(ds, tag, raw, vr, [actions.DUMMY_TEXT])
        else:
            new = DataElement(tag, vr, None)
            actions.dummy(new, self.key)
            ds[tag] = new
        return action

    def remembered_element(self, ds: Dataset, tag, number: int, raw: RawDataElement, vr: str, action: str,
                           encoding: str, prefix: str) -> None:
        """``element`` for a raw element, replayed when this run has seen the same tag, bytes,
        action and encoding before (dates, names, institution repeat in every file of a series):
        the outcome (new bytes or removal) and the effects (PHI strings, UID mappings) depend on
        nothing else but the key, the options and the patient's alias."""
        key = (number, action, raw.value, vr, encoding, self.alias)
        found = self.s.elements.get(key)
        if found is None:
            outer, self.r = self.r, ScrubResult()
            try:
                final = self.element(ds, tag, number, raw, vr, True, action, encoding, prefix)
            finally:
                inner, self.r = self.r, outer
            effects = _Effects(actions=[], kept=0, sources=inner.phi.sources, uids=inner.phi.uids,
                               allowed=inner.phi.allowed, uid_map=inner.uid_map)
            effects.replay(outer)
            new = ds._dict.get(tag)
            if new is None or (isinstance(new, RawDataElement) and new is not raw):  # removed, or new bytes
                empty = not (effects.sources or effects.uids or effects.allowed or effects.uid_map)
                self.s.remember_element(key, (None if new is None else new.value, final, None if empty else effects))
        else:
            final = found[1]
            self.replay_element(ds, tag, raw, found)
        self.record(prefix, number, final)

    def replay_element(self, ds: Dataset, tag, raw: RawDataElement, found: tuple) -> None:
        """Apply a remembered outcome: (new bytes or None for removal, action, effects or None)."""
        data, _, effects = found
        if effects is not None:
            effects.replay(self.r)
        if data is None:
            del ds[tag]
        else:
            ds._dict[tag] = _with_value(raw, data)

    @staticmethod
    def _put(ds: Dataset, tag, raw, vr: str, values: list[str]) -> None:
        """Replace a value; a raw element stays raw (encoded here, written as-is by pydicom)."""
        if isinstance(raw, RawDataElement) and vr not in actions.BYTES_VRS and vr not in actions.NUMBER_VRS:
            data = "\\".join(values).encode("ascii")
            if len(data) % 2:
                data += b"\x00" if vr == "UI" else b" "
            ds._dict[tag] = _with_value(raw, data)
        elif not values:
            ds[tag] = DataElement(tag, vr, b"" if vr in actions.BYTES_VRS else None)
        else:
            ds[tag] = DataElement(tag, vr, values[0] if len(values) == 1 else values)

    def _clean(self, elem) -> None:
        vr = elem.VR
        if vr in ("DA", "DT"):
            if self.s.options.retain_long_full_dates:
                return
            shifted = actions.shift_dates(elem, self.r.date_offset_days) \
                if self.s.options.retain_long_modified_dates else None
            if shifted is None:
                actions.dummy(elem, self.key)
            else:  # a shifted date may equal another input date by chance: that is no leak
                self.r.phi.shifted.update(text for value in shifted for text in (value.strip(), value.strip()[:8]))
        elif vr == "TM":
            if not (self.s.options.retain_long_full_dates or self.s.options.retain_long_modified_dates):
                actions.dummy(elem, self.key)
        elif vr == "UI":
            if not self.s.options.retain_uids:  # Retain UIDs keeps them in a cleaned sequence too
                actions.replace_uids(elem, self.key, mapping=self.r.uid_map)
        else:
            actions.clean_text(elem, self.phi_pattern, self.key, old_uids=self.r.phi.uids)

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


def _with_value(raw: RawDataElement, data: bytes) -> RawDataElement:
    """``raw`` holding new bytes (namedtuple._replace costs several times more)."""
    return RawDataElement(raw.tag, raw.VR, len(data), data, raw.value_tell, raw.is_implicit_VR, raw.is_little_endian,
                          raw.is_raw, raw.is_buffered)


def _encode_sequence(ds: Dataset, elem: DataElement, raw: RawDataElement) -> RawDataElement:
    """A scrubbed sequence as a raw element, encoded as it was read (what the writer would do)."""
    fp = DicomBytesIO()
    fp.is_little_endian = raw.is_little_endian
    fp.is_implicit_VR = raw.is_implicit_VR
    write_sequence(fp, elem, convert_encodings(ds._character_set))
    data = fp.getvalue()
    return RawDataElement(raw.tag, raw.VR, len(data), data, 0, raw.is_implicit_VR, raw.is_little_endian)


IMAGE_TYPE = 0x00080008
FRAME_TYPE = 0x00089007
# Enhanced images repeat the image type per frame, in these functional-group sequences
FRAME_TYPE_SEQUENCES = (0x00189226, 0x00189329, 0x00189751)  # MR, CT, PET Image Frame Type
FUNCTIONAL_GROUPS = (0x52009229, 0x52009230)  # Shared, Per-frame


def mark_derived(ds: Dataset) -> None:
    """A defaced image's pixels are derived from the scan's, after it: Image Type (and each
    enhanced frame's Frame Type) becomes DERIVED\\SECONDARY, or DERIVED\\PRIMARY in an enhanced
    image, its other values kept (PS3.3 C.7.6.1.1.2: ORIGINAL is for pixel values as acquired)."""
    # Enhanced CT/MR/PET (functional groups): Value 2 has the one Enumerated Value PRIMARY
    # (PS3.3 C.8.16.1.2); SECONDARY is for the classic IODs only
    second = "PRIMARY" if any(tag in ds._dict for tag in FUNCTIONAL_GROUPS) else "SECONDARY"

    def derive(elem) -> None:
        values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])] if elem.value else []
        values = (["DERIVED", second] + values[2:]) if values else ["DERIVED", second]
        elem.value = values

    if IMAGE_TYPE in ds._dict:
        derive(ds[IMAGE_TYPE])
    for group_tag in FUNCTIONAL_GROUPS:
        for group in (ds[group_tag].value if group_tag in ds._dict else []):
            for sequence_tag in FRAME_TYPE_SEQUENCES:
                for item in (group[sequence_tag].value if sequence_tag in group._dict else []):
                    if FRAME_TYPE in item._dict:
                        derive(item[FRAME_TYPE])


ENCAPSULATED_DOCUMENT, ENCAPSULATED_DOCUMENT_LENGTH = 0x00420011, 0x00420015


def _match_document_length(ds: Dataset) -> None:
    """Encapsulated Document Length (PS3.3 C.24.2) says how many bytes of the padded document
    are the document: once D put a dummy in place of a PDF or CDA, the input's length pointed
    past the value's end, and a reader trusting it read beyond the document."""
    if ENCAPSULATED_DOCUMENT not in ds._dict or ENCAPSULATED_DOCUMENT_LENGTH not in ds._dict:
        return
    document = ds[ENCAPSULATED_DOCUMENT].value or b""
    if ds[ENCAPSULATED_DOCUMENT_LENGTH].value != len(document):
        ds[ENCAPSULATED_DOCUMENT_LENGTH] = DataElement(ENCAPSULATED_DOCUMENT_LENGTH, "UL", len(document))


def _copy_sop_instance_uid(ds: Dataset, meta: Dataset) -> None:
    """MediaStorageSOPInstanceUID = SOPInstanceUID, as bytes when both are raw (a UI value is
    the same bytes in every transfer syntax); otherwise through pydicom."""
    source, target = ds._dict.get(SOP_INSTANCE_UID), meta._dict.get(MEDIA_STORAGE_SOP_INSTANCE_UID)
    if isinstance(source, RawDataElement) and isinstance(target, RawDataElement) and isinstance(source.value, bytes):
        meta._dict[target.tag] = _with_value(target, source.value)
    else:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


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


@lru_cache(maxsize=None)  # a few thousand public tags at most; called for every element collected
def _dictionary_vr(number: int) -> str:
    try:
        return dictionary_VR(number)
    except KeyError:
        return "UN"


def _tag_text(number: int) -> str:
    return f"({number >> 16:04X},{number & 0xFFFF:04X})"


def _single_byte_encoding(ds: Dataset) -> str | None:
    """The Python codec for raw string bytes, when one codec decodes them all (else None).
    A sequence item without its own Specific Character Set is in its parent's: taken as
    Latin-1, a Cyrillic or Japanese name in it would be looked for as mojibake, and missed."""
    raw = ds.get_item(0x00080005) if 0x00080005 in ds._dict else None
    if raw is None:
        return _PLAIN_CODEC.get(_codecs_key(ds._parent_encoding))
    value = raw.value if not isinstance(raw, RawDataElement) else (raw.value or b"").decode("ascii", "replace")
    text = "\\".join(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else str(value or "")
    text = text.strip().strip("\x00").strip()
    if text in ("", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6"):
        return "latin-1"
    if text == "ISO_IR 192":
        return "utf-8"
    return None


# pydicom's codec names (a dataset's parent encoding) -> the one Python codec that decodes them all
_PLAIN_CODEC = {("iso8859",): "latin-1", ("latin_1",): "latin-1", ("iso8859", "latin_1"): "latin-1",
                ("UTF8",): "utf-8"}


def _codecs_key(codecs) -> tuple:
    return tuple(sorted(set([codecs] if isinstance(codecs, str) else codecs or ["iso8859"])))


def _strings(ds: Dataset, tag, raw, encoding: str | None) -> list[str]:
    """An element's values as strings, from the raw bytes when the encoding allows (bytes the
    declared UTF-8 does not decode: in both readings below, for the PHI set)."""
    if isinstance(raw, RawDataElement) and encoding is not None:
        data = raw.value or b""
        if isinstance(data, bytes):
            try:
                texts = [data.decode(encoding)]
            except UnicodeDecodeError:
                # e.g. Latin-1 bytes under ISO_IR 192: as Latin-1, the leak check's byte patterns
                # find a copy left as bytes; as pydicom decodes them (U+FFFD for a bad byte), the
                # cleaning and the text patterns find a copy it converted ('M\ufffdller')
                texts = [data.decode("latin-1"), data.decode(encoding, "replace")]
            return [v.strip(" \x00") for text in texts for v in text.split("\\")]
    value = ds[tag].value
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [v.decode("latin-1", "replace") if isinstance(v, bytes) else str(v) for v in values]


def peek_value(ds: Dataset, tag: int, default=None):
    """``ds[tag].value`` without storing the converted element in ``ds``: a raw element is
    written back as a byte copy, a converted one is re-encoded (slower). Read-only: a raw
    value is converted once per run for the same tag, VR, bytes, byte order and character
    set (rows, columns, the patient's ID repeat in every file; pydicom's path costs ~6 us)."""
    elem = ds._dict.get(tag)
    if elem is None:
        return default
    if not isinstance(elem, RawDataElement):
        return elem.value
    if elem.VR is None or len(elem.VR) != 2 or (elem.value is None and elem.length) or tag == 0x00080005:
        return ds[tag].value  # implicit or ambiguous VR, deferred value, the charset: pydicom's full path
    charset = ds.original_character_set or ds._character_set
    if len(elem.value or b"") > ELEMENT_MEMO_MAX_BYTES:
        return convert_raw_data_element(elem, encoding=charset, ds=ds).value
    key = (tag, elem.VR, elem.value, elem.is_little_endian, charset if isinstance(charset, str) else tuple(charset))
    found = _PEEKED.get(key, _PEEKED)
    if found is _PEEKED:
        found = convert_raw_data_element(elem, encoding=charset, ds=ds).value
        if len(_PEEKED) >= PEEK_MEMO_MAX:
            _PEEKED.clear()
        _PEEKED[key] = found
    return found


def _pixel_options_before(ds: Dataset) -> set[str]:
    """The markers.PIXEL_OPTIONS whose codes an input declaring PatientIdentityRemoved lists in
    its De-identification Method Code Sequence: a header-only scrub passes the pixels on as they
    are, so what was said of them stays true (as BurnedInAnnotation does)."""
    if str(peek_value(ds, 0x00120062, "") or "").strip().upper() != "YES":
        return set()
    items = peek_value(ds, 0x00120064, None) or []
    codes = {str(item.get("CodeValue", "")) for item in items if str(item.get("CodingSchemeDesignator", "")) == "DCM"}
    return {PIXEL_CODES[code] for code in codes & PIXEL_CODES.keys()}


def _patient_key(ds: Dataset) -> str:
    """What identifies the patient for pseudonyms and date offsets: ID, else name, else study."""
    for tag in (PATIENT_ID, PATIENT_NAME, STUDY_INSTANCE_UID):
        value = str(peek_value(ds, tag, "") or "").strip()
        if value:
            return value
    return "unknown-patient"


def defaced_uid(key: bytes, old: str, mapping: dict) -> str:
    """The defaced series' own UID for ``old`` (its SOP Instance or Series UID, wherever it
    occurs), listed as ``OLD (defaced)``: the plain ``OLD`` row stays what every scrub with the key
    maps it to (a reference from another series), so that no two audits, which a batch merges,
    give one old UID two new ones."""
    new = keyed_uid(key, old, NEW_SERIES_NAMESPACE)
    mapping[old + DEFACED_ROW_SUFFIX] = new
    return new


def _original_uid(tag: int, ds: Dataset, result: ScrubResult) -> str:
    """The input UID of ``tag`` (before U replaced it), from the mapping just made."""
    current = str(ds[tag].value) if tag in ds else ""
    for old, new in result.uid_map.items():
        if new == current:
            return old
    return current
