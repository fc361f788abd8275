"""One PNG that shows a head before and after defacing, view by view, for a person to check."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from DeFacerLib.errors import OutputError
from DeFacerLib.io.atomic import atomic_path

_MARGIN_PX = 8
_LABEL_WIDTH_PX = 70
_FONT_SIZE = 16
_TEXT_RGB = (235, 235, 235)
_CANVAS_RGB = (24, 24, 24)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable bundled font
    except TypeError:
        return ImageFont.load_default()


def before_after_figure(
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Write a two-row PNG (before above, after below), one labelled column per view.

    Views are taken in ``before``'s order and must also be in ``after``; images of a row
    may differ in size (each sits in a cell as large as the largest). Written atomically.
    """
    from PIL import Image, ImageDraw

    views = [name for name in before if name in after]
    if not views:
        raise ValueError("before and after share no view to compare")
    rows = {"before": before, "after": after}
    images = {row: [np.asarray(by_view[v], dtype=np.uint8) for v in views] for row, by_view in rows.items()}
    cell_h = max(image.shape[0] for row in images.values() for image in row)
    cell_w = max(image.shape[1] for row in images.values() for image in row)
    font = _font(_FONT_SIZE)
    title_h = (_FONT_SIZE + 2 * _MARGIN_PX) if title else 0
    header_h = _FONT_SIZE + 2 * _MARGIN_PX
    width = _LABEL_WIDTH_PX + len(views) * (cell_w + _MARGIN_PX) + _MARGIN_PX
    height = title_h + header_h + 2 * (cell_h + _MARGIN_PX) + _MARGIN_PX

    canvas = Image.new("RGB", (width, height), _CANVAS_RGB)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_MARGIN_PX, _MARGIN_PX), title, fill=_TEXT_RGB, font=font)
    for column, view in enumerate(views):
        x = _LABEL_WIDTH_PX + column * (cell_w + _MARGIN_PX)
        draw.text((x + cell_w // 2, title_h + header_h // 2), view.replace("_", " "), fill=_TEXT_RGB, font=font, anchor="mm")
    for row_index, row in enumerate(("before", "after")):
        y = title_h + header_h + row_index * (cell_h + _MARGIN_PX)
        draw.text((_MARGIN_PX, y + cell_h // 2), row, fill=_TEXT_RGB, font=font, anchor="lm")
        for column, image in enumerate(images[row]):
            x = _LABEL_WIDTH_PX + column * (cell_w + _MARGIN_PX)
            tile = Image.fromarray(image[..., :3] if image.ndim == 3 else image).convert("RGB")
            canvas.paste(tile, (x + (cell_w - tile.width) // 2, y + (cell_h - tile.height) // 2))

    path = Path(path)
    try:  # private (0600, as the audit's mappings): the top row is the original, identifying face
        with atomic_path(path, private=True) as temporary:
            canvas.save(temporary, format="PNG")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    return path
