"""The run's account: report.csv and report.html (one row per item) and summary.json in
OUTPUT/.defacer/, and the merged UID / patient mappings in the private audit folder.

Reports hold relative paths and folder names (never an absolute path: runner._shareable),
counts, features removed, protected voxels changed and the QA verdict (YuNet on the defaced
front render), never an original identifier.
"""
from __future__ import annotations

import csv
import errno
import html
import json
from pathlib import Path

from DeFacerLib.errors import OutputError
from DeFacerLib.io.atomic import atomic_paths, os_error_reason

COLUMNS = ("name", "kind", "action", "state", "reason", "files", "written", "skipped", "failed",
           "features_removed", "voxels_removed", "protected_voxels_changed", "qa_face_found", "seconds",
           "input_sha256", "output_sha256")


def _row(outcome: dict) -> dict:
    row = {column: outcome.get(column, "") for column in COLUMNS}
    row["features_removed"] = ",".join(outcome.get("features_removed", []) or [])
    removed = outcome.get("voxels_removed") or {}
    row["voxels_removed"] = sum(removed.values()) if removed else ""
    if "qa_face_found" in outcome:
        row["qa_face_found"] = "yes" if outcome["qa_face_found"] else "no"
    return row


def write_reports(folder: Path, outcomes: list[dict], summary: dict) -> dict[str, str]:
    """All three or none (a csv of this run beside no summary would be a partial account): a
    place that cannot take them is an OutputError; the items stay recorded in the manifest."""
    folder = Path(folder)
    rows = [_row(o) for o in sorted(outcomes, key=lambda o: o["name"])]
    paths = {"csv": folder / "report.csv", "html": folder / "report.html", "summary": folder / "summary.json"}
    texts = {"csv": _csv_text(rows), "html": _html_text(rows, summary),
             "summary": json.dumps(summary, indent=1, default=str) + "\n"}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        blocked = [path for path in paths.values() if path.exists() and not path.is_file()]
        if blocked:
            raise IsADirectoryError(errno.EISDIR, f"{blocked[0].name} exists and is not a file")
        with atomic_paths(list(paths.values())) as temps:
            for temp, name in zip(temps, paths):
                temp.write_text(texts[name], encoding="utf-8")
    except (OSError, OutputError) as error:
        raise OutputError(f"cannot write the reports in {folder}: {os_error_reason(error)}; the items are recorded "
                          "in the manifest: rerun the same command to write them") from None
    return {name: str(path) for name, path in paths.items()}


# a cell a spreadsheet reads as a formula: a file named '=HYPERLINK("http://...")x.nii.gz' in a
# dataset became a live link (or a DDE command) in the report.csv a data manager opens in Excel
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(rows: list[dict]) -> str:
    """report.csv, every text cell that a spreadsheet would run as a formula quoted with a
    leading apostrophe (OWASP's advice); numbers stay numbers."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({column: _as_text_cell(value) for column, value in row.items()} for row in rows)
    return buffer.getvalue()


def _as_text_cell(value):
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_START) else value


_STATE_COLOUR = {"done": "#e6f4ea", "skipped": "#fff8e1", "failed": "#fde8e8"}


def _html_text(rows: list[dict], summary: dict) -> str:
    esc = lambda value: html.escape(str(value))  # noqa: E731
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS[:-2])
    body = []
    for row in rows:
        colour = _STATE_COLOUR.get(row["state"], "#fff")
        if row.get("qa_face_found") == "yes":
            colour = "#f8c4c4"
        cells = "".join(f"<td>{esc(row[c])}</td>" for c in COLUMNS[:-2])
        body.append(f'<tr style="background:{colour}">{cells}</tr>')
    balance = (f"{summary['files']} input files = {summary['written']} written + {summary['skipped']} skipped + "
               f"{summary['failed']} failed" + (f" + {summary['pending']} pending" if summary.get("pending") else ""))
    facts = [
        ("input", summary["input"]), ("output", summary["output"]), ("layout", summary["layout"]),
        ("items", f"{summary['items_done']} done, {summary['items_skipped']} skipped, {summary['items_failed']} failed, "
                  f"{summary['items_pending']} pending of {summary['items']}"),
        ("files", balance), ("defaced", summary["defaced"]),
        ("protected (brain) voxels changed", summary["protected_voxels_changed"]),
        ("QA: faces found after defacing", summary["qa_faces_found"]),
        ("DICOM files whose path holds PHI of their own header (mirrored as is: rename before sharing)",
         summary.get("paths_holding_phi_count", 0)),
        ("DICOM files that say their pixels carry burned-in text (headers only were scrubbed: check them; "
         "--clean-pixel-data is for those that are not head slices)", _first_of(summary.get("burned_in_annotation", []))),
        ("DICOM files --clean-pixel-data left as they were (primary or defaced CT/MR/PET/NM images: anatomy, in which "
         "OCR reads words)", _first_of(summary.get("pixels_not_cleaned", []))),
        ("faces filled (BIDS photos; DICOM photographs with --clean-recognizable-visual-features)",
         summary.get("faces_filled", 0)),
        ("BIDS photos published with no face found (their pixels as they were: look at them)",
         _first_of(summary.get("photos_without_faces", []))),
        ("participants / phenotype columns that may name or date a person (copied as they are: check them)",
         "; ".join(f"{t['name']}: {', '.join(t['columns'])}" for t in summary.get("identifying_columns", [])) or "none"),
        ("seconds", summary["seconds"]),
    ]
    fact_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DeFacer batch report</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}}</style></head>
<body><h1>DeFacer batch report</h1>
<table>{fact_rows}</table>
<h2>Items</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""


def merge_audit(audit: Path) -> dict[str, str]:
    """uid_mapping.csv and patid_mapping.csv over every item's audit (keyed: the same in every run)."""
    audit = Path(audit)
    uids, patients = {}, {}
    items = audit / "items"
    if items.is_dir():
        for folder in sorted(items.iterdir()):
            for name, mapping in (("uid_mapping.csv", uids), ("patid_mapping.csv", patients)):
                path = folder / name
                if path.is_file():
                    with open(path, newline="", encoding="utf-8") as handle:  # audit.write_mapping's
                        for row in csv.DictReader(handle):
                            mapping[row["id_old"]] = row["id_new"]
    from DeFacerLib.dicom.audit import write_mapping

    paths = {"uid_mapping": audit / "uid_mapping.csv", "patid_mapping": audit / "patid_mapping.csv"}
    write_mapping(paths["uid_mapping"], uids)
    write_mapping(paths["patid_mapping"], patients)
    return {name: str(path) for name, path in paths.items()}


def _first_of(names: list, shown: int = 5) -> str:
    """A count and the first few names, for a fact of the report."""
    if not names:
        return "none"
    return f"{len(names)}: " + ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")

