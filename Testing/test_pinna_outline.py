"""The head's side outline without the pinna (deface/pinna.head_outline), on a side view made by hand.

The side view is a dome (the side of a head, curved over 80 mm) with a pinna on it (an
elliptical plate 36 x 64 mm standing 15 mm off it). The outline must take the pinna away and
keep the dome: a flat 70 mm window (the outline before) sank 8-12 mm under this dome around the
pinna (17 mm at its apex), and the ears' floor, filled up to the outline, showed as a sunken box
beside every ear.
"""
from __future__ import annotations

import numpy as np

from DeFacerLib.deface.pinna import head_outline

SPACING_C = (1.0, 2.0, 2.0)  # canonical (L, P, S) mm: the side view is (P, S) at 2 mm
DOME_RADIUS_MM = 80.0
BASE_VOXELS = 40.0  # where the dome's rim lies, counted outwards as lateral_extent counts


def _side_view(pinna: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lateral extent in voxels, -1 off the head; P and S of every column, mm from the dome's apex)."""
    p_mm, s_mm = np.meshgrid(np.arange(-100, 101, 2.0), np.arange(-100, 101, 2.0), indexing="ij")
    radial2 = p_mm ** 2 + s_mm ** 2
    on_head = radial2 < DOME_RADIUS_MM ** 2
    height_mm = np.sqrt(np.where(on_head, DOME_RADIUS_MM ** 2 - radial2, 0.0))
    if pinna:
        plate = ((p_mm - 10.0) / 18.0) ** 2 + ((s_mm + 5.0) / 32.0) ** 2 <= 1.0
        height_mm = np.where(plate, height_mm + 15.0, height_mm)
    lateral = np.where(on_head, BASE_VOXELS + np.floor(height_mm / SPACING_C[0]), -1.0)
    return lateral, p_mm, s_mm


def test_the_outline_keeps_the_head_s_curve_and_drops_the_pinna():
    lateral, p_mm, s_mm = _side_view(pinna=True)
    outline = head_outline(lateral, SPACING_C)
    above_mm = (lateral - outline) * SPACING_C[0]
    on_head = lateral >= 0
    assert np.all(above_mm[on_head] >= -1e-6), "the outline never lies outside the head"
    assert np.all(outline[~on_head] == -1)
    pinna_and_around = ((p_mm - 10.0) / 28.0) ** 2 + ((s_mm + 5.0) / 42.0) ** 2 <= 1.0
    side_of_head = on_head & ~pinna_and_around & (p_mm ** 2 + s_mm ** 2 <= 60.0 ** 2)
    # the side of the head around the ear: the outline within 1.5 mm of the skin (measured 0.4 median,
    # 1.0 at most; a flat window's: 8 median, 12 at the 95th percentile)
    assert np.percentile(above_mm[side_of_head], 95) <= 1.5, np.percentile(above_mm[side_of_head], [50, 95])
    # the pinna: its middle stands at least 12 of its 15 mm above the outline (measured 13.7)
    middle = ((p_mm - 10.0) / 9.0) ** 2 + ((s_mm + 5.0) / 16.0) ** 2 <= 1.0
    assert above_mm[middle].min() >= 12.0, above_mm[middle].min()


def test_without_a_pinna_the_outline_is_the_head():
    lateral, p_mm, s_mm = _side_view(pinna=False)
    above_mm = (lateral - head_outline(lateral, SPACING_C)) * SPACING_C[0]
    near_apex = p_mm ** 2 + s_mm ** 2 <= 60.0 ** 2
    assert np.max(above_mm[near_apex]) <= 1.5, np.max(above_mm[near_apex])
