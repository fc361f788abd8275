"""The benchmark scripts' one way out: a Markdown block printed, and written where asked
(``--markdown FILE``) for docs/benchmarks.md."""
from __future__ import annotations

from pathlib import Path


def publish(lines: list[str], markdown: Path | None) -> str:
    text = "\n".join(lines) + "\n"
    print(text)
    if markdown:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(text)
    return text
