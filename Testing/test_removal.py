"""The guarded removal engine on the phantom (every orientation) and the 27 IXI heads."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from _nifti_for_tests import read_labels, read_volume
from DeFacerLib.deface import (
    feature_max_depth_mm,
    head_mask,
    remove_features,
    skin_depth_mm,
    verify_protected_unchanged,
)
from DeFacerLib.deface.pinna import side_outline_masks
from DeFacerLib.errors import GuaranteeError, InputError, UsageError
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.phantom import make_phantom
from test_phantom import ALL_CODES


def _feature_masks(labels):
    return {name: labels == LABEL_VALUES[name] for name in FEATURES}


def _boxes_union(report, shape):
    union = np.zeros(shape, bool)
    for item in report.features.values():
        for lo, hi in item.component_boxes + item.reach_boxes:
            union[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
    return union


def _check_phantom(modality, code, oblique):
    volume, labels = make_phantom(modality=modality, orientation=code, oblique_deg=oblique, seed=len(code))
    before = volume.array.copy()
    brain = labels == LABEL_VALUES["brain"]
    defaced, report = remove_features(volume, _feature_masks(labels), brain)

    assert np.array_equal(volume.array, before), "the input array was modified"
    changed = defaced.array != volume.array
    assert not changed[brain].any() and report.protected_voxels_changed == 0
    assert not changed[~_boxes_union(report, volume.shape3)].any(), "changed outside the feature boxes"
    air_stored = volume.stored_value(report.fill_value_physical)
    values = defaced.array[changed]
    is_air = values == air_stored
    is_seal = values == report.seal_value_stored
    # the flat cut's surface voxels and the ears' floor carry a share of the seal (anti-aliased), and only there
    low, high = sorted((float(air_stored), float(report.seal_value_stored)))
    blended = ~is_air & ~is_seal
    assert ((values[blended] > low) & (values[blended] < high)).all()
    face, ears = np.zeros(volume.shape3, bool), np.zeros(volume.shape3, bool)
    for lo, hi in report.features["face"].component_boxes:
        face[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
    for lo, hi in report.features["ears"].reach_boxes:
        ears[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
    assert (face | ears)[changed][blended].all()
    # the face's blended voxels are one surface over a thicker seal; the ears' lie on tissue
    # (their floor, or the head the cut kept), never floating in the air
    in_face = face[changed] & ~ears[changed]
    assert (blended & in_face).sum() < 0.25 * (is_seal & in_face).sum()
    blended_ears = np.zeros(volume.shape3, bool)
    blended_ears[changed] = blended & ears[changed] & ~face[changed]
    tissue = (defaced.array == report.seal_value_stored) | (~changed & head_mask(volume))
    assert blended_ears.sum() > 100 and ndimage.binary_dilation(tissue)[blended_ears].all()
    assert 0 < report.total_sealed < 0.25 * report.total_removed  # a thin seal at the bottom of the cuts
    assert report.features["face"].voxels_removed > 0  # the span between eyes, nose and mouth
    if modality == "CT":
        assert (defaced.physical()[changed][is_air] == -1000.0).all()
    depth = skin_depth_mm(head_mask(volume), volume.spacing_mm)
    removed = {}
    for name in FEATURES:
        assert report.features[name].present, name
        target = (labels == LABEL_VALUES[name]) & (depth <= feature_max_depth_mm(name))
        # "removed" = now air, seal or changed (a voxel that already had that value counts too).
        after = defaced.array[target]
        fraction = float(((after == air_stored) | (after == report.seal_value_stored)
                          | (defaced.array != volume.array)[target]).mean())
        removed[name] = round(fraction, 4)
    assert min(removed.values()) >= 0.95, f"{modality} {code} oblique {oblique}: removed fractions {removed}"
    assert report.total_removed >= int(changed.sum())
    json.dumps(report.to_dict())
    return removed


@settings(max_examples=4, deadline=None)
@given(code=st.sampled_from(ALL_CODES), oblique=st.sampled_from([0.0, 7.5]))
def test_phantom_mr_any_orientation(code, oblique):
    _check_phantom("MR", code, oblique)


@settings(max_examples=3, deadline=None)
@given(code=st.sampled_from(ALL_CODES), oblique=st.sampled_from([0.0, 11.0]))
def test_phantom_ct_any_orientation(code, oblique):
    _check_phantom("CT", code, oblique)


def test_phantom_fixed_cases_report_figures():
    # Measured: eyes 0.995-1.0, nose/mouth/ears 1.0 of the labelled voxels within 25 mm.
    for modality, code, oblique in (("MR", "LPS", 0.0), ("CT", "RAS", 10.0), ("MR", "PSR", 5.0)):
        removed = _check_phantom(modality, code, oblique)
        assert removed["nose"] == 1.0 and removed["mouth"] == 1.0 and removed["ears"] == 1.0, removed


def test_the_seal_never_widens_the_cut():
    """The seal (and the eye visor, which is seal) turns part of each cut into tissue; it
    replaces no other voxel: the replaced region is the same with and without it."""
    for modality, code in (("MR", "LPS"), ("CT", "PSR")):
        volume, labels = make_phantom(modality=modality, orientation=code, oblique_deg=5.0)
        brain = labels == LABEL_VALUES["brain"]
        sealed, report = remove_features(volume, _feature_masks(labels), brain)
        bare, bare_report = remove_features(volume, _feature_masks(labels), brain, seal_mm=0.0)
        removed = report.removed_mask(volume.shape3)
        assert np.array_equal(removed, bare_report.removed_mask(volume.shape3))
        assert report.total_removed == bare_report.total_removed == int(removed.sum())
        assert bare_report.total_sealed == 0 and report.total_sealed > 1000
        # only replaced voxels differ from the input (a replaced one may keep its value by chance)
        assert not ((sealed.array != volume.array) & ~removed).any()
        assert not ((bare.array != volume.array) & ~removed).any()
        # every replaced voxel holds air, the seal, or a share of the seal (an anti-aliased surface)
        low, high = sorted((bare_report.fill_value_stored, report.seal_value_stored))
        assert ((sealed.array[removed] >= low) & (sealed.array[removed] <= high)).all()
        assert (bare.array[removed] == bare_report.fill_value_stored).all()
        # the ears' cut has no seal layer (UNSEALED_FEATURES): what lies lateral of the head's side
        # outline is air, what lies under it tissue (the seal's value), the voxels it passes through a share
        ears = np.zeros(volume.shape3, bool)
        for lo, hi in report.features["ears"].reach_boxes:
            ears[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
        for lo, hi in report.features["face"].component_boxes:
            ears[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = False
        _proud, under, share = side_outline_masks(volume, head_mask(volume))
        in_ears = removed & ears
        assert (in_ears & under).sum() > 100 and (in_ears & ~under & np.isnan(share)).sum() > 100
        assert (sealed.array[in_ears & under] == report.seal_value_stored).all()
        assert (sealed.array[in_ears & ~under & np.isnan(share)] == volume.stored_value(report.fill_value_physical)).all()


def test_whole_face_span_and_its_chin():
    """The span covers every face part's box, reaches 50 mm under the mouth, and only with two parts."""
    from DeFacerLib.deface.face_cut import CHIN_BELOW_MOUTH_MM

    volume, labels = make_phantom(modality="MR", orientation="LPS")
    brain = labels == LABEL_VALUES["brain"]
    _, report = remove_features(volume, _feature_masks(labels), brain)
    face = report.features["face"]
    for name in ("eyes", "nose", "mouth"):
        assert (np.array(face.box_index_min) <= report.features[name].box_index_min).all()
        assert (np.array(face.box_index_max) >= report.features[name].box_index_max).all()
    mouth_mid_z = (report.features["mouth"].box_world_mm[0][2] + report.features["mouth"].box_world_mm[1][2]) / 2
    corners = volume.index_to_world(np.array(list(np.ndindex(2, 2, 2))) * (np.array(volume.shape3) - 1))
    lowest_z = corners[:, 2].min()  # the span stops at the volume's edge
    assert face.box_world_mm[0][2] <= max(mouth_mid_z - CHIN_BELOW_MOUTH_MM + 2.0, lowest_z + 1e-6)  # 2 mm voxels
    assert face.box_world_mm[0][2] < report.features["mouth"].box_world_mm[0][2]
    _, nose_only = remove_features(volume, {"nose": labels == LABEL_VALUES["nose"]}, brain)
    assert "face" not in nose_only.features
    _, no_span = remove_features(volume, _feature_masks(labels), brain, whole_face=False)
    assert "face" not in no_span.features and no_span.total_removed < report.total_removed


def test_report_boxes_are_in_index_and_world_space():
    volume, labels = make_phantom(modality="MR", orientation="RAS")
    _, report = remove_features(volume, {"nose": labels == LABEL_VALUES["nose"]}, labels == LABEL_VALUES["brain"])
    nose = report.features["nose"]
    lo, hi = np.array(nose.box_index_min), np.array(nose.box_index_max)
    (wmin, wmax) = np.array(nose.box_world_mm[0]), np.array(nose.box_world_mm[1])
    nose_index = np.argwhere(labels == LABEL_VALUES["nose"])
    assert (nose_index >= lo).all() and (nose_index <= hi).all()
    nose_world = volume.index_to_world(nose_index)
    assert (nose_world >= wmin - 1e-6).all() and (nose_world <= wmax + 1e-6).all()
    margin = (wmin - nose_world.min(axis=0), nose_world.max(axis=0) - wmax)
    assert all(np.allclose(m, -10.0, atol=1.0) for m in margin), margin  # 10 mm margin (5 voxels of 2 mm)
    assert report.missing == [] and report.total_removed == nose.voxels_removed > 0
    d = report.to_dict()
    assert list(d["features"]) == ["nose"] and d["parameters"]["margin_mm"] == 10.0


def test_missing_and_empty_features_are_skipped_not_fatal():
    volume, labels = make_phantom(shape=(64, 80, 64), spacing_mm=(3, 3, 3))
    empty = np.zeros(volume.shape3, bool)
    defaced, report = remove_features(volume, {"eyes": empty, "ears": None}, labels == LABEL_VALUES["brain"])
    assert report.missing == ["eyes", "ears"] and report.total_removed == 0
    assert np.array_equal(defaced.array, volume.array)


def test_features_given_as_a_generator_are_all_removed():
    """DefaceParameters checked the names by iterating its features, which used up a generator
    (a script's `features=(f for f in ...)`): nothing was removed, and the face was left."""
    from DeFacerLib.deface.pipeline import DefaceParameters, deface_volume, masks_from_labels

    volume, labels = make_phantom(shape=(64, 80, 64), spacing_mm=(3, 3, 3))
    masks = masks_from_labels(volume.label_map(labels), volume)
    parameters = DefaceParameters(features=(name for name in ("nose", "eyes")))
    result = deface_volume(volume, masks, parameters=parameters)
    assert result.features_removed == ["eyes", "nose"] and not np.array_equal(result.volume.array, volume.array)


@pytest.mark.parametrize("given, chosen", [("eyes", ("eyes",)), ("Nose, eyes", ("eyes", "nose")),
                                           (["ears", "eyes", "ears"], ("eyes", "ears")), ("all", FEATURES)])
def test_features_named_as_text_or_names_are_one_choice(given, chosen):
    """One check serves --features, DefaceParameters and the Slicer module: a script's
    DefaceParameters(features="eyes") was refused letter by letter ("unknown feature(s) e, y, s")."""
    from DeFacerLib.deface.pipeline import DefaceParameters

    assert DefaceParameters(features=given).features == chosen


@pytest.mark.parametrize("given, message", [(",", "no feature chosen"), ((), "no feature chosen"),
                                            (("eyes", "chin"), "unknown feature 'chin'; choose from eyes"),
                                            ("chin, brow", "unknown features 'chin', 'brow'; choose from eyes")])
def test_features_naming_none_or_an_unknown_one_are_refused(given, message):
    from DeFacerLib.deface.pipeline import DefaceParameters

    with pytest.raises(UsageError, match=message):
        DefaceParameters(features=given)


def test_bad_masks_are_input_errors():
    volume, labels = make_phantom(shape=(64, 80, 64), spacing_mm=(3, 3, 3))
    brain = labels == LABEL_VALUES["brain"]
    with pytest.raises(InputError, match="shape"):
        remove_features(volume, {"nose": np.ones((3, 3, 3), bool)}, brain)
    with pytest.raises(InputError, match="volume: unknown feature 'chin'; choose from eyes"):
        remove_features(volume, {"chin": brain}, brain)
    nose = labels == LABEL_VALUES["nose"]
    for option, value in (("protect_margin_mm", -5.0), ("margin_mm", float("nan")), ("max_depth_mm", float("inf"))):
        with pytest.raises(InputError, match=f"{option} must be a finite distance"):
            remove_features(volume, {"nose": nose}, brain, **{option: value})


def test_4d_volume_gets_the_same_removal_in_every_frame():
    volume, labels = make_phantom(shape=(64, 80, 64), spacing_mm=(3, 3, 3), modality="CT")
    frames = volume.with_array(np.stack([volume.array, volume.array + 7], axis=-1))
    brain = labels == LABEL_VALUES["brain"]
    defaced, report = remove_features(frames, _feature_masks(labels), brain)
    air = frames.stored_value(report.fill_value_physical)
    changed = (defaced.array != frames.array).any(axis=-1)
    seal = report.seal_value_stored
    # frames differ by 7: never both the same value before; after, every removed voxel holds
    # one value in both frames (air, the seal, or an anti-aliased share of it between them)
    same = defaced.array[..., 0] == defaced.array[..., 1]
    low, high = sorted((float(air), float(seal)))
    removed = same & (defaced.array[..., 0] >= low) & (defaced.array[..., 0] <= high)
    assert changed.any() and report.total_sealed > 0 and not (changed & ~removed).any()
    assert not changed[brain].any() and report.total_removed == int(removed.sum())


def test_verification_raises_when_a_protected_voxel_differs():
    volume, labels = make_phantom(shape=(64, 80, 64), spacing_mm=(3, 3, 3))
    brain = labels == LABEL_VALUES["brain"]
    result = volume.array.copy()
    verify_protected_unchanged(volume.array, result, brain)  # identical: silent
    index = tuple(np.argwhere(brain)[100])
    result[index] += 1
    with pytest.raises(GuaranteeError, match="1 protected"):
        verify_protected_unchanged(volume.array, result, brain, "phantom")
    # Byte-identical means bytes: -0.0 and +0.0 compare equal as floats but are a change.
    floats = np.zeros((4, 4, 4), np.float32)
    flipped = floats.copy()
    flipped[1, 1, 1] = -0.0
    with pytest.raises(GuaranteeError):
        verify_protected_unchanged(floats, flipped, np.ones((4, 4, 4), bool))


def test_a_feature_touching_the_brain_leaves_the_brain_alone():
    volume, labels = make_phantom(modality="MR")
    brain = labels == LABEL_VALUES["brain"]
    eyes_into_brain = (labels == LABEL_VALUES["eyes"]) | brain  # adversarial: the feature is the brain too
    defaced, report = remove_features(volume, {"eyes": eyes_into_brain}, brain, protect_margin_mm=0.0)
    changed = defaced.array != volume.array
    assert changed.any() and not changed[brain].any()


@pytest.mark.slow
def test_ixi_adversarial_features_never_touch_the_brain(ixi_pairs):
    """Every feature mask = the whole head: every box spans the head, only the brain stops it."""
    figures = []
    start = time.perf_counter()
    for t1, label_path in ixi_pairs:
        volume = read_volume(t1)
        brain = read_labels(label_path) > 0
        before = volume.array.copy()
        head = head_mask(volume)
        coverage = float(head[brain].mean())
        defaced, report = remove_features(volume, {name: head for name in FEATURES}, brain, head=head)
        changed = defaced.array != volume.array
        brain_changed = int(changed[brain].sum())
        figures.append(f"{t1.name[:6]}: head {head.sum() * 8e-6:.2f} L, brain in head {100 * coverage:.2f} %, "
                       f"removed {report.total_removed}, brain changed {brain_changed}")
        assert np.array_equal(volume.array, before), figures[-1]
        assert brain_changed == 0, figures[-1]
        assert coverage >= 0.995, figures[-1]
        # Everything but the brain and its 5 mm guard within 25 mm of the skin, plus the air in
        # the box: hundreds of thousands of voxels of the 1.3 million.
        assert 200_000 < report.total_removed < 1_200_000, figures[-1]
    print("\n".join(figures), f"\n{time.perf_counter() - start:.1f} s")


def test_flat_cut_is_anti_aliased_and_what_the_guard_keeps_is_sealed():
    """The flat cut's surface voxels get a share of the seal (a smooth plane, no terraces), and
    the cut's voxels next to the guarded brain are sealed, never left as air."""
    from scipy import ndimage as ndi

    from DeFacerLib.deface.removal import DEFAULT_PROTECT_MARGIN_MM, seal_thickness_mm

    volume, labels = make_phantom(modality="MR", orientation="LPS", oblique_deg=7.5)
    brain = labels == LABEL_VALUES["brain"]
    defaced, report = remove_features(volume, _feature_masks(labels), brain)
    air, seal = float(report.fill_value_stored), float(report.seal_value_stored)
    changed = defaced.array != volume.array
    face = np.zeros(volume.shape3, bool)
    for lo, hi in report.features["face"].component_boxes:
        face[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
    between = changed & (defaced.array > min(air, seal)) & (defaced.array < max(air, seal))
    surfaces = face.copy()  # and the ears' floor, anti-aliased too
    for lo, hi in report.features["ears"].reach_boxes:
        surfaces[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = True
    assert (between & face).sum() > 100 and surfaces[between].all()  # measured: 336 voxels in the face box
    spacing = volume.spacing_mm
    guarded = ndi.distance_transform_edt(~brain, sampling=spacing) <= DEFAULT_PROTECT_MARGIN_MM
    near_guard = ndi.distance_transform_edt(~guarded, sampling=spacing) <= seal_thickness_mm(6.0, spacing)
    touching = changed & face & near_guard
    assert touching.sum() > 50
    assert not (defaced.array[touching] == air).any()


def test_face_axes_without_a_mouth_keep_the_headers_up():
    """A field of view ending at the nose (chris_t1): the nose region's centre lies about as far in
    front of the eyes as below them, so the nose-to-eyes line leans back 55-70 degrees. It only
    says which way is up; the face stays upright (before, it stood the face plane on its side).
    With a mouth, a face-up more than 60 degrees off the header still means a head lying in the
    volume, and the mouth-to-eyes line is used."""
    from DeFacerLib.deface.face_cut import face_axes

    eyes = [np.array([-32.0, -60.0, 0.0]), np.array([32.0, -60.0, 0.0])]  # LPS: -y is anterior
    nose_to_eyes = np.array([0.0, 26.0, 12.0])  # the nose region: 26 mm in front, 12 mm below
    up, forward = face_axes(eyes, nose_to_eyes, np.array([0.0, -1.0, 0.0]), lower_is_mouth=False)
    assert np.allclose(up, [0, 0, 1], atol=1e-6) and np.allclose(forward, [0, -1, 0], atol=1e-6)
    lying = np.array([0.0, 40.0, 5.0])  # a mouth behind the eyes: the head lies face-up in the volume
    up, forward = face_axes(eyes, lying, np.array([0.0, 0.0, 1.0]), lower_is_mouth=True)
    assert up @ np.array([0.0, 1.0, 0.0]) > 0.9


def test_side_outline_masks_on_a_box_are_the_whole_grid_s_sliced():
    """The ears' cut makes the outline masks on its boxes only: the same voxels as on the whole grid."""
    from DeFacerLib.deface.pinna import SideOutlines

    for code, oblique in (("LPS", 0.0), ("PSR", 7.5)):
        volume, _labels = make_phantom(modality="MR", orientation=code, oblique_deg=oblique)
        head = head_mask(volume)
        proud, under, share = side_outline_masks(volume, head)
        assert proud.sum() > 0 and under.sum() > 0 and np.isfinite(share).sum() > 0
        lo, hi = (3, 5, 2), tuple(n - 4 for n in volume.shape3)
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        on_box = SideOutlines(volume, head).on_box(lo, hi)
        assert np.array_equal(on_box[0], proud[box]) and np.array_equal(on_box[1], under[box])
        assert np.array_equal(on_box[2], share[box], equal_nan=True)
        assert ((share[np.isfinite(share)] > 0) & (share[np.isfinite(share)] <= 1)).all()


def test_a_feature_core_goes_at_any_depth_inside_its_boxes_never_near_the_brain():
    """feature_cores: the eyes' own tissue goes whatever its depth (the pipeline passes the eye
    tissue around the fitted globes), but only inside the eyes' boxes and never within the
    protect margin of the brain; without it the depth limit keeps the deep part."""
    volume, labels = make_phantom(modality="MR")
    brain = labels == LABEL_VALUES["brain"]
    eyes = labels == LABEL_VALUES["eyes"]
    depth_mm = skin_depth_mm(head_mask(volume), volume.spacing_mm)
    core = ndimage.binary_dilation(eyes, iterations=2)
    core[:, :, : core.shape[2] // 3] = True  # and a slab far outside the eyes' boxes
    shallow, _ = remove_features(volume, {"eyes": eyes}, brain, max_depth_mm=3.0, whole_face=False)
    cored, report = remove_features(volume, {"eyes": eyes}, brain, max_depth_mm=3.0, whole_face=False,
                                    feature_cores={"eyes": core})
    near_brain = ndimage.distance_transform_edt(~brain, sampling=volume.spacing_mm) <= 5.0
    deep_eye = eyes & (depth_mm > 6.0) & ~near_brain
    assert deep_eye.sum() > 1000
    assert not (shallow.array != volume.array)[deep_eye].any()
    changed = cored.array != volume.array
    assert changed[deep_eye].all()
    assert not changed[brain | near_brain].any() and report.protected_voxels_changed == 0
    assert not changed[~_boxes_union(report, volume.shape3)].any(), "the core went outside the eyes' boxes"
    with pytest.raises(InputError):
        remove_features(volume, {"eyes": eyes}, brain, feature_cores={"eyes": core[:-1]})


@pytest.mark.parametrize("down", [-1, 1])
def test_chin_overhang_takes_what_hangs_in_air_and_keeps_what_runs_on(down):
    """Column by column under the face span's floor: tissue hanging from a cut floor voxel that
    ends in air inside the slab goes; a column that runs through the slab (the neck), or hangs
    from a kept floor voxel, stays whole."""
    from DeFacerLib.deface.face_cut import chin_overhang

    slab = np.zeros((4, 3, 6), bool)  # axis 2 is "down"; index 0 is next to the floor when down > 0
    slab[0, 0, :2] = True  # a 2-voxel shelf under a cut voxel: goes
    slab[1, 0, :] = True  # runs through the slab (the neck): stays
    slab[2, 0, :3] = True  # a shelf under a kept floor voxel: stays
    slab[3, 0, 1:3] = True  # not touching the floor: stays
    floor_cut = np.zeros((4, 3), bool)
    floor_cut[[0, 1, 3], 0] = True
    if down < 0:  # the floor lies at the slab's high end
        hung = chin_overhang(slab[..., ::-1], floor_cut, 2, down)[..., ::-1]
    else:
        hung = chin_overhang(slab, floor_cut, 2, down)
    expected = np.zeros_like(slab)
    expected[0, 0, :2] = True
    assert np.array_equal(hung, expected)
    # where the slab ends at the field of view's edge, a column under a cut voxel that runs to
    # the edge is a slice of chin or neck under the cut: it goes too
    edge = chin_overhang(slab, floor_cut, 2, 1, ends_at_edge=True)
    expected[1, 0, :] = True
    assert np.array_equal(edge, expected)
