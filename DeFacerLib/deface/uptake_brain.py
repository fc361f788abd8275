"""On PET the brain is where the tracer is: a brain from the uptake, protected beside the U-Net's.

The U-Net learnt the brain from MR, and PET contrast only from augmentation (blur, remapped
tissue contrast). On PET-like copies of the 27 IXI heads (soft tissue 1, brain 4, 6 mm FWHM)
its brain fell up to 14 mm short of the reference brain (7.5 mm at most on the T1s), and the
cuts changed 1-62 reference-brain voxels on 6 heads. FDG and most brain tracers take up several
times more in the brain than in the face's skin and muscle, so the brain is the largest piece
of the head above Otsu's cut between the two, holes (ventricles, cold lesions) filled.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.head_mask import fill_holes, largest_component
from DeFacerLib.intensity import first_frame_physical, otsu_threshold
from DeFacerLib.volume import Volume

SMOOTHING_MM = 2.0  # PET noise: a hot voxel in the scalp is not brain
SAMPLE_VOXELS = 2_000_000  # Otsu's cut is taken on at most this many of the head's voxels


def uptake_brain(volume: Volume, head: np.ndarray) -> np.ndarray:
    """The brain of a PET volume as the head's high-uptake piece (the volume's array frame)."""
    values = ndi.gaussian_filter(first_frame_physical(volume), np.asarray(SMOOTHING_MM) / volume.spacing_mm,
                                 truncate=2.0)
    inside = values[head]
    if inside.size == 0:
        return np.zeros(volume.shape3, dtype=bool)
    cut = otsu_threshold(inside[:: max(1, inside.size // SAMPLE_VOXELS)])
    brain = largest_component(head & (values > cut))
    return np.zeros(volume.shape3, dtype=bool) if brain is None else fill_holes(brain)
