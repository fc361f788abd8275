"""Keyed, deterministic replacements: UIDs, patient pseudonyms and per-patient date offsets.

Everything is HMAC-SHA256 with one secret project key, so the same key gives the same
output on every file, series, run and machine (referential integrity across batches),
and nobody without the key can link an output back to its input.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from pydicom.uid import UID_dictionary

from DeFacerLib.errors import InputError, OutputError, UsageError
from DeFacerLib.io.atomic import is_within, link_new, make_folder, remove_made_folders

KEY_BYTES = 32
DATE_OFFSET_RANGE_DAYS = (-3650, -365)


# The folders load_or_create_key made for a new key file, deepest first, so that a run that
# publishes nothing removes them with the key (forget_new_key).
_FOLDERS_MADE_FOR: dict[Path, list[Path]] = {}


def default_key_path() -> Path:
    """Where the key lives when none is named: $DEFACER_KEY_FILE, else ~/.config/defacer/deid.key,
    outside any dataset so that sharing a folder never shares the secret behind its pseudonyms."""
    env = os.environ.get("DEFACER_KEY_FILE")
    return Path(env) if env else Path.home() / ".config" / "defacer" / "deid.key"


def key_file_path(key_file: str | Path | None) -> Path:
    """The key file a run uses: ``key_file``, or the default when None. An empty name is refused:
    `--key-file "$PROJECT_KEY"` with the variable unset keyed a delivery with the default key (an
    unrelated one, or one made then), whose UIDs and pseudonyms linked with none of the project's."""
    if key_file is None:
        return default_key_path()
    if not str(key_file).strip():
        raise UsageError("the key file name is empty (an unset variable?); give the project's key file, "
                         "or leave --key-file out for the default")
    return Path(key_file)


def load_or_create_key(path: str | Path | None = None, mark_use: bool = True) -> tuple[bytes, Path, bool]:
    """(key, where it is stored, created now?). A missing key file is created (mode 0600).

    Two runs started at once with a new key file get the same key: it is written whole under
    a temporary name and linked into place, so the run that loses the race reads the winner's
    (an O_EXCL create left it empty for a moment: "File exists", or "shorter than 16 bytes").
    The file is held with a shared lock while this process lives, so that a run that made it
    and then fails does not delete it under another run that uses it (forget_new_key).
    ``mark_use=False``: a reader that is part of the run holding the key (a batch's workers)."""
    path = key_file_path(path)
    for _ in range(3):  # a key deleted as it was read (its maker failed) is made afresh
        if path.is_dir():
            raise InputError(f"key file {path} is a folder; give the path of a key file (created when missing)")
        if path.is_file():
            key = _read_key(path, mark_use)
            if key is not None:
                return key, path, False
            continue
        key = secrets.token_bytes(KEY_BYTES)
        _FOLDERS_MADE_FOR[path] = make_folder(path.parent, "key file's folder")
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".partial", dir=path.parent)  # 0600
            placed = False
            try:
                _hold(path, fd)  # held before it is in place: a run that reads it meanwhile marks it (_read_key)
                os.write(fd, (key.hex() + "\n").encode("ascii"))
                placed = link_new(Path(temp), path)
            finally:
                if not placed:  # another run made the key meanwhile (read next), or the write failed
                    _release(path)
                    Path(temp).unlink(missing_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create the key file {path}: {error.strerror or error}") from None
        if not placed:
            continue
        _MADE[Path(path).absolute()] = os.stat(path).st_mtime_ns
        return key, path, True
    raise InputError(f"the key file {path} keeps changing (another run makes and deletes it); rerun")


def _read_key(path: Path, mark_use: bool = True) -> bytes | None:
    """The key in ``path``, held (see _hold); None when it was deleted as it was read."""
    try:
        fd = os.open(path, os.O_RDONLY)
        _release(path)  # this process's own earlier hold is no other run's
        held_elsewhere = _exclusive_lock(fd) is not True
        _hold(path, fd)
        # a key that no other process holds is read without a trace (a user's key keeps its
        # modification time); one held (its maker may still fail and delete it) is marked as used,
        # and so is any key where locks cannot tell (Windows, a file system without flock): else a
        # maker that failed deleted a key another run had published with. This process's own
        # second read is no other run's use, nor a batch worker's (its driver's read marked it).
        if mark_use and held_elsewhere and Path(path).absolute() not in _MADE:
            _mark_used(path, fd)
        with os.fdopen(os.dup(fd), "rb") as handle:
            text = handle.read()
        if os.fstat(fd).st_nlink == 0:  # its maker failed and removed it meanwhile
            _release(path)
            return None
        key = bytes.fromhex(text.decode("ascii").strip())
    except ValueError:  # UnicodeDecodeError included: a binary file is no hex key either
        _release(path)  # not held: Slicer runs on, and on Windows an open file cannot be replaced
        raise InputError(f"key file {path} does not hold a hex key; restore it or point --key-file elsewhere") from None
    except OSError as error:
        raise InputError(f"cannot read the key file {path}: {error.strerror or error}") from None
    if len(key) < 16:
        _release(path)
        raise InputError(f"key file {path} holds a key shorter than 16 bytes; use a longer key")
    return key


# Key files this process uses, each open with a shared lock (flock) until the process ends
_HELD_KEYS: dict[Path, int] = {}
# Key files this process made, with their modification time then (another run's use moves it)
_MADE: dict[Path, int] = {}


def _mark_used(path: Path, fd: int) -> None:
    """Move the key file's modification time on (by 1 ns at least): the run that made it (and
    holds it from before it was in place) sees that another run used it, also once that run has
    ended, and keeps it (forget_new_key). A key this user cannot write (another's) was not made by
    a run of his."""
    with contextlib.suppress(OSError):
        status = os.fstat(fd)
        os.utime(path, ns=(status.st_atime_ns, max(time.time_ns(), status.st_mtime_ns + 1)))


def _hold(path: Path, fd: int) -> None:
    """Keep ``fd`` (the key file) open with a shared lock for the rest of this process (POSIX;
    elsewhere, or on a file system without locks, no lock: forget_new_key deletes as before)."""
    _release(path)
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_SH)
    _HELD_KEYS[Path(path).absolute()] = fd


def release_held_keys() -> None:
    """End this process's holds on key files once its run is over: for a long-lived process (the
    3D Slicer module) that runs one scrub after another. Held on, every key used stayed open until
    Slicer closed, and on Windows an open file cannot be deleted or replaced (a key rotated)."""
    for path in list(_HELD_KEYS):
        _release(path)
    _MADE.clear()


def _release(path: Path) -> None:
    fd = _HELD_KEYS.pop(Path(path).absolute(), None)
    if fd is not None:
        os.close(fd)


def _in_use_elsewhere(path: Path) -> bool:
    """Another process holds the key file (a run that read the key this one made). Called with
    this process's own hold released; otherwise the exclusive lock is kept until _release."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    if _exclusive_lock(fd) is False:
        os.close(fd)
        return True
    _HELD_KEYS[Path(path).absolute()] = fd
    return False


def _exclusive_lock(fd: int) -> bool | None:
    """Take an exclusive lock on ``fd`` without waiting: True when taken, False when another
    process holds the file, None where it cannot be told (no flock: Windows, some file systems)."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except (ImportError, OSError):
        return None
    return True


def _unchanged_since(path: Path, mtime_ns: int | None) -> bool:
    try:
        return mtime_ns is None or os.stat(path).st_mtime_ns == mtime_ns
    except OSError:
        return True


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
    path = key_file_path(key_file)
    for root, what in ((output_path, "output"), (input_path, "input")):
        if root is not None and is_within(path, root):
            raise OutputError(f"key file {path} is inside the {what} {root}; keep it outside the input and the output "
                              "(it is the secret behind the pseudonyms, UIDs and date shifts)")


def forget_new_key(path: str | Path, created: bool) -> None:
    """A key made by this run goes when the run publishes nothing: no output was pseudonymised
    with it, and a key left behind would look like one that had been. A key that existed before
    is never touched."""
    if not created:
        return
    _release(Path(path))
    made = _MADE.pop(Path(path).absolute(), None)
    if _in_use_elsewhere(Path(path)) or not _unchanged_since(Path(path), made):
        _release(Path(path))
        return  # another run read it and may have published with it: it stays
    Path(path).unlink(missing_ok=True)
    _release(Path(path))
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
    """The patient's keyed stand-in name and ID (``fmt`` as ProfileOptions.pseudonym_format): the
    same patient gets the same pseudonym in every study keyed alike, and without the key it cannot
    be traced back."""
    digest = _digest(key, "patient", patient.strip()).hex().upper()
    return fmt.format(hash8=digest[:8], hash16=digest[:16])


def date_offset_days(key: bytes, patient: str) -> int:
    """A keyed per-patient shift in [-3650, -365] days: intervals within a patient are kept."""
    low, high = DATE_OFFSET_RANGE_DAYS
    value = int.from_bytes(_digest(key, "date-offset", patient.strip())[:8], "big")
    return low + value % (high - low + 1)


def short_token(key: bytes, value: str, namespace: str, length: int = 8) -> str:
    return _digest(key, namespace, value.strip()).hex().upper()[:length]
