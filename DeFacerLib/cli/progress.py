"""Progress on the terminal (rich), as the plain ``progress(message, fraction)`` callback
that library functions accept, and the console every command prints its summary with.

rich is imported only when a bar is drawn (a quiet or piped run never draws one), and
``STDERR``, the shared stderr console, is made on first use.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

_CONSOLE = None


def __getattr__(name: str):
    if name == "STDERR":
        global _CONSOLE
        if _CONSOLE is None:
            from rich.console import Console

            _CONSOLE = Console(stderr=True, emoji=False)
        return _CONSOLE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def summary_console():
    """A rich console on stdout that prints paths as they are: no emoji for a ":cd:" in a folder's
    name, and no line break inside a long path when the output goes to a log (80 columns)."""
    from rich.console import Console

    return Console(emoji=False, soft_wrap=True)


@contextlib.contextmanager
def progress_callback(title: str, quiet: bool = False) -> Iterator:
    if quiet or not sys.stderr.isatty():
        yield lambda message, fraction: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"), TimeElapsedColumn())
    with Progress(*columns, console=__getattr__("STDERR"), transient=True) as bar:
        task = bar.add_task(title, total=1.0, step="")

        def update(message: str, fraction: float) -> None:
            bar.update(task, completed=fraction, step=message)

        yield update
