"""Errors a user can act on. The CLI prints each as one line and exits with its code.

Anything else escaping the library is a bug and gets exit code 1 with a one-line message
(the traceback only with ``--debug``).
"""


class DeFacerError(Exception):
    """Base class: a problem with what the user gave us, not a bug."""

    exit_code = 1


class UsageError(DeFacerError):
    """The command was asked for something it cannot do as given (unknown feature, missing option)."""

    exit_code = 2


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
