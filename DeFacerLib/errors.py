"""Errors a user can act on. The CLI prints each as one line and exits with its code.

Anything else escaping the library is a bug and gets exit code 1 with a one-line message
(the traceback only with ``--debug``).
"""
import importlib


class DeFacerError(Exception):
    """Base class: a problem with what the user gave us, not a bug."""

    exit_code = 1


class UsageError(DeFacerError):
    """The command was asked for something it cannot do as given (unknown feature, missing option)."""

    exit_code = 2


# pyproject.toml's optional extras -> the modules they install that the commands import. A command
# run without its extra names the extra to install (exit 2, like backend='keras' without [train]),
# not "internal error ... report it" (exit 1): the core wheel installs none of these.
EXTRA_MODULES = {
    "qa": ("vtk", "vtkmodules", "cv2", "PIL"),
    "photo": ("cv2", "PIL", "imageio_ffmpeg"),
    "batch": ("dask", "distributed", "bokeh"),
}


def missing_extra(error: BaseException, command: str) -> UsageError | None:
    """The UsageError that names the extra installing the module ``error`` found missing (the
    command's own extra where it has one, so `defacer photo` without cv2 says [photo], `defacer
    qa` says [qa]); None when the module is no extra's (a bug, or a broken install)."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    module = error.name.split(".")[0]
    extras = [extra for extra, modules in EXTRA_MODULES.items() if module in modules]
    if not extras:
        return None
    return _extra_needed(f"defacer {command}", command if command in extras else extras[0], module)


def require_extra(module: str, extra: str, asked_by: str) -> None:
    """Import ``module`` now, or fail in one line naming ``extra``: called before anything is
    written, where the import would otherwise come once output folders (or a new key) exist. A
    module of the package's own found missing is a broken install, not the extra, and is raised."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in EXTRA_MODULES[extra]:
            raise
        raise _extra_needed(asked_by, extra, missing) from None


def _extra_needed(asked_by: str, extra: str, module: str) -> UsageError:
    return UsageError(f"{asked_by} needs the {extra} extra ({module} is not installed): pip install 'defacer[{extra}]'")


def check_choices(what: str, values, choices, error: type[DeFacerError] = UsageError, where: str = "") -> None:
    """Refuse, in one line, any of ``values`` that is not one of ``choices``: "unknown feature
    'chin'; choose from eyes, nose, mouth, ears". The one wording for every name with a fixed set
    of choices (options, API arguments); ``where`` goes first (a file's name)."""
    unknown = [value for value in values if value not in choices]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise error(f"{where}unknown {what}{plural} {', '.join(map(repr, unknown))}; "
                    f"choose from {', '.join(map(str, choices))}")


def check_choice(what: str, value, choices, error: type[DeFacerError] = UsageError) -> None:
    """``check_choices`` for one value."""
    check_choices(what, (value,), choices, error)


class InputError(DeFacerError):
    """The input cannot be read or is not what the operation needs (corrupt, 2D, no head)."""

    exit_code = 3


class NoHeadFound(InputError):
    """No head in the volume (uniform, no bright object against a dark background, too small)."""


class FaceNotFound(InputError):
    """A head, but no face to remove (the eyes and the nose were not both found): defaced
    already, cut above the nose, skull-stripped, or a contrast the model does not know."""


class OutputError(DeFacerError):
    """The output cannot be written where asked (exists, same as input, read-only)."""

    exit_code = 4


class GuaranteeError(DeFacerError):
    """A safety guarantee would be broken (e.g. a protected voxel would change): nothing is written."""

    exit_code = 5


class FaceStillRecognisable(DeFacerError):
    """The re-identification check found a face that still matches the original."""

    exit_code = 6


EXIT_CODES = {
    0: "success",
    1: "internal error (a bug: please report it)",
    2: "bad command-line usage",
    InputError.exit_code: "input cannot be read or is not suitable",
    OutputError.exit_code: "output cannot be written",
    GuaranteeError.exit_code: "a safety guarantee would be broken; nothing written",
    FaceStillRecognisable.exit_code: "QA verdict FAIL: a face is still recognisable",
    130: "interrupted (Ctrl-C); what was being written is removed",
    143: "terminated (SIGTERM, e.g. a scheduler's time limit); what was being written is removed",
}
