"""Atomic outputs: write to a temporary sibling, rename into place only on success.

A crash, an error or Ctrl-C therefore never leaves a partial output where the user
asked for one, and an existing file is replaced in one step (``os.replace``).
"""
from __future__ import annotations

import contextlib
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
    target = Path(output_path).resolve()
    if input_path:
        source = Path(input_path).resolve()
        if source == target:
            raise OutputError(f"output {output_path} is the input; choose another path (inputs are never modified)")
        if source.is_dir() and source in target.parents:
            raise OutputError(f"output {output_path} is inside the input folder {input_path}; choose another path")
    if target.exists() and not overwrite:
        raise OutputError(f"output {output_path} exists; pass --overwrite to replace it")
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable")
    return target


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it to ``target``.

    With ``directory=True`` the temporary path is a fresh folder (for DICOM series).
    The temporary name keeps the target's suffixes so that format writers keyed on the
    extension (".nii.gz", ".mgz", ".nrrd") behave as for the real name.
    """
    target = Path(target)
    parent = target.parent
    try:
        if directory:
            temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=parent))
        else:
            suffix = "".join(target.suffixes) or ""
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.partial.", suffix=suffix, dir=parent)
            os.close(handle)
            temp = Path(name)
    except OSError as error:
        raise OutputError(f"cannot write in {parent}: {error.strerror or error}") from None
    try:
        yield temp
        _apply_default_permissions(temp)
        if directory and target.is_dir():
            shutil.rmtree(target)
        os.replace(temp, target)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        raise


def _apply_default_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; outputs get the user's usual umask."""
    umask = os.umask(0)
    os.umask(umask)
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    for entry in entries:
        mode = 0o777 if entry.is_dir() else 0o666
        os.chmod(entry, mode & ~umask)
