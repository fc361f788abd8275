"""Atomic outputs: write to a temporary sibling, rename into place only on success.

A crash, an error or Ctrl-C therefore never leaves a partial output where the user
asked for one, and an existing file is replaced in one step (``os.replace``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from DeFacerLib.errors import OutputError


def check_output_path(input_path: str | os.PathLike | None, output_path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse outputs that would overwrite the input, exist already, or cannot be written.

    ``input_path`` is None (or empty) for volumes made in memory, which have no input to protect.
    """
    check_name_fits(output_path, "output")
    target = Path(output_path).resolve()
    if input_path:
        source = Path(input_path).resolve()
        if source == target:
            raise OutputError(f"output {output_path} is the input; choose another path (inputs are never modified)")
        if source.is_dir() and source in target.parents:
            raise OutputError(f"output {output_path} is inside the input folder {input_path}; choose another path")
        if target in source.parents:  # replacing it would delete the input with it
            raise OutputError(f"output {output_path} holds the input {input_path}; choose another path")
    if target.exists() and not overwrite:
        raise OutputError(f"output {output_path} exists; pass --overwrite to replace it")
    if input_path and Path(input_path).is_dir() and target.is_dir():
        _check_folder_is_replaceable(target, Path(input_path), output_path)
    parent = target.parent
    if not parent.is_dir():
        check_output_folder(parent)  # a file in the way is named: "does not exist" sent users looking for a folder
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable")
    return target


def check_name_fits(path: str | os.PathLike, what: str = "output") -> None:
    """Refuse, before any work, a name longer than its file system allows (255 bytes on most),
    the output's own or that of a folder still to be made for it: checking whether it exists
    already raised OSError (an internal error, exit 1), for the provenance file or audit folder
    named after an output whose own name still fitted, and for an output under a folder of 300."""
    path = Path(path)
    folder, names = path.parent.resolve(), [path.name]
    # os.path.exists, not Path.exists: it is False for a name too long (ENAMETOOLONG), not an error
    while not os.path.exists(folder) and folder.parent != folder:  # a missing drive (Windows) is its own parent
        names.append(folder.name)
        folder = folder.parent
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or none for this file system
        limit = 255
    for index, name in enumerate(names):
        # NTFS counts UTF-16 code units, POSIX file systems bytes
        size = len(name.encode("utf-16-le", "surrogatepass")) // 2 if os.name == "nt" else len(os.fsencode(name))
        if size > limit:
            shown = f"a folder name ({name[:20]}...)" if index else "a name"
            raise OutputError(f"{what} {path} has {shown} of {size} {'characters' if os.name == 'nt' else 'bytes'}, "
                              f"more than the {limit} its file system allows; choose a shorter name")


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """``path`` is ``root`` or lies inside it (both resolved): what replacing or writing into
    ``root`` would reach."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def check_output_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse, before any work, a folder for side outputs (QA pictures, reports) that cannot be
    made or written: a file of that name, a file in its path, a read-only or missing place.
    Nothing is created here, so a refused run leaves nothing behind."""
    folder = Path(folder)
    check_name_fits(folder, what)
    existing = folder.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        blocker = "is a file" if existing == folder.resolve() else f"cannot be made: {existing} is a file"
        raise OutputError(f"{what} {folder} {blocker}; give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder} cannot be written ({existing} is not writable)")
    return folder


def make_folder(folder: str | os.PathLike, what: str = "output folder") -> list[Path]:
    """Make ``folder`` and its parents before the work, so that a place that cannot be made is
    refused at once (root passes os.access checks on /proc and read-only mounts); returns the
    folders this call created, deepest first, for a failed run to remove (remove_made_folders)."""
    folder = Path(folder)
    created = []
    probe = folder
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot make the {what} {folder}: {error.strerror or error}") from None
    return created


def remove_made_folders(created: list[Path]) -> None:
    """Remove the folders make_folder created, where they are still empty."""
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _check_folder_is_replaceable(target: Path, source: Path, output_path) -> None:
    """--overwrite replaces a whole output folder: allow it only for an empty folder or a
    previous output of this input (entries named as the input's, files for files, folders for
    folders), never a folder of other work, which would be deleted with it."""
    kind = {p.name: p.is_dir() for p in source.iterdir()}
    foreign = sorted(entry.name for entry in target.iterdir()
                     if entry.is_symlink() or kind.get(entry.name) is not entry.is_dir())
    if foreign:
        raise OutputError(
            f"output folder {output_path} holds files that are not a previous output of this input "
            f"(e.g. {foreign[0]!r}); --overwrite would delete them: choose a new or empty folder"
        )


def os_error_reason(error: BaseException) -> str:
    """The operating system's short reason ('No space left on device') for a failed write,
    also when a library re-raised it with its own traceback text in the message (pydicom)."""
    while error is not None:
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        error = error.__cause__ or error.__context__
    return "write failed"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False, private: bool = False,
                replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it to ``target``.

    With ``directory=True`` the temporary path is a fresh folder (for DICOM series).
    The temporary name keeps the target's extension, in lower case, so that format writers keyed
    on it (".nii.gz", ".mgz", ".nrrd", ".mha") behave as for the real name.
    ``private``: keep the modes the writer set (an audit trail's 0700/0600) instead of the
    user's usual umask. A folder already at ``target`` is set aside and removed only once the
    new one is in place. ``replace=False`` (no --overwrite): what another run put at ``target``
    meanwhile is kept and this write fails (OutputError), never silently replaced.
    """
    target = Path(target)
    parent = target.parent
    try:
        if directory:
            temp = Path(tempfile.mkdtemp(prefix=f".{_short(target.name)}.", suffix=".partial", dir=parent))
        else:
            handle, name = tempfile.mkstemp(prefix=f".{_short(target.name)}.partial.", suffix=_temp_suffix(target),
                                            dir=parent)
            os.close(handle)
            temp = Path(name)
    except OSError as error:
        raise OutputError(f"cannot write in {parent}: {error.strerror or error}") from None
    try:
        yield temp
        if not private:
            _apply_default_permissions(temp)
        if not replace:
            _publish_new(temp, target)
        elif directory and target.is_dir():
            _replace_folder(temp, target)
        else:
            os.replace(temp, target)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        raise


@contextlib.contextmanager
def atomic_detached(target: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield the path of a detached header (``.nhdr``/``.mhd``) in a fresh folder beside
    ``target``; the writer puts its data file(s) beside it, named as they will be. On success the
    data files are moved into place first and the header last, so that a header never names
    voxels that are not there yet; if a move fails, what was moved is taken back and what an
    earlier output had there is put back. ``replace=False``: a file another run put at one of the
    names meanwhile is kept and this write fails (OutputError), as in ``atomic_path``."""
    target = Path(target)
    parent = target.parent
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{_short(target.name)}.", suffix=".partial", dir=parent))
    except OSError as error:
        raise OutputError(f"cannot write in {parent}: {error.strerror or error}") from None
    # the extension in lower case: ITK writes "X.NHDR" as one attached file
    header = folder / (target.name[: -len(target.suffix)] + target.suffix.lower())
    try:
        yield header
        moves = [(path, parent / path.name) for path in sorted(folder.iterdir()) if path != header]
        moves.append((header, target))
        published: list[Path] = []
        set_aside: list[tuple[Path, Path]] = []
        try:
            for temp, final in moves:
                _apply_default_permissions(temp)
                if not replace:
                    if not link_new(temp, final):
                        raise OutputError(f"{final} was written by another run meanwhile; it is kept (pass "
                                          "--overwrite to replace it)")
                else:
                    if final.exists():
                        aside = folder / f".old.{len(set_aside)}"
                        os.replace(final, aside)
                        set_aside.append((aside, final))
                    os.replace(temp, final)
                published.append(final)
        except BaseException:
            for final in published:
                with contextlib.suppress(FileNotFoundError):
                    final.unlink()
            for aside, final in set_aside:
                os.replace(aside, final)
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_paths(targets: list[Path], private: tuple = ()) -> Iterator[list[Path]]:
    """Temporaries for files that belong together (a report's pages and its picture), moved into
    place only once the block has written them all: a failed write (a full disk) publishes none,
    and an earlier report stays whole until its replacement is ready. The moves themselves are
    renames within one folder, one after the other. ``private``: the targets that keep the
    writer's modes."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(target, private=target in private)) for target in targets]


def _temp_suffix(target: Path) -> str:
    """The extension a writer keys on, in lower case (ITK writes "X.MHA" as a detached X.mhd +
    X.zraw): the last two suffixes (".nii.gz"), or the last alone when they are long
    ("scan.acq-<200 characters>.nii")."""
    suffixes = [suffix.lower() for suffix in target.suffixes[-2:]]
    both = "".join(suffixes)
    return both if len(os.fsencode(both)) <= 32 else _short(suffixes[-1], 32)


def _short(name: str, size: int = 100) -> str:
    """At most ``size`` bytes of ``name`` (whole characters): temporaries named after an output
    of 230-255 bytes were longer than the file system allows, so that output was refused."""
    return os.fsencode(name)[:size].decode("utf-8", "ignore") if len(os.fsencode(name)) > size else name


def short_with_digest(name: str, size: int) -> str:
    """``name`` cut to ``size`` bytes (whole characters) and a 12-character digest of the whole
    name, so that two long names that start alike (BIDS runs) stay apart."""
    import hashlib

    return f"{_short(name, size)}.{hashlib.sha256(os.fsencode(name)).hexdigest()[:12]}"


def fitted_path(path: str | os.PathLike, suffix: str, what: str) -> Path:
    """``PATH`` + ``suffix`` (a file named after another, e.g. a record or a picture of an output),
    or, where that name is longer than its file system allows, the name's first 200 bytes, a
    digest of the whole and ``suffix``: the same for the same path, so a later run finds it. One
    that cannot fit even so is an OutputError naming the limit (check_name_fits)."""
    path = Path(path)
    plain = path.with_name(path.name + suffix)
    try:
        check_name_fits(plain, what)
        return plain
    except OutputError:
        short = path.with_name(short_with_digest(path.name, 200) + suffix)
    check_name_fits(short, what)
    return short


def partial_path(target: str | os.PathLike) -> Path:
    """The fixed hidden temporary ``.NAME.partial`` beside ``target`` (batch's: a rerun sweeps
    them). A NAME of more than 200 bytes is cut, with a digest of the whole so that two long
    names that start alike (BIDS runs) do not share one: a 249-byte DICOM file name failed."""
    target = Path(target)
    name = target.name
    if len(os.fsencode(name)) > 200:
        name = short_with_digest(name, 100)
    return target.with_name(f".{name}.partial")


def _publish_new(temp: Path, target: Path) -> None:
    """Move ``temp`` to ``target`` only if nothing is there (an empty folder counts as nothing):
    the check that the output did not exist was made before the work, and two runs started at
    once both passed it; the later one replaced the first one's output, both said written."""
    try:
        if temp.is_dir():
            with contextlib.suppress(OSError):
                target.rmdir()  # an empty folder only (Windows renames onto none)
            os.rename(temp, target)  # fails on a folder that is not empty, or a file
            return
        if link_new(temp, target):
            return
    except OSError as error:
        if not isinstance(error, (FileExistsError, IsADirectoryError, NotADirectoryError)) \
                and error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    raise OutputError(f"{target} was written by another run meanwhile; it is kept (pass --overwrite to "
                      "replace it)")


def link_new(temp: Path, target: Path) -> bool:
    """Move the file ``temp`` to ``target`` unless something is there (False, ``temp`` kept): of
    two runs that found ``target`` free, only one may put its file there (outputs, a new key).
    A hard link where the file system has them; else (FAT, some shares) the name is claimed by an
    exclusive create and ``temp`` renamed over the claim, which a reader may see empty for a moment.
    An open descriptor of ``temp`` is then one of ``target`` (a key is held before it is placed)."""
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError:  # no hard links here
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        os.replace(temp, target)
        return True
    os.unlink(temp)
    return True


def _replace_folder(new: Path, folder: Path) -> None:
    """Move ``new`` to ``folder``, the old folder set aside first and removed only once ``new``
    is in place (put back if the move fails)."""
    old = Path(tempfile.mkdtemp(prefix=f".{_short(folder.name)}.", suffix=".old", dir=folder.parent))
    os.replace(folder, old / folder.name)
    try:
        os.replace(new, folder)
    except BaseException:
        os.replace(old / folder.name, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _apply_default_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; outputs get the user's usual umask."""
    umask = os.umask(0)
    os.umask(umask)
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    for entry in entries:
        mode = 0o777 if entry.is_dir() else 0o666
        os.chmod(entry, mode & ~umask)
