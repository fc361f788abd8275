"""BIDS specifics: which JSON sidecar fields are PHI, the dates in scans and sessions tables,
and the GeneratedBy entry.

dcm2niix and other converters copy DICOM attributes into the sidecars, under their keywords.
Those get what the PS3.15 profile and the run's options do to the attribute in a DICOM file
(scrub_sidecar): who, where, when and which machine go by default; the acquisition parameters
(RepetitionTime, EchoTime, FlipAngle, SliceTiming, ...), which BIDS users need, stay.

``sub-*_scans.tsv`` and ``sub-*_sessions.tsv`` give each scan's or session's date and time
(``acq_time``): the dates policy of the DICOM profile applies to them (removed, i.e. "n/a",
by default; shifted by the subject's keyed whole-day offset with ``--dates modified``, which
keeps every interval of that subject and the time of day; kept with ``--dates full``).
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from functools import lru_cache

from DeFacerLib import __version__

# Sidecar keys that are no DICOM keyword but carry a date and time (some converters write them)
DATETIME_KEYS = frozenset({"StudyDateTime", "SeriesDateTime"})
DATE_VRS = ("DA", "DT")

GENERATED_BY_NAME = "DeFacer"

DATED_TABLE = re.compile(r"(^|/)sub-[^/_]+(_ses-[^/_]+)?_(scans|sessions)\.tsv$")
DATE_COLUMNS = ("acq_time",)
MISSING = "n/a"


# participants.tsv and phenotype/*.tsv are the study's own choice of what to share (age, sex,
# scores) and are copied as they are; a column whose name says it names, locates, contacts or
# dates a person is reported on the console and in the summary, because such a column is almost
# always a mistake in a dataset about to be published. Words of a column name (split at
# non-letters, case-insensitive; two neighbouring words are tried joined, "first_name" ->
# "firstname") are compared with this list; a word starting with "birth" counts too.
IDENTIFYING_COLUMN_WORDS = frozenset({
    "name", "firstname", "lastname", "surname", "fullname", "initials", "dob", "birthdate", "birthday", "date",
    "address", "street", "postcode", "zipcode", "zip", "city", "phone", "telephone", "mobile", "email", "mail",
    "mrn", "ssn", "nhs", "patientid", "hospitalid", "accession",
})
PARTICIPANT_TABLE = re.compile(r"^(participants\.tsv|phenotype/[^/]+\.tsv)$")


def identifying_columns(header_line: str) -> list[str]:
    """Column names of a TSV header that say they name, locate, contact or date a person."""
    found = []
    for column in header_line.rstrip("\r\n").split("\t"):
        words = [w for w in re.split(r"[^a-z0-9]+", column.lower()) if w]
        candidates = set(words) | {a + b for a, b in zip(words, words[1:])}
        if candidates & IDENTIFYING_COLUMN_WORDS or any(w.startswith("birth") for w in words):
            found.append(column)
    return found


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
    """The BIDS subject label a relative path belongs to ("sub-01"), or "" outside any subject.

    The first folder named for a subject, wherever it is: derivatives/fmriprep/sub-01/ and
    sourcedata/sub-01/ are sub-01's too. Given the offset of no subject, they were all shifted by
    one offset, so that one known date of any subject's derivatives dated every other subject's."""
    return next((folder for folder in rel.split("/")[:-1] if folder.startswith("sub-")), "")


def scrub_sidecar(data, options=None, offset_days: int = 0):
    """(cleaned copy, sorted names of the fields removed). Nested objects are cleaned too.

    A key that is a DICOM keyword (dcm2niix writes the header's attributes under their
    keywords) gets what the PS3.15 profile does to that attribute under ``options`` (a
    dicom.ProfileOptions; default the Basic profile), as `defacer scrub` does to the DICOM
    itself: kept (K), a date shifted by ``offset_days`` (Retain Longitudinal ... Modified Dates),
    a description kept where it holds none of the values removed from the same sidecar (Clean
    Descriptors), otherwise removed. The acquisition parameters (RepetitionTime, EchoTime,
    SliceTiming, Manufacturer, ...) are in no row of the profile and stay.
    """
    from DeFacerLib.dicom.profile import ProfileOptions

    actions = _sidecar_actions(options or ProfileOptions())
    removed: set[str] = set()
    removed_values: list[str] = []
    to_clean: list[tuple[dict, str]] = []
    kept_text: list[tuple[dict, str]] = []

    def clean(value):
        if isinstance(value, dict):
            kept = {}
            for key, inner in value.items():
                action, vr = actions.get(key, ("K", ""))
                if action == "K" or (action == "C" and vr == "TM"):
                    kept[key] = clean(inner)
                    if not isinstance(inner, dict):  # text under a key the profile keeps or does not know
                        kept_text.append((kept, key))
                elif action == "C" and vr in DATE_VRS and isinstance(inner, str):
                    shifted = _shift_datetime(inner, offset_days)
                    if shifted is None:
                        removed.add(key)
                    else:
                        kept[key] = shifted
                elif action == "C" and isinstance(inner, str):
                    kept[key] = inner
                    to_clean.append((kept, key))
                else:
                    removed.add(key)
                    removed_values.extend(_strings(inner))
            return kept
        if isinstance(value, list):
            return [clean(inner) for inner in value]
        return value

    cleaned = clean(data)
    phi = [v.lower() for v in removed_values if len(v) >= 3]
    for holder, key in to_clean + kept_text:  # any text that names what was removed goes too
        if key in holder and any(v in text.lower() for text in _strings(holder[key]) for v in phi):
            del holder[key]
            removed.add(key)
    return cleaned, sorted(removed)


def _strings(value) -> list[str]:
    """Every string in a JSON value, names split at ^ as DICOM person names are."""
    if isinstance(value, str):
        return [value, *value.split("^")]
    if isinstance(value, dict):
        return [s for inner in value.values() for s in _strings(inner)]
    if isinstance(value, list):
        return [s for inner in value for s in _strings(inner)]
    return []


@lru_cache(maxsize=8)
def _sidecar_actions(options) -> dict[str, tuple[str, str]]:
    """{keyword: (action under ``options``, VR)} for every attribute of the PS3.15 table."""
    from DeFacerLib.dicom.profile import load_profile, resolve_action

    actions = {row["keyword"]: (resolve_action(row, options), row["vr"])
               for row in load_profile()["rows"] if row.get("keyword")}
    date_action = actions["AcquisitionDateTime"]
    for key in DATETIME_KEYS:
        actions[key] = date_action
    return actions


ACQ_TIME_DONE = {"remove": "acq_time dates removed from", "modified": "acq_time dates shifted in",
                 "full": "acq_time dates kept in"}


def add_generated_by(description: dict, features: tuple[str, ...], dates: str = "remove") -> dict:
    """dataset_description.json with DeFacer appended to GeneratedBy (once, deterministic); what
    the entry says is what this run did (no features: a scrub-only run defaced nothing)."""
    out = dict(description)
    before = out.get("GeneratedBy") or []
    if not isinstance(before, list):  # one entry given without its list: kept as it is, not split up
        before = [before]
    entries = [entry for entry in before
               if not (isinstance(entry, dict) and entry.get("Name") == GENERATED_BY_NAME)]
    defaced = (f"facial features removed ({', '.join(features)}) from anatomical, PET and CT images and from "
               "every other head image (quantitative maps, derivatives, sourcedata) in which a face was found"
               if features else "no image defaced (DICOM headers de-identified only)")
    entries.append({
        "Name": GENERATED_BY_NAME,
        "Version": __version__,
        "Description": (f"{defaced}; PHI fields removed from the JSON sidecars and {ACQ_TIME_DONE[dates]} the scans "
                        "and sessions tables; other files copied"),
    })
    out["GeneratedBy"] = entries
    return out


def dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
