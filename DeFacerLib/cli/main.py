"""The `defacer` command line: argument parsing, progress, one-line errors, exit codes.

All work is done by library functions; this module only wires them to the terminal.
Only the command being run gets its options defined, so ``defacer deface`` never imports
the photo command's OpenCV stack (about 1 s of start-up).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings

from DeFacerLib import __version__, sharing_warnings
from DeFacerLib.errors import EXIT_CODES, DeFacerError, missing_extra
from DeFacerLib.interrupts import Terminated, exit_code_of, sigterm_as_interrupt

EPILOG = "exit codes:\n" + "\n".join(f"  {code:<3}  {meaning}" for code, meaning in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage mistakes on one line (exit 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"defacer: error: {message} (see {self.prog} --help)\n")


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing but errors and safety warnings (both on standard error)")
    common.add_argument("--json", action="store_true", help="print the result as JSON on standard output")
    common.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    return common


# what each command's result may hold that the user must act on before sharing (sharing_warnings.py)
SAFETY_WARNINGS = {"deface": sharing_warnings.for_deface, "scrub": sharing_warnings.for_scrub, "qa": sharing_warnings.for_qa,
                   "batch": sharing_warnings.for_batch, "photo": sharing_warnings.for_photo}
COMMAND_MODULES = ("info_command", "deface_command", "demo_command", "scrub_command", "qa_command", "batch_command",
                   "photo_command")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``command`` (the one about to run, or "" for none), the other
    commands are listed by name and help only, so that their option definitions (photo's
    pull in OpenCV) are not imported for a run that does not use them."""
    import importlib

    parser = _Parser(
        prog="defacer",
        description="Remove what identifies a patient's face from head volumes, and prove it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"defacer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _common_options()
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"DeFacerLib.cli.{name}")
        sub = commands.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.__doc__,
            parents=[common],
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if command is None or command == module.NAME:
            module.add_arguments(sub)
        sub.set_defaults(run=module.run, safety_warnings=SAFETY_WARNINGS.get(module.NAME))
    return parser


def _command_in(argv: list[str]) -> str:
    """The sub-command named on the command line ("" when none: top-level help or version)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return ""


# OpenCV and its FFmpeg print their own warnings on stderr (a camera that is not there, a video
# that is not one), around our one-line error; set before cv2 is imported, and a user's own
# setting wins.
QUIET_NATIVE_LOGS = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "-8"}


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None  # `defacer` itself, not a caller's run in its own process (tests, Slicer)
    argv = sys.argv[1:] if argv is None else list(argv)
    with sigterm_as_interrupt():
        try:
            code = _main(argv)
        except KeyboardInterrupt as stop:  # also while the command's modules load (photo's: ~1 s)
            _print_error(f"{'terminated (SIGTERM)' if isinstance(stop, Terminated) else 'interrupted'}; no output was written")
            code = exit_code_of(stop)
    if as_program:
        _keep_the_exit_code()
    return code


def _keep_the_exit_code() -> None:
    """The run is over and has said how it went. A Ctrl-C or SIGTERM while Python then shuts down
    (0.2-0.5 s: VTK, onnxruntime, Dask unloading) killed the process with exit 130 or 143 and no
    message, over outputs that were complete: a job script saw a failure, and its rerun was
    refused ("output exists"). From here on they are ignored; SIGKILL still ends a stuck exit."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN)


def _main(argv: list[str]) -> int:
    if "--debug" not in argv:
        for name, value in QUIET_NATIVE_LOGS.items():
            os.environ.setdefault(name, value)
    parser = build_parser(_command_in(argv))
    args, extras = parser.parse_known_args(argv)
    if extras:  # what parse_args does, but naming the command's own help, and where --json goes
        _refuse_unrecognized(parser, getattr(args, "command", None), extras, argv)
    if not getattr(args, "run", None):  # a usage error: one line on stderr, nothing on stdout
        parser.error(f"give a command: {', '.join(_commands(parser))}")
    started = time.perf_counter()
    try:
        with _library_warnings_in_one_line(args):
            result = args.run(args)
    except DeFacerError as error:
        # a failure that still has a report (qa's FAIL verdict, scrub's or batch's failed files):
        # --json gives it on stdout, beside the one-line error and the exit code
        report = getattr(error, "result", None)
        if report is not None:
            _report_safety_warnings(args, report)
        if args.json and report is not None:
            _print_json(report, started)
        _print_error(str(error))
        return error.exit_code
    except Exception as error:  # a bug: keep the promise of one line, unless debugging
        stop = _interruption_in(error)
        if stop is not None:
            raise stop from None
        extra = missing_extra(error, args.command)
        if extra is not None:  # the core wheel without the command's extra: not a bug
            _print_error(str(extra))
            return extra.exit_code
        if args.debug:
            raise
        _print_error(f"internal error ({type(error).__name__}: {error}); rerun with --debug and report it")
        return 1
    if result is not None:
        _report_safety_warnings(args, result)
    if args.json and result is not None:
        _print_json(result, started)
    return 0


def _interruption_in(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind an error, if any: one that lands while a C extension loads
    (onnxruntime, SciPy's FFT: pybind11) comes out as ``ImportError: initialization failed``."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _report_safety_warnings(args, result: dict) -> None:
    """What the user must act on before sharing (PHI in paths, burned-in text, a face still
    found, a cosmetic method): one ``defacer: warning:`` line each on stderr, under ``-q`` too,
    so that a quiet script's log still holds them. Under --json they are in the JSON instead."""
    if args.json or not args.safety_warnings:
        return
    for line in args.safety_warnings(result):
        sys.stderr.write(f"defacer: warning: {' '.join(line.split())}\n")


def _print_json(result: dict, started: float) -> None:
    """The --json report on stdout. A command that timed its own work (scrub, batch: their
    ``seconds`` is also in their summary.json, console line and files_per_second) keeps its
    figure; the others get the command's wall time."""
    if "seconds" not in result:
        result = dict(result, seconds=round(time.perf_counter() - started, 3))
    try:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped (`| head`): the work is done, say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _refuse_unrecognized(parser: argparse.ArgumentParser, command: str | None, extras: list[str], argv: list[str]):
    """Exit 2 for arguments no parser took, pointing at the command's own --help (argparse
    pointed at the top-level one, which lists no command's options), and saying that the
    common options go after the command (`defacer --json info x` is refused, `defacer info x
    --json` works)."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    common = {option for action in _common_options()._actions for option in action.option_strings}
    before = argv[:argv.index(command)] if command in argv else []
    misplaced = [word for word in extras if word in common and word in before]
    if misplaced:
        message += f"; {', '.join(misplaced)} goes after the command name (defacer {command} ... {misplaced[0]})"
    (_commands(parser).get(command) or parser).error(message)


def _commands(parser: argparse.ArgumentParser) -> dict:
    """{command name: its parser}."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@contextlib.contextmanager
def _library_warnings_in_one_line(args):
    """A library's own warning (pydicom's "Unknown encoding 'ISO_IR 999' - using default encoding")
    came as Python's two lines, its file and source line, around the tool's one-line messages: now
    one ``defacer: warning:`` line, none under --quiet (it is no safety warning); --debug keeps
    Python's."""
    if args.debug:
        yield
        return

    def show(message, *_details, **_more) -> None:
        if not args.quiet:
            sys.stderr.write(f"defacer: warning: {' '.join(str(message).split())}\n")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _print_error(message: str) -> None:
    one_line = " ".join(str(message).split())
    sys.stderr.write(f"defacer: error: {one_line}\n")


def folder_path(text: str) -> str:
    """argparse type for output folders (--out, --qa): an empty one (an unset "$OUT") is the
    current folder, where demo and qa wrote their files without a word."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a folder path (use . for the current folder)")
    return home_path(text)


def input_path(text: str) -> str:
    """argparse type for inputs (files, folders, label maps): an empty one (an unset "$IN") was
    read as the current folder, so `scrub "" out` scrubbed whatever tree the shell stood in."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a file or folder path (use . for the current folder)")
    return home_path(text)


def home_path(text: str) -> str:
    """argparse type for every path (input_path and folder_path use it too): a leading ~ is the
    home folder. The shell leaves it as it is after `=` (`--out=~/x`) and in quotes, and a
    folder named "~" was made in the current one, which `rm -rf ~` then takes for the home."""
    return os.path.expanduser(text) if text.startswith("~") else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
