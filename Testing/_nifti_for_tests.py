"""Small readers the head-geometry tests share, on top of the real ``io.read_volume``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from DeFacerLib.io import read_volume as _read_volume
from DeFacerLib.volume import Volume


def read_volume(path: Path | str, modality: str | None = None) -> Volume:
    volume = _read_volume(path)
    if modality is not None:
        volume.modality = modality
    return volume


def read_labels(path: Path | str) -> np.ndarray:
    return np.asarray(_read_volume(path).array)
