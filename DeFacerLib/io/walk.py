"""Walk an input folder tree the one way every DeFacer command does (scrub's DICOM tree,
batch's dataset): symbolic links to folders followed, a folder that cannot be read refused.

Why: an archive or a dataset assembled from links lost what the links held without a word
(os.walk does not follow them: `defacer scrub` published 2 of 11 files, exit 0), and a folder
the user cannot read was passed over the same way; a de-identification run that says it is
done must have seen everything it was given.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

from DeFacerLib.errors import InputError


def walk_folders(root: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk of ``root`` (folder, sub-folders, file names), both lists sorted; links to folders
    are followed, but not into a folder that holds them (a link loop ends there); the caller may
    prune the sub-folders in place, as with os.walk. A folder it cannot list is an InputError
    naming it (raised when the walk reaches it: before anything is written, when the caller
    lists the whole tree first)."""
    top = os.fspath(root)
    for folder, dirs, names in os.walk(top, followlinks=True, onerror=_refuse):
        if _inside_itself(folder, top):
            dirs[:] = []
            continue
        dirs.sort()
        names.sort()
        yield folder, dirs, names


def _refuse(error: OSError) -> None:
    reason = error.strerror or type(error).__name__
    raise InputError(f"cannot read the folder {error.filename} ({reason}); nothing was written: "
                     "give DeFacer access to every folder of the input, or leave that folder out")


def _inside_itself(folder: str, top: str) -> bool:
    """``folder`` is, through a link, one of the folders above it on its own path from
    ``top``: walking into it would never end."""
    real = os.path.realpath(folder)
    above = folder
    while above != top:
        parent = os.path.dirname(above)
        if parent == above:
            break
        above = parent
        if os.path.realpath(above) == real:
            return True
    return False
