"""Geometry and array conversions between DeFacer's Volume and 3D Slicer's image conventions.

Pure numpy (plus vtk's numpy bridge where an image is built); no slicer, qt or ctk import, so
the command line, the tests and the Slicer module share one implementation.

Conventions, stated once:

* DeFacer's ``Volume`` is in **LPS** millimetres with its array in (i, j, k) order.
* Slicer's volume nodes use **RAS**: ``IJKToRAS`` maps (i, j, k, 1) to RAS millimetres, and
  ``vtkImageData`` stores voxels with i fastest, so ``slicer.util.arrayFromVolume`` (and
  :func:`kji_array`) has axes (k, j, i). ``ijk_view`` / ``kji_view`` swap the two orders as
  numpy *views*: nothing is copied.
* An axis-aligned box is ``(min, max)`` corners; a Slicer ROI is a centre, a size and an
  orientation (columns = the ROI's axes in RAS).
"""
from __future__ import annotations

import numpy as np

from DeFacerLib.volume import LPS_FROM_RAS, Volume

RAS_FROM_LPS = LPS_FROM_RAS  # the same flip of x and y, its own inverse
_LPS_TO_RAS_3 = np.diag([-1.0, -1.0, 1.0])


# ---- points and matrices ------------------------------------------------------------------
def lps_to_ras(points_mm: np.ndarray) -> np.ndarray:
    """Points (..., 3) from LPS to RAS millimetres (and back: the flip is its own inverse)."""
    return np.asarray(points_mm, dtype=float) * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras


def ijk_to_ras_matrix(volume: Volume) -> np.ndarray:
    """The 4x4 IJKToRAS matrix Slicer needs for ``volume``'s grid."""
    return volume.affine_ras


def geometry_from_ijk_to_ras(ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing_mm, origin_mm LPS, direction 3x3 LPS) of a Slicer IJKToRAS matrix."""
    matrix = np.asarray(ijk_to_ras, dtype=float).reshape(4, 4)
    linear_lps = _LPS_TO_RAS_3 @ matrix[:3, :3]
    spacing = np.linalg.norm(linear_lps, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"IJKToRAS matrix has a zero-length axis: spacing {spacing}")
    direction = linear_lps / spacing[None, :]
    origin = _LPS_TO_RAS_3 @ matrix[:3, 3]
    return spacing, origin, direction


def slicer_geometry(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing, origin RAS, 3x3 IJK-to-RAS directions) as a Slicer volume node stores them
    separately (SetSpacing/SetOrigin/SetIJKToRASDirectionMatrix): exact, no re-derivation."""
    return volume.spacing_mm.copy(), lps_to_ras(volume.origin_mm), _LPS_TO_RAS_3 @ volume.direction


def geometry_from_slicer(spacing, origin_ras, directions_ras) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of :func:`slicer_geometry`: (spacing_mm, origin LPS, direction LPS), exact."""
    return (np.asarray(spacing, dtype=float).reshape(3), ras_to_lps(np.asarray(origin_ras, dtype=float).reshape(3)),
            _LPS_TO_RAS_3 @ np.asarray(directions_ras, dtype=float).reshape(3, 3))


# ---- arrays -------------------------------------------------------------------------------
def ijk_view(kji: np.ndarray) -> np.ndarray:
    """Slicer's (k, j, i) array as DeFacer's (i, j, k): a transposed view, no copy."""
    if kji.ndim != 3:
        raise ValueError(f"a scalar volume array is 3D, got shape {kji.shape}")
    return kji.transpose(2, 1, 0)


def kji_view(ijk: np.ndarray) -> np.ndarray:
    """DeFacer's (i, j, k) array as Slicer's (k, j, i): a view; C-contiguous when ``ijk`` is
    Fortran-ordered (as every array made by :func:`ijk_view` is)."""
    if ijk.ndim != 3:
        raise ValueError(f"only 3D volumes go into a Slicer scalar volume node, got shape {ijk.shape}")
    return ijk.transpose(2, 1, 0)


def vtk_image_from_ijk(ijk: np.ndarray):
    """A vtkImageData (origin 0, spacing 1, identity direction: Slicer keeps geometry in the
    node) holding ``ijk``'s voxels; shares memory when the array's layout allows (i fastest)."""
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData

    kji = np.ascontiguousarray(kji_view(ijk))  # free when ijk is Fortran-ordered
    if kji.dtype == np.bool_:
        kji = kji.astype(np.uint8)
    image = vtkImageData()
    image.SetDimensions(int(ijk.shape[0]), int(ijk.shape[1]), int(ijk.shape[2]))
    scalars = numpy_support.numpy_to_vtk(kji.reshape(-1), deep=False)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def ijk_from_vtk_image(image) -> np.ndarray:
    """The voxels of a single-component vtkImageData as an (i, j, k) view of its memory."""
    from vtkmodules.util import numpy_support

    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        raise ValueError("the volume has no voxels")
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(f"a scalar volume is needed, this one has {scalars.GetNumberOfComponents()} components")
    dims = image.GetDimensions()
    kji = numpy_support.vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0])
    return ijk_view(kji)


# ---- boxes and ROIs -------------------------------------------------------------------------
def index_box_to_roi(volume: Volume, lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An inclusive voxel-index box as a Slicer ROI: (centre RAS mm, size mm, 3x3 axes in RAS).

    The ROI's axes follow the volume's own i, j, k axes (oblique volumes included) and its faces
    lie half a voxel outside the outer voxel centres, so :func:`roi_mask` gives back exactly
    the voxels ``lo..hi``.
    """
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    centre_lps = volume.index_to_world((lo + hi) / 2.0)
    size = (hi - lo + 1.0) * volume.spacing_mm
    axes_ras = _LPS_TO_RAS_3 @ volume.direction
    return lps_to_ras(centre_lps), size, axes_ras


def lps_box_to_roi(box_world_mm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A report's ``box_world_mm`` ((min LPS), (max LPS)) as an axis-aligned RAS ROI."""
    low, high = (np.asarray(corner, dtype=float) for corner in box_world_mm)
    return lps_to_ras((low + high) / 2.0), high - low, np.eye(3)


def roi_mask(volume: Volume, centre_ras, size_mm, axes_ras=np.eye(3), tolerance_mm: float = 1e-3) -> np.ndarray:
    """Boolean mask (i, j, k) of the voxels whose centres lie inside an oriented RAS box."""
    centre_lps = ras_to_lps(np.asarray(centre_ras, dtype=float))
    axes_lps = _LPS_TO_RAS_3 @ np.asarray(axes_ras, dtype=float)
    half = np.asarray(size_mm, dtype=float) / 2.0 + tolerance_mm
    # Voxel centre p(i,j,k) = origin + D*S*ijk; its ROI coordinates are axes^T (p - centre),
    # which is affine in (i, j, k): evaluate it separably to keep memory to the mask itself.
    linear = axes_lps.T @ (volume.direction * volume.spacing_mm[None, :])  # 3x3
    offset = axes_lps.T @ (volume.origin_mm - centre_lps)
    nx, ny, nz = volume.shape3
    i = np.arange(nx, dtype=float)[:, None, None]
    j = np.arange(ny, dtype=float)[None, :, None]
    k = np.arange(nz, dtype=float)[None, None, :]
    mask = np.ones((nx, ny, nz), dtype=bool)
    for axis in range(3):
        coordinate = linear[axis, 0] * i + linear[axis, 1] * j + linear[axis, 2] * k + offset[axis]
        mask &= np.abs(coordinate) <= half[axis]
    return mask
