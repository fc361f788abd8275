"""Keyed, deterministic replacements: UIDs, patient pseudonyms and per-patient date offsets.

Everything is HMAC-SHA256 with one secret project key, so the same key gives the same
output on every file, series, run and machine (referential integrity across batches),
and nobody without the key can link an output back to its input.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path

from pydicom.uid import UID_dictionary

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.io.atomic import is_within, make_folder, remove_made_folders

KEY_BYTES = 32
DATE_OFFSET_RANGE_DAYS = (-3650, -365)


# The folders load_or_create_key made for a new key file, deepest first, so that a run that
# publishes nothing removes them with the key (forget_new_key).
_FOLDERS_MADE_FOR: dict[Path, list[Path]] = {}


def default_key_path() -> Path:
    env = os.environ.get("DEFACER_KEY_FILE")
    return Path(env) if env else Path.home() / ".config" / "defacer" / "deid.key"


def load_or_create_key(path: str | Path | None = None) -> tuple[bytes, Path, bool]:
    """(key, where it is stored, created now?). A missing key file is created (mode 0600)."""
    path = Path(path) if path else default_key_path()
    if path.is_dir():
        raise InputError(f"key file {path} is a folder; give the path of a key file (created when missing)")
    if path.is_file():
        try:
            key = bytes.fromhex(path.read_bytes().decode("ascii").strip())
        except ValueError:  # UnicodeDecodeError included: a binary file is no hex key either
            raise InputError(f"key file {path} does not hold a hex key; restore it or point --key-file elsewhere") from None
        except OSError as error:
            raise InputError(f"cannot read the key file {path}: {error.strerror or error}") from None
        if len(key) < 16:
            raise InputError(f"key file {path} holds a key shorter than 16 bytes; use a longer key")
        return key, path, False
    key = secrets.token_bytes(KEY_BYTES)
    _FOLDERS_MADE_FOR[path] = make_folder(path.parent, "key file's folder")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
    except OSError as error:
        raise OutputError(f"cannot create the key file {path}: {error.strerror or error}") from None
    return key, path, True


def key_readable_by_others(path: str | Path) -> bool:
    """The key file's mode lets its group or other users read it (POSIX). Whoever reads the key
    can recompute the pseudonym of any patient ID they guess and undo the date shifts; DeFacer
    makes its keys 0600, but a key made by hand or copied in with a umask of 022 is 0644."""
    try:
        return os.name == "posix" and bool(Path(path).stat().st_mode & 0o044)
    except OSError:
        return False


def refuse_key_inside(key_file: str | Path | None, input_path: str | Path | None, output_path: str | Path) -> None:
    """A key file inside the output is shared with the data it keys: with it a recipient
    recomputes the pseudonym and UIDs of any patient ID he can guess, and undoes the date
    shifts. Inside the input it changes the input, and `batch` copies a BIDS tree's other files
    to the output. Checked before the key is made or read (``input_path`` None: files, not a folder)."""
    path = Path(key_file) if key_file else default_key_path()
    for root, what in ((output_path, "output"), (input_path, "input")):
        if root is not None and is_within(path, root):
            raise OutputError(f"key file {path} is inside the {what} {root}; keep it outside the input and the output "
                              "(it is the secret behind the pseudonyms, UIDs and date shifts)")


def forget_new_key(path: str | Path, created: bool) -> None:
    """A key made by this run goes when the run publishes nothing: no output was pseudonymised
    with it, and a key left behind would look like one that had been. A key that existed before
    is never touched."""
    if created:
        Path(path).unlink(missing_ok=True)
        remove_made_folders(_FOLDERS_MADE_FOR.pop(Path(path), []))  # a mistyped path leaves nothing


def _digest(key: bytes, namespace: str, value: str) -> bytes:
    return hmac.new(key, f"{namespace}\0{value}".encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


# The standard's own UIDs (SOP classes, transfer syntaxes, the well-known colour palettes'
# instances of PS3.6 Annex A): they name no patient, and a reference to one must keep working.
_CONTEXT_GROUP = re.compile(r"1\.2\.840\.10008\.6\.1\.\d+")


def is_standard_uid(uid: str) -> bool:
    """A UID the standard registers (PS3.6 Annex A: SOP classes, transfer syntaxes, well-known
    instances, coding schemes, context groups), not merely one under its root: a non-conformant
    device that numbers its studies under 1.2.840.10008 would publish them unchanged."""
    return uid in UID_dictionary or _CONTEXT_GROUP.fullmatch(uid) is not None


@lru_cache(maxsize=16384)
def keyed_uid(key: bytes, uid: str, namespace: str = "uid") -> str:
    """``2.25.<int>`` from the first 128 bits of the HMAC: at most 44 characters (<= 64).
    Cached: the study, series and frame-of-reference UIDs recur in every file of a series."""
    return "2.25." + str(int.from_bytes(_digest(key, namespace, uid.strip())[:16], "big"))


def pseudonym(key: bytes, patient: str, fmt: str) -> str:
    digest = _digest(key, "patient", patient.strip()).hex().upper()
    return fmt.format(hash8=digest[:8], hash16=digest[:16])


def date_offset_days(key: bytes, patient: str) -> int:
    """A keyed per-patient shift in [-3650, -365] days: intervals within a patient are kept."""
    low, high = DATE_OFFSET_RANGE_DAYS
    value = int.from_bytes(_digest(key, "date-offset", patient.strip())[:8], "big")
    return low + value % (high - low + 1)


def short_token(key: bytes, value: str, namespace: str, length: int = 8) -> str:
    return _digest(key, namespace, value.strip()).hex().upper()[:length]
