"""Guess a volume's modality (MR, CT, PT or OT) when the caller does not say.

Evidence in order of trust: the DICOM Modality tag; the same tag as a JSON sidecar beside
the file carries it (dcm2niix writes ``"Modality": "PT"`` beside every NIfTI it converts,
and BIDS keeps the sidecar); a BIDS-style filename suffix or entity (``_ct``, ``_pet``,
``_T1w``...); then the values themselves: CT is the only head modality with a sizeable
fraction of voxels at or below -500 in physical units (the air at -1000 HU), and PET the one
whose inside is far hotter than its surface (``looks_like_uptake``: the brain takes up several
times the tracer the scalp does, where MR shows the scalp's fat as bright as the brain or
brighter). With no evidence the answer is MR, by far the commonest head volume. Without the
values' PET rule a PET converted to ``scan.nii.gz`` was defaced as MR, with no uptake brain
(IXI255's PET-like copy lost 62 reference-brain voxels, IXI211's 6).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from DeFacerLib.intensity import looks_like_hu
from DeFacerLib.volume import Volume

_DICOM_MODALITIES = {"MR": "MR", "CT": "CT", "PT": "PT", "NM": "PT"}
# BIDS's anatomical MR suffixes: every non-parametric one (UNIT1: MP2RAGE's uniform T1-weighted
# image) and the quantitative maps (an MP2RAGE T1map, an R2* map); batch.discover's too
BIDS_ANAT_IMAGE_SUFFIXES = ("T1w", "T2w", "FLAIR", "PD", "PDw", "T2starw", "T2star", "FLASH", "PDT2", "inplaneT1",
                            "inplaneT2", "angio", "MP2RAGE", "UNIT1", "MEGRE", "MESE", "VFA", "IRT1", "MPM", "MTS", "MTR")
BIDS_QUANTITATIVE_SUFFIXES = ("T1map", "T2map", "T2starmap", "R1map", "R2map", "R2starmap", "PDmap", "M0map", "S0map",
                              "MTRmap", "MTsat", "MTVmap", "MWFmap", "T1rho", "Chimap")
# a GRE field map's magnitude images (fmap/): the whole head at fMRI resolution, face included
BIDS_FIELDMAP_MAGNITUDE_SUFFIXES = ("magnitude", "magnitude1", "magnitude2")
_NAME_HINTS = (
    ("CT", ("ct", "cect", "cta")),
    ("PT", ("pet", "pt", "fdg", "suv")),
    # a name is evidence before the values: a 7 T image brighter at its centre, or a T1 map, is not
    # left to looks_like_uptake when BIDS names it
    ("MR", ("t1", "t2", "mprage", "bold", "dwi", "mri", "mr", "swi",
            *(suffix.lower() for suffix in BIDS_ANAT_IMAGE_SUFFIXES + BIDS_QUANTITATIVE_SUFFIXES
              + BIDS_FIELDMAP_MAGNITUDE_SUFFIXES))),
)
_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
_SIDECAR_MAX_BYTES = 1_000_000  # dcm2niix's sidecars are a few kB; a larger .json is something else
STATED_MODALITIES = ("MR", "CT", "PT")  # what a user may state (--modality): a head volume's kinds
# looks_like_uptake: the head's core (deeper than UPTAKE_CORE_MM) over its surface (the outer
# UPTAKE_SHELL_MM), median over median, on a grid of about UPTAKE_GRID_MM, the head being the
# largest piece above UPTAKE_HEAD_FRACTION of the 99th percentile. Measured (2026-12-07): 0.85-2.20
# on 33 MR heads (the 27 IXI T1s, T1 and T2 heads, an MGZ, two DICOM T1 series), 4.58-4.94 on
# PET-like copies of 9 IXI heads (brain 4 times the soft tissue; FDG's ratio is 4-8), 2.80-3.04
# with the brain 2 times; the cut lies between MR's highest and PET's lowest (geometric mean 3.17)
UPTAKE_CORE_OVER_SHELL = 3.2
UPTAKE_CORE_MM, UPTAKE_SHELL_MM, UPTAKE_GRID_MM, UPTAKE_HEAD_FRACTION = 30.0, 8.0, 4.0, 0.1


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


def modality_from_values(values: np.ndarray, volume: Volume | None = None) -> tuple[str | None, str]:
    """('CT', why) when a sizeable fraction of (physical, possibly subsampled) voxels sit at air
    HU; ('PT', why) when ``volume`` (whose ``values`` they are) looks like an uptake image;
    else (None, "")."""
    sample = np.asarray(values)
    if sample.size == 0:
        return None, ""
    if looks_like_hu(sample):
        return "CT", "from its values: air at -1000 HU"
    contrast = uptake_contrast(volume) if volume is not None else None
    if contrast is not None and contrast >= UPTAKE_CORE_OVER_SHELL:
        return "PT", f"from its values: its core {contrast:.1f} times as bright as its surface"
    return None, ""


def looks_like_uptake(volume: Volume) -> bool:
    """Whether the head's core is UPTAKE_CORE_OVER_SHELL times as bright as its surface or more:
    PET's brain against its scalp, never MR's (numbers at UPTAKE_CORE_OVER_SHELL)."""
    contrast = uptake_contrast(volume)
    return contrast is not None and contrast >= UPTAKE_CORE_OVER_SHELL


def uptake_contrast(volume: Volume) -> float | None:
    """The head's core over its surface (median values; UPTAKE_* above); None where there is no
    head as thick as a head, or its surface is not above zero. A 4D volume is judged on its
    frames' mean (a dynamic PET's first frame may be blank)."""
    from scipy import ndimage as ndi

    spacing = np.asarray(volume.spacing_mm, dtype=float)
    step = np.maximum(1, np.rint(UPTAKE_GRID_MM / spacing)).astype(int)
    grid = volume.array[::step[0], ::step[1], ::step[2], ...]
    values = grid.mean(axis=3, dtype=np.float32) if grid.ndim == 4 else grid.astype(np.float32)
    values = np.nan_to_num(values * np.float32(volume.slope) + np.float32(volume.intercept))
    pieces, count = ndi.label(values > UPTAKE_HEAD_FRACTION * np.percentile(values, 99))
    if count == 0:
        return None
    head = ndi.binary_fill_holes(pieces == np.argmax(np.bincount(pieces.ravel())[1:]) + 1)
    depth_mm = ndi.distance_transform_edt(head, sampling=spacing * step)
    core, shell = values[depth_mm >= UPTAKE_CORE_MM], values[head & (depth_mm <= UPTAKE_SHELL_MM)]
    if core.size == 0 or shell.size == 0:
        return None
    surface = float(np.median(shell))
    return float(np.median(core)) / surface if surface > 0 else None


def stated_modality(dicom_tag=None, path: str | Path | None = None, *, other_names=()) -> str | None:
    """What a volume's source states, in order of trust: the DICOM Modality tag, the JSON sidecar
    beside ``path``, ``path``'s name, then ``other_names`` (a Slicer node's own name); None when
    none says. The command line, batch, ``info`` and the Slicer module all ask this one order."""
    return stated_modality_with_evidence(dicom_tag, path, other_names=other_names)[0]


def stated_modality_with_evidence(dicom_tag=None, path: str | Path | None = None, *,
                                  other_names=()) -> tuple[str | None, str]:
    """``stated_modality`` and what stated it ("from its DICOM Modality", ...; "" when nothing did)."""
    modality = modality_from_dicom(dicom_tag)
    if modality:
        return modality, "from its DICOM Modality"
    modality = modality_from_sidecar(path)  # a file read: only when the tag said nothing
    if modality:
        return modality, "from its JSON sidecar"
    for name in (path, *other_names):
        modality = modality_from_name(name)
        if modality:
            return modality, "from its name"
    return None, ""


def guess_modality(volume_or_array: Volume | np.ndarray, path: str | Path | None = None) -> str:
    """MR/CT/PT/OT as the source states it (``stated_modality``), else from the intensities (an
    array without its grid: CT only, the PET rule needs the voxel size)."""
    return guess_modality_with_evidence(volume_or_array, path)[0]


def guess_modality_with_evidence(volume_or_array: Volume | np.ndarray,
                                 path: str | Path | None = None) -> tuple[str, str]:
    """``guess_modality`` and what it rests on, for a report: "from its name", "from its values:
    ...", or NO_EVIDENCE where nothing said and MR is the default."""
    volume = volume_or_array if isinstance(volume_or_array, Volume) else None
    tag = volume.source.extra.get("dicom_modality") if volume is not None and volume.source else None
    if path is None and volume is not None and volume.source is not None:
        path = volume.source.path
    stated, evidence = stated_modality_with_evidence(tag, path)
    if stated:
        return stated, evidence
    if volume is not None:
        sample = volume.array[::2, ::2, ::2, ...].astype(np.float32) * np.float32(volume.slope) + np.float32(volume.intercept)
    else:
        sample = np.asarray(volume_or_array)[::2, ::2, ::2, ...].astype(np.float32)
    found, evidence = modality_from_values(sample, volume)
    return (found, evidence) if found else ("MR", NO_EVIDENCE)


NO_EVIDENCE = "the default: nothing says which"
STATED_BY_CALLER = "stated by the caller: --modality"


def state_modality(volume: Volume, modality: str) -> None:
    """The caller's --modality over what the source said or the values suggested: ``volume`` is
    ``modality``, and its evidence says who said so (the deface record, ``qa``'s report)."""
    volume.modality = modality
    if volume.source is not None:
        volume.source.extra["modality_from"] = STATED_BY_CALLER
