"""Guess a volume's modality (MR, CT, PT or OT) when the caller does not say.

Evidence in order of trust: the DICOM Modality tag; a BIDS-style filename suffix or
entity (``_ct``, ``_pet``, ``_T1w``...); then the values themselves (CT is the only head
modality with a sizeable fraction of voxels at or below -500 in physical units, the air
at -1000 HU). With no evidence the answer is MR, by far the commonest head volume.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from DeFacerLib.intensity import looks_like_hu
from DeFacerLib.volume import Volume

_DICOM_MODALITIES = {"MR": "MR", "CT": "CT", "PT": "PT", "NM": "PT"}
_NAME_HINTS = (
    ("CT", ("ct", "cect", "cta")),
    ("PT", ("pet", "pt", "fdg", "suv")),
    ("MR", ("t1w", "t2w", "t1", "t2", "flair", "pd", "pdw", "t2star", "mprage", "bold", "dwi", "mri", "mr", "swi", "angio")),
)
_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def modality_from_dicom(tag) -> str | None:
    """The modality a DICOM Modality value (0008,0060) states: MR, CT or PT (NM counts as PT)."""
    return _DICOM_MODALITIES.get(str(tag or "").strip().upper())


def modality_from_name(path: str | Path | None) -> str | None:
    """The modality a BIDS-like filename states, e.g. 'sub-01_ct.nii.gz' -> 'CT'."""
    if path is None:
        return None
    name = Path(path).name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    tokens = [token for token in re.split(r"[_\-.\s]+", name) if token]
    for token in reversed(tokens):  # the BIDS suffix comes last and is the most specific
        for modality, hints in _NAME_HINTS:
            if token in hints:
                return modality
    return None


def modality_from_values(values: np.ndarray) -> str | None:
    """'CT' when a sizeable fraction of (physical, possibly subsampled) voxels sit at air HU."""
    sample = np.asarray(values)
    if sample.size == 0:
        return None
    return "CT" if looks_like_hu(sample) else None


def guess_modality(volume_or_array: Volume | np.ndarray, path: str | Path | None = None) -> str:
    """MR/CT/PT/OT from the DICOM tag, then the filename, then the intensities."""
    if isinstance(volume_or_array, Volume):
        volume = volume_or_array
        stated = modality_from_dicom(volume.source.extra.get("dicom_modality") if volume.source else None)
        if stated:
            return stated
        if path is None and volume.source is not None:
            path = volume.source.path
        sample = volume.array[::2, ::2, ::2, ...].astype(np.float32) * np.float32(volume.slope) + np.float32(volume.intercept)
    else:
        sample = np.asarray(volume_or_array)[::2, ::2, ::2, ...].astype(np.float32)
    return modality_from_name(path) or modality_from_values(sample) or "MR"
