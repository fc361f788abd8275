"""The PS3.15 Annex E confidentiality profile: options, the generated table, and action rules.

The table (``Resources/DicomProfile/confidentiality_profile.json``) is generated from the
standard by ``scripts/generate_dicom_profile.py``; nothing here re-types it. This module
turns (row, options) into ONE final action, following these rules (see the README there):

* Compound codes (we do not know the IOD type of each attribute): ``Z/D``, ``X/D`` and
  ``X/Z/D`` become ``D``, ``X/Z`` becomes ``Z``, ``X/Z/U*`` becomes ``U*`` (keep the
  sequence, replace the UIDs inside, scrub its items). The original value never survives
  either way, so the privacy of X, Z and D is the same; the last alternative is the one
  that keeps a Type 1/2 attribute conformant, so viewers and PACS still accept the file.
* Retain options (``rtn*`` columns) loosen a row only when EVERY retain concern that lists
  the row is selected (the two Longitudinal Temporal columns form one concern): the
  calibration date of a detector is kept with Retain Device Identity only if dates are
  retained too. When several selected options list a row, C (clean/modify) beats K.
* Clean options (``clean*`` columns) turn the row into C when selected, also on top of a
  retain K.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import DicomDictionary

from DeFacerLib.errors import UsageError
from DeFacerLib.resources import resource_path

PROFILE_FILE = ("DicomProfile", "confidentiality_profile.json")
SAFE_PRIVATE_FILE = ("DicomProfile", "safe_private.json")

# Final actions after resolution.
REMOVE, ZERO, DUMMY, KEEP, CLEAN, UID, UID_SEQUENCE = "X", "Z", "D", "K", "C", "U", "U*"
COMPOUND = {"Z/D": DUMMY, "X/D": DUMMY, "X/Z/D": DUMMY, "X/Z": ZERO, "X/Z/U*": UID_SEQUENCE}

DATE_CONCERN = "dates"


@dataclass(frozen=True)
class ProfileOptions:
    """Which PS3.15 E.3 options to apply on top of the Basic Application Confidentiality Profile;
    both long-date modes, or a pseudonym format that cannot be Patient ID, are a UsageError."""

    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    clean_pixel_data: bool = False
    # faces filled in photographs and other non-volume images (dicom.pixels_faces); recorded for a
    # series `defacer deface` wrote, whose face went with the volume's
    clean_recognizable_visual_features: bool = False
    pseudonym_format: str = "DEFACER-{hash8}"

    def __post_init__(self):
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise UsageError("choose one of Retain Longitudinal Full Dates and Modified Dates, not both")
        if "{hash8}" not in self.pseudonym_format and "{hash16}" not in self.pseudonym_format:
            raise UsageError("the pseudonym format must contain {hash8} or {hash16}, e.g. DEFACER-{hash8}")
        _check_pseudonym_format(self.pseudonym_format)

    def selected_columns(self) -> set[str]:
        return {column for column, field in OPTION_FIELDS.items() if getattr(self, field)}

    def with_(self, **changes) -> "ProfileOptions":
        return dataclasses.replace(self, **changes)


PSEUDONYM_MAX_CHARS = 64  # Patient ID (LO) and a Patient's Name component group (PN)


def _check_pseudonym_format(fmt: str) -> None:
    """The pseudonym becomes Patient's Name and Patient ID in every file: it must format with
    {hash8}/{hash16} only, and give one plain-ASCII value that fits both (a backslash would
    make a second value, an accent cannot be written without a matching character set)."""
    try:
        sample = fmt.format(hash8="0" * 8, hash16="0" * 16)
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise UsageError(f"the pseudonym format {fmt!r} is not valid ({type(error).__name__}: {error}); "
                         "use only {hash8} or {hash16} in braces, e.g. DEFACER-{hash8}") from None
    if not sample.isascii() or not sample.isprintable() or "\\" in sample:
        raise UsageError(f"the pseudonym format {fmt!r} must be printable ASCII without a backslash")
    if len(sample) > PSEUDONYM_MAX_CHARS:
        raise UsageError(f"the pseudonym format {fmt!r} gives {len(sample)} characters; "
                         f"Patient ID and Patient's Name hold at most {PSEUDONYM_MAX_CHARS}")


# Table column -> ProfileOptions field.
OPTION_FIELDS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
CLEAN_COLUMNS = {"cleanDescOpt", "cleanStructContOpt", "cleanGraphOpt"}


def _concern(column: str) -> str:
    return DATE_CONCERN if column in ("rtnLongFullDatesOpt", "rtnLongModifDatesOpt") else column


def resolve_action(row: dict, options: ProfileOptions) -> str:
    """The one action (X, Z, D, K, C, U or U*) for a table row under ``options``."""
    selected = options.selected_columns()
    row_options: dict = row["options"]
    retain = {c: code for c, code in row_options.items() if c not in CLEAN_COLUMNS}
    clean_selected = any(c in selected for c in row_options if c in CLEAN_COLUMNS)
    if retain:
        concerns = {_concern(c) for c in retain}
        satisfied = {_concern(c) for c in retain if c in selected}
        if concerns == satisfied:
            codes = {code for c, code in retain.items() if c in selected}
            return CLEAN if (CLEAN in codes or clean_selected) else KEEP
    if clean_selected:
        return CLEAN
    basic = row["basic"]
    return COMPOUND.get(basic, basic)


@lru_cache(maxsize=1)
def load_profile() -> dict:
    """The generated table (edition, generator, rows)."""
    path = resource_path(*PROFILE_FILE)
    return json.loads(path.read_text())


@lru_cache(maxsize=1)
def load_safe_private() -> dict[tuple[str, int, int], dict]:
    """(private creator, group, element low byte) -> entry, for Retain Safe Private."""
    entries = json.loads(resource_path(*SAFE_PRIVATE_FILE).read_text())["attributes"]
    return {(e["creator"], int(e["group"], 16), int(e["element"], 16)): e for e in entries}


@dataclass(frozen=True)
class ActionTable:
    """Rows compiled for fast lookup under one set of options."""

    exact: dict  # tag int -> (action, row)
    curve_action: str  # (50xx,xxxx) repeating groups
    overlay: dict  # element (0x3000, 0x4000) -> (action, row) within (60xx,eeee)
    private_action: str  # X, or C = keep only the safe-private list


# Person names, dates and times of the data dictionary that Table E.1-1 (2024b) has no row for
# (Evaluator Name, Secondary Reviewer Name, Study Update DateTime...): kept as they are they
# would publish a person's name, and a study's date under LongitudinalTemporalInformationModified
# REMOVED. Each gets the action its listed kin get: a name a dummy (OperatorsName's X/D), a date
# or time the date rule (a dummy, K with Full Dates, C with Modified Dates).
UNLISTED_NAME_ROW = {"basic": "X/D", "options": {}}
UNLISTED_DATE_ROW = {"basic": "X/D", "options": {"rtnLongFullDatesOpt": "K", "rtnLongModifDatesOpt": "C"}}
UNLISTED_ROW_BY_VR = {"PN": UNLISTED_NAME_ROW, "DA": UNLISTED_DATE_ROW, "DT": UNLISTED_DATE_ROW, "TM": UNLISTED_DATE_ROW}
# The patient's birth and death dates written in another calendar (LO, so no VR rule finds
# them; no row in 2024b): removed under every option, as the table removes the birth time.
UNLISTED_ROW_BY_KEYWORD = {keyword: {"basic": "X", "options": {}} for keyword in (
    "PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar")}


@lru_cache(maxsize=1)
def listed_tags() -> frozenset[int]:
    """The public tags Table E.1-1 has a row of its own for (not its private rows, nor its
    repeating groups such as 50xx)."""
    return frozenset(int(r["group"] + r["element"], 16) for r in load_profile()["rows"]
                     if not r["private"] and "x" not in (r["group"] + r["element"]).lower())


@lru_cache(maxsize=1)
def unlisted_rows() -> dict[int, dict]:
    """tag -> the row standing in for a dictionary PN/DA/DT/TM attribute the table does not list."""
    listed = listed_tags()
    return {tag: dict(UNLISTED_ROW_BY_KEYWORD.get(keyword) or UNLISTED_ROW_BY_VR[vr],
                      tag=f"({tag >> 16:04X},{tag & 0xFFFF:04X})", keyword=keyword, vr=vr, unlisted=True)
            for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items()
            if (vr in UNLISTED_ROW_BY_VR or keyword in UNLISTED_ROW_BY_KEYWORD)
            and tag >> 16 not in (0x0000, 0x0002) and tag not in listed}


@lru_cache(maxsize=64)
def compile_actions(options: ProfileOptions) -> ActionTable:
    exact, overlay = {}, {}
    curve_action = private_action = REMOVE
    for tag, row in unlisted_rows().items():
        exact[tag] = (resolve_action(row, options), row)
    for row in load_profile()["rows"]:
        action = resolve_action(row, options)
        if row["private"]:
            private_action = action
        elif row["group"] == "50xx":
            curve_action = action
        elif row["group"] == "60xx":
            overlay[int(row["element"], 16)] = (action, row)
        else:
            exact[int(row["group"] + row["element"], 16)] = (action, row)
    return ActionTable(exact=exact, curve_action=curve_action, overlay=overlay, private_action=private_action)
