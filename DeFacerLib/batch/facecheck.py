"""Has this volume a skin surface? The test that lets a batch run copy an image in which the
face model found no face (a skull-stripped brain, a brain label map) and refuse the others.

A volume the U-Net finds no face in is either faceless (skull-stripped, a brain parcellation,
a probability map) or a head the model does not recognise (an unusual contrast, a face already
partly removed): the second must not be published. The head mask (deface.head_mask: the large
bright object against a dark background) of a skull-stripped brain is the brain itself, so:

* it is small: at most MAX_BRAIN_LITRES. Measured on the 27 IXI heads: the heads 3.6-5.8 L,
  the same heads defaced 3.9-4.4 L, stripped with their DLMUSE brain labels 1.2-1.8 L;
* and it stays away from the front of the field of view, where a head's nose and forehead are:
  at least MIN_FRONT_GAP_MM between the object's front and the field of view's front edge. IXI
  heads: 0-22 mm (nose tip to edge); stripped: 38-66 mm.

Only an object that passes both has "no skin surface"; anything else (a large object, one that
reaches the front, or no object found at all in an image named as anatomical) may show a face
and is not published. Both thresholds err on the side of failing: a brain cropped to its own
bounding box fails (deface or copy it by hand), a child's head in a tight field of view fails.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from DeFacerLib.errors import NoHeadFound
from DeFacerLib.volume import Volume

MAX_BRAIN_LITRES = 2.5  # adult brains with CSF and cerebellum 1.2-1.9 L; heads with a face > 3.5 L
MIN_FRONT_GAP_MM = 30.0  # a stripped brain's frontal pole lies 30-50 mm behind where the nose tip was


@dataclass(frozen=True)
class SkinCheck:
    """The verdict and its figures (reported with the item)."""

    skin: bool | None  # None: no object against a dark background was found at all
    litres: float = 0.0
    front_gap_mm: float = 0.0

    def describe(self) -> str:
        if self.skin is None:
            return "no head outline found"
        return f"object of {self.litres:.1f} L, {self.front_gap_mm:.0f} mm behind the front of the field of view"


def skin_check(volume: Volume) -> SkinCheck:
    """Measure the object's size and its distance from the field of view's front (see the module)."""
    from DeFacerLib.deface import head_mask

    try:
        mask = head_mask(volume)
    except NoHeadFound:  # uniform, pure noise, or too small to be a head
        return SkinCheck(None)
    litres = float(np.count_nonzero(mask) * np.prod(volume.spacing_mm) / 1e6)
    gap = front_gap_mm(volume, mask)
    return SkinCheck(litres > MAX_BRAIN_LITRES or gap < MIN_FRONT_GAP_MM, litres, gap)


def front_gap_mm(volume: Volume, mask: np.ndarray) -> float:
    """Millimetres between the mask's front-most slice and the field of view's front edge, along
    the array axis closest to anterior (LPS: anterior is -y)."""
    axis = int(np.argmax(np.abs(volume.direction[1, :3])))
    others = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(mask.any(axis=others))
    if present.size == 0:
        return float("inf")
    towards_posterior = volume.direction[1, axis] > 0  # index grows to the back: the front is index 0
    gap_voxels = present[0] if towards_posterior else mask.shape[axis] - 1 - present[-1]
    return float(gap_voxels * volume.spacing_mm[axis])
