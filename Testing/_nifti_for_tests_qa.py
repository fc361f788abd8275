"""Private reader for the QA render tests, until DeFacerLib.io lands (nibabel, NIfTI and MGZ).

Keeps the stored values and the slope/intercept, and converts nibabel's RAS affine to the
LPS direction/origin/spacing of a ``Volume``.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from DeFacerLib.volume import LPS_FROM_RAS, SourceInfo, Volume


def read_head(path: Path, modality: str = "MR") -> Volume:
    image = nib.load(str(path))
    dataobj = image.dataobj
    array = np.asarray(dataobj.get_unscaled()) if hasattr(dataobj, "get_unscaled") else np.asarray(dataobj)
    slope = getattr(dataobj, "slope", 1.0)
    intercept = getattr(dataobj, "inter", 0.0)
    slope = 1.0 if slope is None or not np.isfinite(slope) else float(slope)
    intercept = 0.0 if intercept is None or not np.isfinite(intercept) else float(intercept)
    affine_lps = LPS_FROM_RAS @ image.affine
    linear = affine_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    return Volume(
        array=array,
        spacing_mm=spacing,
        origin_mm=affine_lps[:3, 3],
        direction=linear / spacing[None, :],
        modality=modality,
        slope=slope,
        intercept=intercept,
        source=SourceInfo(format="mgz" if str(path).endswith(".mgz") else "nifti", path=str(path)),
    )
