"""Guess a volume's modality (MR, CT, PT or OT) when the caller does not say.

Evidence in order of trust: the DICOM Modality tag; the same tag as a JSON sidecar beside
the file carries it (dcm2niix writes ``"Modality": "PT"`` beside every NIfTI it converts,
and BIDS keeps the sidecar); a BIDS-style filename suffix or entity (``_ct``, ``_pet``,
``_T1w``...); then the values themselves (CT is the only head modality with a sizeable
fraction of voxels at or below -500 in physical units, the air at -1000 HU). With no
evidence the answer is MR, by far the commonest head volume: a PET converted to
``scan.nii.gz`` was defaced as MR, with no uptake brain (IXI255's PET-like copy lost 62
reference-brain voxels), unless its sidecar says PT.
"""
from __future__ import annotations

import json
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
_SIDECAR_MAX_BYTES = 1_000_000  # dcm2niix's sidecars are a few kB; a larger .json is something else
STATED_MODALITIES = ("MR", "CT", "PT")  # what a user may state (--modality): a head volume's kinds


def modality_from_dicom(tag) -> str | None:
    """The modality a DICOM Modality value (0008,0060) states: MR, CT or PT (NM counts as PT)."""
    return _DICOM_MODALITIES.get(str(tag or "").strip().upper())


def _stem(name: str) -> str:
    """The file name less its volume suffix ('sub-01_pet.nii.gz' -> 'sub-01_pet')."""
    lower = name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def modality_from_sidecar(path: str | Path | None) -> str | None:
    """The modality the JSON sidecar beside a volume file states ('scan.nii.gz' -> 'scan.json',
    its "Modality": MR, CT or PT, as dcm2niix and BIDS write it); None without one, or when it is
    unreadable or says nothing of use (the rest of the evidence then decides)."""
    if path is None:
        return None
    path = Path(path)
    sidecar = path.with_name(_stem(path.name) + ".json")
    try:
        if sidecar == path or not sidecar.is_file() or sidecar.stat().st_size > _SIDECAR_MAX_BYTES:
            return None
        stated = json.loads(sidecar.read_text(encoding="utf-8-sig"))  # with a byte-order mark too
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return modality_from_dicom(stated.get("Modality")) if isinstance(stated, dict) else None


def modality_from_name(path: str | Path | None) -> str | None:
    """The modality a BIDS-like filename states, e.g. 'sub-01_ct.nii.gz' -> 'CT'."""
    if path is None:
        return None
    name = _stem(Path(path).name).lower()
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


def stated_modality(dicom_tag=None, path: str | Path | None = None, *, other_names=()) -> str | None:
    """What a volume's source states, in order of trust: the DICOM Modality tag, the JSON sidecar
    beside ``path``, ``path``'s name, then ``other_names`` (a Slicer node's own name); None when
    none says. The command line, batch, ``info`` and the Slicer module all ask this one order."""
    stated = modality_from_dicom(dicom_tag) or modality_from_sidecar(path) or modality_from_name(path)
    for name in other_names:
        stated = stated or modality_from_name(name)
    return stated


def guess_modality(volume_or_array: Volume | np.ndarray, path: str | Path | None = None) -> str:
    """MR/CT/PT/OT as the source states it (``stated_modality``), else from the intensities."""
    if isinstance(volume_or_array, Volume):
        volume = volume_or_array
        tag = volume.source.extra.get("dicom_modality") if volume.source else None
        if path is None and volume.source is not None:
            path = volume.source.path
        stated = stated_modality(tag, path)
        if stated:
            return stated
        sample = volume.array[::2, ::2, ::2, ...].astype(np.float32) * np.float32(volume.slope) + np.float32(volume.intercept)
    else:
        stated = stated_modality(None, path)
        if stated:
            return stated
        sample = np.asarray(volume_or_array)[::2, ::2, ::2, ...].astype(np.float32)
    return modality_from_values(sample) or "MR"
