"""DeFacerLib.slicer_convert on real heads: RAS/LPS, (k,j,i) views, ROI boxes. No Slicer needed."""
from __future__ import annotations

import numpy as np
import pytest

from DeFacerLib import slicer_convert as sc
from DeFacerLib.deface.pipeline import deface_volume, masks_from_labels
from DeFacerLib.io import read_volume
from DeFacerLib.phantom import make_phantom


@pytest.fixture(scope="module")
def mne_head(data_dir):
    return read_volume(data_dir / "heads" / "single" / "mne_sample_T1.mgz")  # LIA axes


def test_geometry_round_trip_lia_head(mne_head):
    assert mne_head.describe_orientation() == "LIA"
    ijk_to_ras = sc.ijk_to_ras_matrix(mne_head)
    # Slicer's IJKToRAS: the first axis runs to the patient's left = -R
    assert ijk_to_ras[0, 0] < 0 and ijk_to_ras[2, 1] < 0 and ijk_to_ras[1, 2] > 0
    spacing, origin, direction = sc.geometry_from_ijk_to_ras(ijk_to_ras)
    assert np.array_equal(spacing, mne_head.spacing_mm)
    assert np.allclose(origin, mne_head.origin_mm, atol=1e-9)
    assert np.allclose(direction, mne_head.direction, atol=1e-12)


def test_array_views_share_memory(mne_head):
    ijk = mne_head.array
    kji = np.ascontiguousarray(sc.kji_view(ijk))  # what Slicer holds
    back = sc.ijk_view(kji)
    assert np.shares_memory(back, kji) and np.array_equal(back, ijk)
    assert back.flags.f_contiguous and np.shares_memory(np.ascontiguousarray(sc.kji_view(back)), kji)
    image = sc.vtk_image_from_ijk(back)
    assert image.GetDimensions() == ijk.shape
    again = sc.ijk_from_vtk_image(image)
    assert np.shares_memory(again, kji) and np.array_equal(again, ijk)
    assert image.GetScalarComponentAsDouble(3, 5, 7, 0) == float(ijk[3, 5, 7])  # vtk's (x,y,z) is (i,j,k)


def test_ras_points_flip_x_and_y():
    assert np.array_equal(sc.lps_to_ras([10.0, 20.0, 30.0]), [-10.0, -20.0, 30.0])
    assert np.array_equal(sc.ras_to_lps(sc.lps_to_ras([[1.0, -2.0, 3.0]])), [[1.0, -2.0, 3.0]])


@pytest.mark.parametrize("orientation,oblique_deg", [("RAS", 0.0), ("PSR", 0.0), ("LIA", 12.0)])
def test_roi_of_index_box_gives_back_the_box(orientation, oblique_deg):
    volume, _labels = make_phantom(shape=(48, 56, 48), spacing_mm=(4.0, 4.0, 4.0), orientation=orientation,
                                   oblique_deg=oblique_deg)
    lo, hi = (5, 9, 11), (20, 30, 25)
    centre, size, axes = sc.index_box_to_roi(volume, lo, hi)
    mask = sc.roi_mask(volume, centre, size, axes)
    expected = np.zeros(volume.shape3, dtype=bool)
    expected[5:21, 9:31, 11:26] = True
    assert np.array_equal(mask, expected)
    assert np.allclose(np.sort(size), np.sort((np.array(hi) - lo + 1) * 4.0))


def test_report_world_box_as_axis_aligned_roi():
    volume, labels = make_phantom(orientation="LPS")
    result = deface_volume(volume, masks_from_labels(volume.label_map(labels), volume))
    nose = result.report["features"]["nose"]
    centre, size, axes = sc.lps_box_to_roi(nose["box_world_mm"])
    assert np.array_equal(axes, np.eye(3))
    # the nose is in front (anterior = +A in RAS) and near the midline
    assert centre[1] > 60 and abs(centre[0]) < 5
    mask = sc.roi_mask(volume, centre, size)
    lo, hi = np.array(nose["box_index_min"]), np.array(nose["box_index_max"])
    expected = np.zeros(volume.shape3, dtype=bool)
    expected[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    assert np.array_equal(mask, expected)  # world box spans voxel centres: same voxels


def test_slicer_geometry_is_exact_for_oblique_heads():
    volume, _labels = make_phantom(shape=(48, 56, 48), spacing_mm=(2.0, 2.0, 2.0), orientation="LIA", oblique_deg=10.0)
    spacing, origin, direction = sc.geometry_from_slicer(*sc.slicer_geometry(volume))
    assert np.array_equal(spacing, volume.spacing_mm)  # bit for bit: the engine's mm thresholds see the same
    assert np.array_equal(origin, volume.origin_mm) and np.array_equal(direction, volume.direction)
