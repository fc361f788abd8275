"""Collect the input's PHI strings and prove none of them is left anywhere in the output.

The PHI set is taken from the attributes the profile does NOT keep: person names (whole
and each name component), dates, UIDs that are replaced, and identifiers, addresses and
institution names by keyword. The check scans every output value: nested sequences at any
depth, private tags, the file meta, string VRs as text and OB/UN bytes as latin-1/UTF-8
text (pixel data excepted: burned-in text is the OCR's job).
"""
from __future__ import annotations

import os
import re
import unicodedata
from functools import lru_cache
from dataclasses import dataclass, field

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from DeFacerLib.dicom.actions import DUMMY_BY_VR, DUMMY_TEXT
from DeFacerLib.dicom.uids import is_standard_uid

IDENTIFYING_KEYWORDS = {
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "PatientAddress", "PatientTelephoneNumbers",
    "StationName", "DeviceSerialNumber", "MedicalRecordLocator", "AdmissionID", "RequestedProcedureID",
    "PerformedProcedureStepID", "ScheduledProcedureStepID", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PersonAddress", "PersonTelephoneNumbers", "RegionOfResidence", "MilitaryRank", "BranchOfService",
    "PatientInsurancePlanCodeSequence", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "DetectorID", "SourceSerialNumber", "ServiceEpisodeID", "VisitComments", "PatientComments",
    "CurrentPatientLocation", "PatientInstitutionResidence", "ResponsibleOrganization", "ResponsiblePerson",
    "PerformedLocation", "ScheduledProcedureStepLocation", "ClinicalTrialSiteName", "ClinicalTrialSiteID",
    "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "PatientSpeciesDescription",
    *("PatientTelecomInformation", "PersonTelecomInformation", "OrderCallbackPhoneNumber",
      "OrderCallbackTelecomInformation"),
    *("PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar"),
}
# Telecom attributes list several numbers and addresses in one value: each is looked for alone.
TELECOM_KEYWORDS = frozenset(k for k in IDENTIFYING_KEYWORDS if "Telecom" in k or "Telephone" in k or "Phone" in k)
_TELECOM_SEPARATORS = re.compile(r"[\r\n;,|\\]+")
# Text spells a patient's name and dates its own way: "JaneDoe", "2010-07-23", "July 23, 2010".
JOINED_NAME_MIN_LENGTH = 6  # shorter joined runs (and telecom parts) turn up inside ordinary words
STRIPPED_ID_MIN_LENGTH = 7  # "00007041776" also as "7041776"; shorter runs turn up in numbers by chance
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
MIN_LENGTH = 3
MIN_LENGTH_WIDE = 2  # ideographic names: a family name is often two characters (山田)
IGNORED = {DUMMY_TEXT, *DUMMY_BY_VR.values(), "ANONYMOUS", "NONE", "UNKNOWN", "YES", "NO"}


def _wide(value: str) -> bool:
    """Holds East Asian wide characters (each says as much as a short word)."""
    return not value.isascii() and any(unicodedata.east_asian_width(ch) in "WF" for ch in value)


@dataclass
class PhiSet:
    """Strings of the input that must not appear in the output, and where each came from.

    UIDs are kept apart and found by plain substring search (each file has its own SOP
    Instance UID, and compiling a regex per file would cost more than the whole scrub);
    the other strings are usually the same for every file of a series, so their compiled
    patterns are cached.
    """

    sources: dict[str, str] = field(default_factory=dict)  # value -> attribute it came from
    uids: dict[str, str] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)  # values an option keeps elsewhere in the file
    shifted: set[str] = field(default_factory=set)  # dates this scrub wrote (Modified Dates): not the input's

    def allow(self, value: str) -> None:
        """A value a retained attribute keeps on purpose (e.g. the institution's name under
        Retain Institution Identity) is not a leak when another, removed attribute held it too."""
        self.allowed.add(value.strip().strip("\x00").strip().upper())

    def _active(self) -> frozenset:
        sources = self.sources.keys() - self.shifted if self.shifted else self.sources
        if not self.allowed:
            return frozenset(sources)
        return frozenset(v for v in sources if not any(v.upper() in kept for kept in self.allowed))

    def include(self, other: "PhiSet") -> None:
        """Add another dataset's PHI strings (not those it kept on purpose) and old UIDs: a
        DICOMDIR's records copy what the files it indexes hold (a report's text, a name)."""
        for value in other._active():
            self.sources.setdefault(value, other.sources[value])
        for value, where in other.uids.items():
            self.uids.setdefault(value, where)

    def add(self, value: str, where: str) -> None:
        value = value.strip().strip("\x00").strip()
        if len(value) < (MIN_LENGTH_WIDE if _wide(value) else MIN_LENGTH) or value.upper() in IGNORED or value.replace(".", "").replace("0", "") == "":
            return
        self.sources.setdefault(value, where)

    def add_uid(self, value: str, where: str) -> None:
        value = value.strip().strip("\x00").strip()
        if len(value) >= 8 and not is_standard_uid(value):  # the standard's own stay (actions.replace_uids)
            self.uids.setdefault(value, where)

    def add_name(self, name: str, where: str) -> None:
        self.add(name, where)
        for group in name.split("="):
            self.add(group, where)
            components = [c.strip() for c in group.split("^") if c.strip()]
            for component in components:
                self.add(component, where)
            if len(components) >= 2:  # family and given name run together, in either order
                for joined in (components[0] + components[1], components[1] + components[0]):
                    if len(joined) >= JOINED_NAME_MIN_LENGTH:
                        self.add(joined, where)

    def add_date(self, date: str, where: str) -> None:
        """A YYYYMMDD date, and the same day as text writes it (ISO, day-first and month-first
        with / . -, and with the month's English name)."""
        self.add(date, where)
        date = date.strip()[:8]
        self.add(date, where)
        if not _DATE.fullmatch(date):
            return
        year, month, day = date[:4], date[4:6], date[6:]
        for separator in "-/.":
            for form in (year + separator + month + separator + day, day + separator + month + separator + year,
                         month + separator + day + separator + year):
                self.add(form, where)
        name = MONTHS[int(month) - 1]
        day_number = str(int(day))
        for month_name in dict.fromkeys((name, name[:3])):
            for form in (f"{day_number} {month_name} {year}", f"{month_name} {day_number}, {year}",
                         f"{month_name} {day_number} {year}", f"{day}-{month_name}-{year}"):
                self.add(form, where)

    def clean_pattern(self) -> re.Pattern | None:
        """Every PHI string, for cleaning text (the allowed ones too: cleaning may over-remove)."""
        return _patterns(frozenset(self.sources))[0] if self.sources else None

    def text_pattern(self) -> re.Pattern | None:
        active = self._active()
        return _patterns(active)[0] if active else None

    def bytes_pattern(self) -> re.Pattern | None:
        active = self._active()
        return _patterns(active)[1] if active else None

    def source_of(self, found: str) -> str:
        for value, where in list(self.sources.items()) + list(self.uids.items()):
            if value.lower() == found.lower():
                return where
        return "input"


@lru_cache(maxsize=256)
def _patterns(values: frozenset) -> tuple[re.Pattern, re.Pattern]:
    ordered = sorted(values, key=len, reverse=True)
    text = re.compile("|".join(_alternative(re.escape(v)) for v in ordered), re.IGNORECASE)
    variants = []
    for value in ordered:
        for encoding in ("utf-8", "latin-1"):
            try:
                variants.append(_alternative(re.escape(value.encode(encoding)).decode("latin-1")))
            except UnicodeEncodeError:
                pass
    raw = re.compile("|".join(dict.fromkeys(variants)).encode("latin-1"), re.IGNORECASE)
    return text, raw


@dataclass(frozen=True)
class _Matcher:
    """The PHI patterns of one file plus literal prefilters.

    A case-insensitive alternation of ~20 strings costs ~0.1 ms per kilobyte in ``re``;
    ``bytes.lower()`` and ``in`` cost microseconds. Every regex match contains one of the
    literals (lower-cased: bytes patterns fold ASCII only, and for ASCII text so does the
    str pattern), so the regex runs only when a literal is present: same answer, less time.
    """

    text: re.Pattern
    raw: re.Pattern
    text_literals: tuple  # lower-cased str values, or () when some value is not ASCII
    raw_literals: tuple  # lower-cased byte values in UTF-8 and latin-1

    def raw_hit(self, blob: bytes) -> bool:
        if not blob:
            return False
        lowered = blob.lower()
        return any(literal in lowered for literal in self.raw_literals) and self.raw.search(blob) is not None

    def text_hit(self, joined: str) -> bool:
        if not joined:
            return False
        if self.text_literals and joined.isascii():
            lowered = joined.lower()
            if not any(literal in lowered for literal in self.text_literals):
                return False
        return self.text.search(joined) is not None


@lru_cache(maxsize=256)
def _matcher(values: frozenset) -> _Matcher:
    text, raw = _patterns(values)
    ascii_only = all(v.isascii() for v in values)
    raw_literals = set()
    for value in values:
        for encoding in ("utf-8", "latin-1"):
            try:
                raw_literals.add(value.encode(encoding).lower())
            except UnicodeEncodeError:
                pass
    return _Matcher(text=text, raw=raw, text_literals=tuple(v.lower() for v in values) if ascii_only else (),
                    raw_literals=tuple(raw_literals))


def _alternative(escaped: str) -> str:
    """Short strings only match between non-letters (a name 'LEE' must not flag 'SLEEP',
    but 'HOMER1' still holds 'HOMER')."""
    if len(escaped) >= 6:
        return escaped
    return rf"(?<![A-Za-z]){escaped}(?![A-Za-z])"


@dataclass
class Leak:
    """One output value still holding an input PHI string: where (``path``, ``keyword``), what was
    ``found`` and the input attribute it came from (``source``)."""

    path: str
    keyword: str
    found: str
    source: str

    def line(self) -> str:
        return f"{self.path} ({self.keyword or 'private'}) still holds '{self.found}' from {self.source}"

    def line_without_value(self) -> str:
        """The leak without the PHI it found, for what is shared or kept outside the audit (a
        batch's report.html, report.csv, summary.json and manifest, a failed item's reason)."""
        return f"{self.path} ({self.keyword or 'private'}) still holds a value from {self.source}"


IDENTIFYING_TAGS = frozenset(t for t in (tag_for_keyword(k) for k in IDENTIFYING_KEYWORDS) if t is not None)


def collect_strings(phi: PhiSet, vr: str, values: list[str], action: str, where: str) -> None:
    """Add an element's values to the PHI set (the caller knows the profile does not keep it)."""
    if vr == "PN":
        for v in values:
            phi.add_name(v, where)
    elif vr in ("DA", "DT"):
        for v in values:
            if len(v.strip()) >= 8:
                phi.add_date(v, where)
    elif vr == "UI":
        if action in ("U", "D", "U*"):
            for v in values:
                phi.add_uid(v, where)
    else:
        for v in values:
            phi.add(v, where)
            digits = v.strip()
            if digits.isdigit() and len(digits.lstrip("0")) >= STRIPPED_ID_MIN_LENGTH:
                phi.add(digits.lstrip("0"), where)  # an ID's number as text writes it
            if where in TELECOM_KEYWORDS:  # each number or address; not a short label ("Home", "work")
                for part in _TELECOM_SEPARATORS.split(v):
                    if len(part.strip()) >= JOINED_NAME_MIN_LENGTH:
                        phi.add(part, where)


def phi_in_path(rel_path: str, phi: PhiSet, skip_uids: bool = False) -> str | None:
    """"'<found>' from <attribute>" when the file's own relative path holds one of ``phi``'s
    strings (a folder named after the patient or the study date, a file named by its SOP
    Instance UID), else None. Paths are mirrored as they are, so they carry what they hold.

    Folder names spell values their own way ("Doe_John", "2010-07-23", "23.07.2010"), so a
    value of COMPACT_MIN_LENGTH letters and digits or more is also looked for with everything
    else taken out of both, and a date in its day-first and month-first orders too."""
    active = phi._active()
    if skip_uids:  # a file named by a UID kept on purpose: the dates and serials in it are kept with it
        rel_path = _UID_RUN.sub("#", rel_path)
    for path in _path_readings(rel_path) if active else ():
        hit = _matcher(active).text.search(path) if _matcher(active).text_hit(path) else None
        if hit:
            return f"'{hit.group(0)}' from {phi.source_of(hit.group(0))}"
        compact_path = _compact(path)
        for value in sorted(active):
            if any(form in compact_path for form in _compact_forms(value)):
                return f"'{value}' from {phi.source_of(value)} (written differently)"
    if not skip_uids:
        for uid, where in phi.uids.items():
            if uid in rel_path:
                return f"'{uid}' from {where}"
    return None


def _path_readings(rel_path: str) -> tuple[str, ...]:
    """The path as Python decoded it and, when it holds bytes the file system's encoding could
    not decode (kept as surrogates), as UTF-8 (under an ASCII locale) and as Latin-1 (a Windows
    archive's names unpacked on Linux): 'J\\udcfcrgen' is the folder 'Jürgen'."""
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(rel_path)
        return rel_path, raw.decode("utf-8", "surrogateescape"), raw.decode("latin-1")
    return (rel_path,)


_UID_RUN = re.compile(r"\d+(?:\.\d+){3,}")
COMPACT_MIN_LENGTH = 6  # shorter letter runs turn up by chance in joined folder names
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_DATE = re.compile(r"(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])")


def _compact(text: str) -> str:
    return _NOT_ALNUM.sub("", text.lower())


@lru_cache(maxsize=4096)
def _compact_forms(value: str) -> tuple[str, ...]:
    """A value with only its letters and digits (if long enough); a YYYYMMDD date also as
    DDMMYYYY and MMDDYYYY."""
    compact = _compact(value)
    if len(compact) < COMPACT_MIN_LENGTH:
        return ()
    if len(compact) == 8 and _DATE.fullmatch(compact):
        return compact, compact[6:] + compact[4:6] + compact[:4], compact[4:6] + compact[6:] + compact[:4]
    return (compact,)


def find_leaks(ds: Dataset, phi: PhiSet, limit: int = 20, skip_uids: bool = False) -> list[Leak]:
    """Every output value (file meta included) that still holds one of ``phi``'s strings.

    ``skip_uids`` (Retain UIDs): UIDs the user chose to keep are not scanned; vendors embed
    device serial numbers and dates in them, which that option knowingly keeps.
    """
    active = phi._active()
    leaks: list[Leak] = _coincident_dates(ds, phi, limit)
    if not active and not phi.uids:
        return leaks
    matcher = _matcher(active) if active else _NEVER_MATCHER
    meta = getattr(ds, "file_meta", None)
    # One pass gathers every value; the slower locating scans run only on a hit. A UID is
    # digits and dots: PHI in it is a whole component (a serial number, a date), never a
    # digit run that a new keyed 2.25.<39 digits> UID contains by chance.
    text_hit, uid_values = _any_match(ds, meta, matcher, phi.uids, skip_uids)
    if uid_values and _any_uid_hits(uid_values, phi, active):
        for dataset, prefix in ((meta, "meta."), (ds, "")):
            if dataset is not None:
                _scan_uids(dataset, prefix, phi, leaks, limit, active)
    if not text_hit:
        return leaks
    text, raw = matcher.text, matcher.raw
    if phi.uids:
        uid_text = "|".join(re.escape(u) for u in sorted(phi.uids, key=len, reverse=True))
        text = re.compile(f"{text.pattern}|{uid_text}", re.IGNORECASE)
        raw = re.compile(raw.pattern + b"|" + uid_text.encode("ascii", "replace"), re.IGNORECASE)
    if meta is not None:
        _scan(meta, "meta.", text, raw, phi, leaks, limit, skip_uids)
    _scan(ds, "", text, raw, phi, leaks, limit, skip_uids=True)
    return leaks


_NEVER = re.compile(r"(?!x)x")
_NEVER_BYTES = re.compile(rb"(?!x)x")
_NEVER_MATCHER = _Matcher(text=_NEVER, raw=_NEVER_BYTES, text_literals=(), raw_literals=())


def _any_match(ds: Dataset, meta, matcher: _Matcher, uids, skip_uids: bool) -> tuple[bool, list[str]]:
    """(does any non-UID value hold PHI or an old UID?, every UID value, unless skip_uids)."""
    blobs: list[bytes] = []
    strings: list[str] = []
    uid_values: list[str] = []
    for dataset in (meta, ds):
        if dataset is not None:
            _gather(dataset, blobs, strings, uid_values, skip_uids)
    blob, joined = b"\x01".join(blobs), "\x01".join(strings)
    if matcher.raw_hit(blob) or matcher.text_hit(joined):
        return True, uid_values
    return any(uid in joined or uid.encode("ascii", "replace") in blob for uid in uids), uid_values


def _uid_hits(uid: str, phi: PhiSet, active: frozenset) -> bool:
    return uid in phi.uids or (not is_standard_uid(uid) and not active.isdisjoint(uid.split(".")))


def _any_uid_hits(uids: list[str], phi: PhiSet, active: frozenset) -> bool:
    """``any(_uid_hits(uid) for uid in uids)`` in two set operations: joined with dots, the
    UIDs split into exactly their components (a per-UID loop cost more than the scan)."""
    return not phi.uids.keys().isdisjoint(uids) or not active.isdisjoint(
        ".".join(uid for uid in uids if not is_standard_uid(uid)).split("."))


# Values gathered from a raw (still encoded) sequence, by its bytes: a series repeats the same
# sequences (references to the localizers, the de-identification method codes) in every file,
# and parsing them again for each file would cost more than the rest of the check.
_SEQUENCE_VALUES: dict[tuple, tuple[list, list, list]] = {}
_SEQUENCE_VALUES_MAX = 512  # entries, each of at most _SEQUENCE_VALUES_MAX_BYTES: <= 32 MiB
_SEQUENCE_VALUES_MAX_BYTES = 64 << 10


# Character sets whose bytes the byte patterns cover (ASCII, Latin-1, UTF-8); text of any other
# (Latin-2, Cyrillic, Greek, ISO 2022 Japanese...) is decoded before it is searched.
PLAIN_CODECS = frozenset({"iso8859", "latin_1", "UTF8"})
CHARSET_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})  # PS3.5 6.1.2.3: encoded by the character set


def _foreign(ds: Dataset) -> bool:
    codecs = ds._character_set
    return not PLAIN_CODECS.issuperset([codecs] if isinstance(codecs, str) else codecs)


def _decoded(ds: Dataset, tag, raw: RawDataElement):
    """The element as pydicom decodes it; ``ds`` keeps the raw one, for the writer to copy."""
    elem = ds[tag]
    ds._dict[tag] = raw
    return elem


def _coincident_dates(ds: Dataset, phi: PhiSet, limit: int) -> list[Leak]:
    """An input date that equals a date the shift wrote is left out of the main check (the
    shifted date is no leak); rare, so this slower walk looks for it only where no shift wrote
    it: in any value but a date's (a kept text saying 'ACME 20210803')."""
    coincident = phi.sources.keys() & phi.shifted
    if not coincident:
        return []
    leaks = []
    for elem in ds.iterall():
        if elem.VR in ("DA", "DT", "TM", "UI", "SQ") or elem.tag in PIXEL_TAGS or elem.value is None:
            continue
        text = elem.value.decode("latin-1", "replace") if isinstance(elem.value, (bytes, bytearray)) else str(elem.value)
        for value in coincident:
            if value in text and len(leaks) < limit:
                leaks.append(Leak(path=_tag_text(elem.tag), keyword=elem.keyword, found=value, source=phi.sources[value]))
    return leaks


def _gather(ds: Dataset, blobs: list, strings: list, uid_values: list, skip_uids: bool) -> None:
    foreign = _foreign(ds)
    for tag, elem in list(ds._dict.items()):
        if tag in PIXEL_TAGS:
            continue
        vr = elem.VR
        if vr == "UI" or ((vr is None or vr == "UN") and _dictionary_vr(tag) == "UI"):
            if not skip_uids:
                value = elem.value
                if isinstance(value, (bytes, bytearray)):
                    value = value.decode("ascii", "replace")
                for uid in (value.split("\\") if isinstance(value, str) else list(value or [])):
                    uid_values.append(str(uid).strip("\x00 "))
            continue
        if isinstance(elem, RawDataElement):
            if vr == "SQ" or (vr is None and _dictionary_vr(tag) == "SQ"):
                _gather_raw_sequence(ds, tag, elem, blobs, strings, uid_values, skip_uids)
                continue
            if vr == "UN":
                elem = ds[tag]  # converted: it may be text, or a sequence, by the dictionary
            elif foreign and (vr or _dictionary_vr(tag)) in CHARSET_VRS:
                elem = _decoded(ds, tag, elem)
            else:
                if elem.value:
                    blobs.append(elem.value)
                continue
        value = elem.value
        if elem.VR == "SQ":
            for item in value or []:
                _gather(item, blobs, strings, uid_values, skip_uids)
        elif isinstance(value, (bytes, bytearray)):
            blobs.append(bytes(value))
        elif value is not None:
            strings.append(str(value) if isinstance(value, str) else "\\".join(map(str, value)) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else str(value))


def _gather_raw_sequence(ds: Dataset, tag, raw: RawDataElement, blobs: list, strings: list, uid_values: list,
                         skip_uids: bool) -> None:
    """The values of every item of a raw sequence, parsed once per distinct encoding; the
    dataset keeps the raw element, so the writer copies its bytes instead of re-encoding."""
    charset = ds.original_character_set or ds._character_set  # what ds[tag] decodes with
    key = (raw.value, raw.is_implicit_VR, raw.is_little_endian, charset if isinstance(charset, str) else tuple(charset),
           skip_uids)
    found = _SEQUENCE_VALUES.get(key)
    if found is None:
        found = ([], [], [])
        for item in ds[tag].value or []:
            _gather(item, *found, skip_uids)
        ds._dict[tag] = raw
        if len(raw.value or b"") <= _SEQUENCE_VALUES_MAX_BYTES:
            if len(_SEQUENCE_VALUES) >= _SEQUENCE_VALUES_MAX:
                _SEQUENCE_VALUES.clear()
            _SEQUENCE_VALUES[key] = found
    blobs += found[0]
    strings += found[1]
    uid_values += found[2]


def _scan(ds: Dataset, prefix: str, text, raw, phi: PhiSet, leaks: list, limit: int, skip_uids: bool = False) -> None:
    foreign = _foreign(ds)
    for tag in list(ds.keys()):
        if len(leaks) >= limit:
            return
        if int(tag) in PIXEL_TAGS:
            continue
        elem = ds.get_item(tag)
        if skip_uids and _is_uid(elem, tag):
            continue
        where = f"{prefix}{_tag_text(tag)}"
        if isinstance(elem, RawDataElement):
            value = elem.value
            if elem.VR == "SQ" or (elem.VR is None and _is_sequence_tag(tag)) or elem.VR == "UN":
                elem = ds[tag]  # convert to scan items (and UN that is really text)
            elif foreign and (elem.VR or _dictionary_vr(tag)) in CHARSET_VRS:
                elem = _decoded(ds, tag, elem)
            elif value:
                match = raw.search(value)
                if match:
                    _add(leaks, where, tag, _text_of(match.group(0)), phi)
                continue
            else:
                continue
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or []):
                _scan(item, f"{where}[{index}].", text, raw, phi, leaks, limit, skip_uids)
            continue
        value = elem.value
        if value is None:
            continue
        if isinstance(value, (bytes, bytearray)):
            match = raw.search(bytes(value))
            found = _text_of(match.group(0)) if match else None
        else:
            match = text.search(str(value) if not isinstance(value, (list, tuple)) else "\\".join(map(str, value)))
            if match is None and type(value).__name__ == "MultiValue":
                match = text.search("\\".join(map(str, value)))
            found = match.group(0) if match else None
        if found:
            _add(leaks, where, tag, found, phi)


def _text_of(found: bytes) -> str:
    """Matched bytes as the PHI string they encode (UTF-8 or Latin-1, as the patterns), so
    that a report names 'MÜLLER' from PatientName, not 'MÃ\x9cLLER' from the input."""
    try:
        return found.decode("utf-8")
    except UnicodeDecodeError:
        return found.decode("latin-1", "replace")


def _scan_uids(ds: Dataset, prefix: str, phi: PhiSet, leaks: list, limit: int, active: frozenset) -> None:
    """Old UIDs, and UID components equal to a PHI string, in every UI value at any depth."""
    for tag in list(ds.keys()):
        if len(leaks) >= limit or int(tag) in PIXEL_TAGS:
            continue
        elem = ds.get_item(tag)
        where = f"{prefix}{_tag_text(tag)}"
        if elem.VR == "SQ" or (elem.VR in (None, "UN") and _is_sequence_tag(tag)):
            for index, item in enumerate(ds[tag].value or []):
                _scan_uids(item, f"{where}[{index}].", phi, leaks, limit, active)
            continue
        if not _is_uid(elem, tag):
            continue
        value = ds[tag].value
        for uid in value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]:
            uid = str(uid or "").strip("\x00 ")
            if _uid_hits(uid, phi, active):
                found = uid if uid in phi.uids else next(c for c in uid.split(".") if c in active)
                _add(leaks, where, tag, found, phi)


def _add(leaks: list, where: str, tag, found: str, phi: PhiSet) -> None:
    source = phi.source_of(found)
    leaks.append(Leak(path=where, keyword=keyword_for_tag(tag), found=found, source=source))


@lru_cache(maxsize=8192)
def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _is_uid(elem, tag) -> bool:
    if elem.VR is not None and elem.VR != "UN":
        return elem.VR == "UI"
    return _dictionary_vr(int(tag)) == "UI"


def _is_sequence_tag(tag) -> bool:
    return _dictionary_vr(int(tag)) == "SQ"


def _tag_text(tag) -> str:
    return f"({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})"
