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


def featureless_blob() -> Volume:
    """A smooth ellipsoid of tissue the size of a head, with noise: a volume with no face."""
    shape = (90, 110, 100)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    inside = ((i - 45) / 38) ** 2 + ((j - 55) / 48) ** 2 + ((k - 50) / 42) ** 2 <= 1
    noise = np.random.default_rng(0).normal(0, 5, shape)
    return Volume((np.where(inside, 400, 0) + noise).astype(np.int16), [2, 2, 2], [0, 0, 0], np.eye(3))
