"""The run's memory: one SQLite row per item, committed as soon as the item finishes.

A rerun reads it to do only what is left: items not done, failed ones, and those whose
inputs (size/mtime fingerprint) or settings (config hash) changed since. Only the driver
process writes it, so there is no locking between workers. It holds relative paths (which
the mirrored output shows anyway), keyed series tokens, checksums, counts and reasons,
never a patient name or an original UID.
"""
from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from pathlib import Path

from DeFacerLib.errors import OutputError

DONE = "done"
SKIPPED = "skipped"
FAILED = "failed"
STATES = (DONE, SKIPPED, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    files INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    input_sha256 TEXT,
    output_sha256 TEXT,
    written INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    outcome TEXT NOT NULL DEFAULT '{}',
    updated_utc TEXT NOT NULL
);
"""


class Manifest:
    """``Manifest(path)``; ``needs_work(item_id, fingerprint, config)``; ``record(outcome)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.executescript(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as error:
            raise OutputError(f"cannot open the batch manifest {self.path}: {error}; "
                              "check that the output folder is writable and not full") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ---- items --------------------------------------------------------------------------------

    def state_of(self) -> dict[str, tuple[str, str, str]]:
        """item id -> (state, fingerprint, config) for every recorded item."""
        return {row[0]: (row[1], row[2], row[3])
                for row in self._db.execute("SELECT id, state, fingerprint, config FROM items")}

    def needs_work(self, known: dict, item_id: str, fingerprint: str, config: str) -> bool:
        entry = known.get(item_id)
        if entry is None:
            return True
        state, old_fingerprint, old_config = entry
        return state == FAILED or old_fingerprint != fingerprint or old_config != config

    def record(self, outcome: dict, *, fingerprint: str, config: str) -> None:
        """Store one finished item and commit (an interrupted run keeps everything recorded so far)."""
        row = self._db.execute("SELECT attempts FROM items WHERE id = ?", (outcome["id"],)).fetchone()
        attempts = (row[0] + 1) if row else 1
        self._write(
            "INSERT OR REPLACE INTO items (id, kind, name, files, fingerprint, config, state, reason, input_sha256, "
            "output_sha256, written, skipped, failed, attempts, outcome, updated_utc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (outcome["id"], outcome["kind"], outcome["name"], outcome["files"], fingerprint, config,
             outcome["state"], outcome.get("reason", ""), outcome.get("input_sha256"), outcome.get("output_sha256"),
             outcome.get("written", 0), outcome.get("skipped", 0), outcome.get("failed", 0), attempts,
             json.dumps(outcome, default=str), _now()),
        )

    def forget_missing(self, item_ids: set[str]) -> int:
        """Drop rows of items no longer in the input (deleted files); returns how many."""
        gone = [row[0] for row in self._db.execute("SELECT id FROM items") if row[0] not in item_ids]
        for item_id in gone:
            self._db.execute("DELETE FROM items WHERE id = ?", (item_id,))
        self._commit()
        return len(gone)

    def outcomes(self) -> list[dict]:
        rows = self._db.execute("SELECT outcome, state, attempts, updated_utc FROM items ORDER BY id")
        out = []
        for text, state, attempts, updated in rows:
            entry = json.loads(text)
            entry["state"], entry["attempts"], entry["updated_utc"] = state, attempts, updated
            out.append(entry)
        return out

    def totals(self) -> dict[str, int]:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(files),0), COALESCE(SUM(written),0), COALESCE(SUM(skipped),0), "
            "COALESCE(SUM(failed),0) FROM items").fetchone()
        by_state = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        return {"items": row[0], "files": row[1], "written": row[2], "skipped": row[3], "failed": row[4],
                **{f"items_{state}": by_state.get(state, 0) for state in STATES}}

    # ---- plumbing -----------------------------------------------------------------------------

    def _write(self, sql: str, values) -> None:
        try:
            self._db.execute(sql, values)
        except sqlite3.Error as error:
            raise OutputError(f"cannot update the batch manifest {self.path}: {error}; free space in the output "
                              "folder and rerun the same command to resume") from None
        self._commit()

    def _commit(self) -> None:
        try:
            self._db.commit()
        except sqlite3.Error as error:
            raise OutputError(f"cannot update the batch manifest {self.path}: {error}; free space in the output "
                              "folder and rerun the same command to resume") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
