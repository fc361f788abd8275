"""Progress on the terminal (rich), as the plain ``progress(message, fraction)`` callback
that library functions accept."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

STDERR = Console(stderr=True)


@contextlib.contextmanager
def progress_callback(title: str, quiet: bool = False) -> Iterator:
    if quiet or not sys.stderr.isatty():
        yield lambda message, fraction: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"), TimeElapsedColumn())
    with Progress(*columns, console=STDERR, transient=True) as bar:
        task = bar.add_task(title, total=1.0, step="")

        def update(message: str, fraction: float) -> None:
            bar.update(task, completed=fraction, step=message)

        yield update
