"""SIGTERM handled as Ctrl-C is: one place for the CLI and the batch runner.

``kill``, a scheduler's time limit (SLURM sends SIGTERM, then SIGKILL after its KillWait) or a
container stopping would otherwise end the process at once, leaving a hidden partial output
beside its target and a batch run without its summary. Raised as an interrupt instead, every
cleanup that Ctrl-C runs runs for it too; the exit code says which it was.
"""
from __future__ import annotations

import contextlib
import signal
import threading

CTRL_C_EXIT = 130  # 128 + SIGINT, as a shell reports it
SIGTERM_EXIT = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread while ``sigterm_as_interrupt`` is active."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises Terminated once; a second one is ignored so that the cleanup finishes.
    Off the main thread (a library caller's worker thread) nothing changes: signals can be set
    in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code_of(stop: BaseException) -> int:
    return SIGTERM_EXIT if isinstance(stop, Terminated) else CTRL_C_EXIT


def stopped_by(stop: BaseException) -> str:
    """How a message says the run ended."""
    return "interrupted by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
