"""The one volume type that every reader makes and every writer takes.

World coordinates are **LPS** millimetres (DICOM/ITK convention: +x to the patient's left,
+y posterior, +z superior), stated here once. Array axes are the voxel index axes in the
order (i, j, k[, t]) as in nibabel, not SimpleITK's reversed (k, j, i) order.

``array`` holds the *stored* values exactly as in the file (e.g. uint8 with a slope), so
that writing back an unchanged volume reproduces the file's voxel bytes. ``physical()``
gives the real-world values (HU for CT) through ``slope`` and ``intercept``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODALITIES = ("MR", "CT", "PT", "OT")

# nibabel speaks RAS, DICOM/ITK speak LPS: the two differ by flipping x and y.
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ALONG_SLAB_VOXELS = 1 << 22  # Volume.along_mm sums in float64 slabs of about this many voxels (32 MB)


@dataclass
class SourceInfo:
    """Where a volume came from, and what its writer needs to write it back unchanged."""

    format: str  # "nifti", "mgz", "nrrd", "metaimage", "dicom-series", "dicom-enhanced"
    path: str
    header: Any = None  # format-specific object kept verbatim for write-back
    extra: dict = field(default_factory=dict)


@dataclass
class Volume:
    """Stored voxel values (axes i, j, k[, t]) with their grid in LPS millimetres (``spacing_mm``,
    ``origin_mm``, ``direction``), ``modality`` (one of MODALITIES), the file's ``slope`` and
    ``intercept``, and ``source``, what its writer needs to write it back (None: a new volume,
    written in the format its output name says). ``read_volume`` makes one; a 2D array is refused."""

    array: np.ndarray
    spacing_mm: np.ndarray
    origin_mm: np.ndarray
    direction: np.ndarray  # 3x3; column c is the unit LPS direction of array axis c
    modality: str = "MR"
    slope: float = 1.0
    intercept: float = 0.0
    source: SourceInfo | None = None

    def __post_init__(self) -> None:
        self.spacing_mm = np.asarray(self.spacing_mm, dtype=float).reshape(3)
        self.origin_mm = np.asarray(self.origin_mm, dtype=float).reshape(3)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if self.array.ndim not in (3, 4):
            raise ValueError(f"a Volume needs a 3D or 4D array, got {self.array.ndim}D")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")

    # ---- geometry -------------------------------------------------------------------
    @property
    def shape3(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape[:3])

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping voxel index (i, j, k, 1) to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * self.spacing_mm[None, :]
        affine[:3, 3] = self.origin_mm
        return affine

    @property
    def affine_ras(self) -> np.ndarray:
        """The same mapping into RAS millimetres (nibabel, Slicer's RAS)."""
        return LPS_FROM_RAS @ self.affine_lps

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction * self.spacing_mm[None, :]).T + self.origin_mm

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        xyz = np.asarray(xyz, dtype=float)
        linear = self.direction * self.spacing_mm[None, :]
        return (xyz - self.origin_mm) @ np.linalg.inv(linear).T

    def along_mm(self, vector, lo=None, hi=None, point=None, dtype=np.float64) -> np.ndarray:
        """(world(i, j, k) - point) . vector at every voxel centre of the index box lo..hi
        (inclusive; the whole grid by default; point: the world origin by default), as one
        broadcast term per axis added in place: no (N, 3) index or world arrays, which cost about
        100 bytes a voxel (1.3 GB of a 0.5 mm head's face). Summed in float64, then ``dtype``,
        slab by slab along the first axis: a float32 map of a whole 0.5 mm head no longer
        passes through a float64 one of twice its size (1.3 GB of that head's peak)."""
        lo = np.zeros(3, int) if lo is None else np.asarray(lo)
        hi = np.asarray(self.shape3) - 1 if hi is None else np.asarray(hi)
        vector = np.asarray(vector, float)
        per_axis = (self.direction * self.spacing_mm[None, :]).T @ vector
        start = self.origin_mm - (0.0 if point is None else np.asarray(point, float))
        terms = [np.arange(int(a), int(b) + 1, dtype=float) * per_axis[axis] for axis, (a, b) in enumerate(zip(lo, hi))]
        out = np.empty(tuple(len(t) for t in terms), dtype)
        rows = max(1, ALONG_SLAB_VOXELS // (out.shape[1] * out.shape[2]))
        for i in range(0, out.shape[0], rows):
            total = np.full((len(terms[0][i:i + rows]), *out.shape[1:]), float(start @ vector))
            total += terms[0][i:i + rows, None, None]
            total += terms[1][None, :, None]
            total += terms[2][None, None, :]
            out[i:i + rows] = total
        return out

    # ---- values ---------------------------------------------------------------------
    def physical(self, order: str = "K") -> np.ndarray:
        """Real-world values (float32), through slope and intercept; a view-free copy in ``order``."""
        values = self.array.astype(np.float32, order=order)
        if self.slope != 1.0 or self.intercept != 0.0:
            values = values * np.float32(self.slope) + np.float32(self.intercept)
        return values

    @property
    def reference_frame(self) -> int | None:
        """The frame the head, the face and the brain are found on (one cut serves every frame):
        None for the mean of a 4D PET's frames, because a dynamic PET's first frames may come
        before the tracer does (a blank first frame found no head at all); else the first (an
        fMRI run's, a DWI's b0: the sharpest anatomy; a 3D volume's only one)."""
        return None if self.modality == "PT" and self.array.ndim == 4 and self.array.shape[3] > 1 else 0

    def reference_array(self) -> np.ndarray:
        """The stored values of the reference frame (``reference_frame``), 3D."""
        if self.array.ndim == 3:
            return self.array
        index = self.reference_frame
        return self.array[..., index] if index is not None else self.array.mean(axis=3, dtype=np.float64).astype(np.float32)

    def reference_volume(self) -> "Volume":
        """``reference_array`` as a 3D volume (the volume itself when 3D)."""
        return self if self.array.ndim == 3 else self.with_array(self.reference_array())

    def stored_value(self, physical_value: float) -> np.generic:
        """The stored value (in ``array``'s dtype) that best represents a physical value."""
        raw = (float(physical_value) - self.intercept) / (self.slope or 1.0)
        dtype = self.array.dtype
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            raw = float(np.clip(np.rint(raw), info.min, info.max))
        return dtype.type(raw)

    def with_array(self, array: np.ndarray) -> "Volume":
        """A volume with the same geometry, scaling and source but another array."""
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"shape {array.shape} does not match {self.array.shape}")
        return dataclasses.replace(self, array=array)

    def label_map(self, array: np.ndarray) -> "Volume":
        """A label or mask volume on this grid: no scaling, no source header, modality OT."""
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"shape {array.shape} does not match {self.array.shape}")
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction, modality="OT")

    def describe_orientation(self) -> str:
        """Three-letter LPS-style code of where each array axis points, e.g. 'LPS' or 'PSR'."""
        from DeFacerLib.orientation import axis_codes

        return "".join(axis_codes(self.direction))
