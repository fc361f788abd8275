"""On PET the brain is where the tracer is: a brain from the uptake, protected beside the U-Net's.

The U-Net learnt the brain from MR, and PET contrast only from augmentation (blur, remapped
tissue contrast). On PET-like copies of the 27 IXI heads (soft tissue 1, brain 4, 6 mm FWHM)
its brain fell up to 14 mm short of the reference brain (7.5 mm at most on the T1s), and the
cuts changed 1-62 reference-brain voxels on 6 heads. FDG and most brain tracers take up several
times more in the brain than in the face's skin and muscle, so the brain is the largest piece
of the head above Otsu's cut between the two, holes (ventricles, cold lesions) filled.

That piece is the brain only where the brain is the hottest tissue. With a tracer the brain
takes up little more than the face (brain 1-1.3 times the soft tissue on the same copies) it
was the whole head, 2.6 times the U-Net's brain, and protected most of the face (42,000 voxels
changed instead of 120,000; `defacer qa` FAILed); hot facial tissue joined to the brain did the
same. So it is kept only when it looks like a brain (plausible_uptake_brain): no larger than
MAX_VOLUME_RATIO times the U-Net's brain (at most 1.19 on the 27 copies) and not reaching into
the eyes, nose or mouth the U-Net found (none on the 27); else the U-Net's brain alone is kept.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface.head_mask import fill_holes, largest_component
from DeFacerLib.intensity import otsu_threshold, reference_physical
from DeFacerLib.volume import Volume

SMOOTHING_MM = 2.0  # PET noise: a hot voxel in the scalp is not brain
SAMPLE_VOXELS = 2_000_000  # Otsu's cut is taken on at most this many of the head's voxels
MAX_VOLUME_RATIO = 1.35  # the uptake brain's volume over the U-Net's: 0.79-1.19 on the 27 PET-like heads
MAX_FACE_OVERLAP_ML = 1.0  # the uptake brain inside the U-Net's eyes, nose and mouth: 0 on the 27


def uptake_brain(volume: Volume, head: np.ndarray) -> np.ndarray:
    """The brain of a PET volume as the head's high-uptake piece (the volume's array frame)."""
    values = ndi.gaussian_filter(reference_physical(volume), np.asarray(SMOOTHING_MM) / volume.spacing_mm,
                                 truncate=2.0)
    inside = values[head]
    if inside.size == 0:
        return np.zeros(volume.shape3, dtype=bool)
    cut = otsu_threshold(inside[:: max(1, inside.size // SAMPLE_VOXELS)])
    brain = largest_component(head & (values > cut))
    return np.zeros(volume.shape3, dtype=bool) if brain is None else fill_holes(brain)


def plausible_uptake_brain(volume: Volume, head: np.ndarray, unet_brain: np.ndarray,
                           face: np.ndarray) -> np.ndarray:
    """``uptake_brain`` when it looks like the brain the U-Net found, grown where the U-Net fell
    short; else an empty mask (the U-Net's brain alone is protected). ``face``: the U-Net's eyes,
    nose and mouth: a "brain" reaching into them is a hot face or the whole head, never the brain."""
    found = uptake_brain(volume, head)
    voxel_ml = float(np.prod(volume.spacing_mm)) / 1000.0
    if (not found.any() or found.sum() > MAX_VOLUME_RATIO * max(int(unet_brain.sum()), 1)
            or np.count_nonzero(found & face) * voxel_ml > MAX_FACE_OVERLAP_ML):
        return np.zeros(volume.shape3, dtype=bool)
    return found
