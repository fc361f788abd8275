"""The face-feature U-Net: structure, grid round trip, augmentation, training smoke run, shipped model.

Real IXI heads and their DLMUSE brain parcellations are the reference; figures asserted are
the ones measured (see Resources/Models/MODEL_CARD.md), with a margin.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from DeFacerLib.face.augment import AugmentSettings, augment, fov_cut, spatial
from DeFacerLib.face.grid import GRID_SHAPE, to_grid
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.io import read_volume
from DeFacerLib.volume import Volume
from ixi_layout import brain_labels_of  # scripts/ixi_layout.py (conftest puts scripts/ on the path)

REPO = Path(__file__).resolve().parents[1]
SPLIT = json.loads((REPO / "scripts" / "training" / "split.json").read_text())
LANDMARKS_PATH = REPO / "scripts" / "training" / "landmarks.json"
VALIDATION_IXI = [rel for rel in SPLIT["validation"] if "/ixi/" in rel][:3]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def ixi_head(data_dir: Path, rel: str) -> tuple[Volume, np.ndarray]:
    volume = read_volume(data_dir / rel)
    brain = read_volume(brain_labels_of(rel, data_dir / "heads" / "ixi")).array > 0
    return volume, brain


# ---- model structure ------------------------------------------------------------------------

def test_model_has_documented_structure():
    pytest.importorskip("keras", reason="the model itself needs the [train] extra")
    from DeFacerLib.face.model import CLASS_NAMES, InstanceNorm, build_model

    model = build_model((32, 32, 32))
    names = [layer.name for layer in model.layers]
    assert sum(n.startswith("att") and n.endswith("_apply") for n in names) == 3  # one gate per skip
    assert sum(n.endswith("_se_scale") for n in names) == 7  # 4 encoder + 3 decoder blocks
    assert sum(isinstance(layer, InstanceNorm) for layer in model.layers) == 14  # 2 per block
    assert [model.get_layer(f"enc{i}_conv1").filters for i in range(4)] == [8, 16, 32, 64]
    assert model.output.shape[1:] == (32, 32, 32, 6)
    # class index == label value, so argmax is a label map
    assert all(CLASS_NAMES.index(name) == value for name, value in LABEL_VALUES.items())
    assert model.count_params() < 1_000_000


# ---- grid -----------------------------------------------------------------------------------

def test_grid_round_trip_keeps_the_brain(data_dir):
    volume, brain = ixi_head(data_dir, VALIDATION_IXI[0])
    image, mapping = to_grid(volume)
    assert image.shape == GRID_SHAPE and image.dtype == np.float32
    # the head's robust range maps to about [0, 1]
    assert -0.1 < np.percentile(image, 1) and 0.6 < np.percentile(image, 99.5) < 1.6
    fraction = mapping.volume_to_grid(brain.astype(np.float32), order=1)
    back = mapping.labels_to_volume(np.stack([1.0 - fraction, fraction], axis=-1)) == 1
    assert back.shape == volume.shape3
    assert dice(back, brain) >= 0.99  # measured 0.996
    nearest = mapping.labels_to_volume(mapping.volume_to_grid(brain.astype(np.uint8), order=0)) == 1
    assert dice(nearest, brain) >= 0.95  # measured 0.97 (3.75 mm blocks)


def test_grid_is_the_same_for_any_orientation(data_dir):
    volume, brain = ixi_head(data_dir, VALIDATION_IXI[0])
    image, mapping = to_grid(volume)
    # the same head stored with its first two array axes swapped and the last one reversed
    array = np.flip(np.transpose(volume.array, (1, 0, 2)), axis=2)
    direction = volume.direction[:, [1, 0, 2]].copy()
    origin = volume.origin_mm + direction[:, 2] * volume.spacing_mm[2] * (volume.shape3[2] - 1)
    direction[:, 2] *= -1
    other = Volume(np.ascontiguousarray(array), volume.spacing_mm[[1, 0, 2]], origin, direction, volume.modality)
    image2, mapping2 = to_grid(other)
    np.testing.assert_allclose(image2, image, atol=1e-5)
    labels = np.zeros(GRID_SHAPE, np.uint8)
    labels[20:40, 10:30, 30:50] = 5
    back = mapping2.labels_to_volume(labels)
    expected = np.flip(np.transpose(mapping.labels_to_volume(labels), (1, 0, 2)), axis=2)
    assert np.array_equal(back, expected)


# ---- augmentation ---------------------------------------------------------------------------

def _sphere_case():
    image = np.zeros(GRID_SHAPE, np.float32)
    labels = np.zeros(GRID_SHAPE, np.uint8)
    zz = np.indices(GRID_SHAPE).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(zz - np.array([22.0, 40.0, 35.0]), axis=-1) <= 6
    image[ball] = 1.0
    labels[ball] = LABEL_VALUES["eyes"]
    labels[np.linalg.norm(zz - np.array([32.0, 32.0, 32.0]), axis=-1) <= 3] = 255
    return image, labels


def test_augmentation_keeps_image_and_labels_aligned():
    image, labels = _sphere_case()
    rng = np.random.default_rng(7)
    settings = AugmentSettings(orientation_p=0.5)
    for _ in range(6):
        moved_image, moved_labels = spatial(image, labels, rng, settings)
        bright = moved_image > 0.5
        eye = moved_labels == LABEL_VALUES["eyes"]
        assert set(np.unique(moved_labels)) <= {0, LABEL_VALUES["eyes"], 255}  # nearest keeps label values
        centre_image = np.array(ndi.center_of_mass(bright))
        centre_labels = np.array(ndi.center_of_mass(eye))
        assert np.linalg.norm(centre_image - centre_labels) < 0.5  # voxels
        assert abs(int(bright.sum()) - int(eye.sum())) < 0.1 * eye.sum()


def test_field_of_view_cut_removes_features_below_the_level(data_dir):
    """A cut scan shows air and no feature below its lower edge; above it nothing changes."""
    volume, _ = ixi_head(data_dir, VALIDATION_IXI[0])
    image, _ = to_grid(volume)
    labels = np.full(image.shape, LABEL_VALUES["eyes"], np.uint8)
    levels = set()
    for seed in range(8):
        cut_image, cut_labels = fov_cut(image, labels, np.random.default_rng(seed), AugmentSettings(fov_cut_p=1.0))
        cleared = ~np.any(cut_labels, axis=(0, 1))  # axial slices with no label left
        level = int(cleared.sum())
        assert not cleared[level:].any()  # the cleared slices are the lowest ones
        assert np.array_equal(cut_image[:, :, level:], image[:, :, level:])
        if level:
            assert np.ptp(cut_image[:, :, :level]) == 0  # one background value below the cut
        levels.add(level)
    assert len(levels) > 2 and max(levels) <= 0.72 * image.shape[2] + 1


def test_augmentation_is_reproducible_and_varied():
    image, labels = _sphere_case()
    image = ndi.gaussian_filter(image, 2) + 0.3 * (labels > 0)
    a = augment(image, labels, np.random.default_rng(3))
    b = augment(image, labels, np.random.default_rng(3))
    c = augment(image, labels, np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert np.all(np.isfinite(a[0])) and a[0].dtype == np.float32 and a[1].dtype == np.uint8


# ---- training smoke run ---------------------------------------------------------------------

@pytest.mark.slow
def test_training_script_tiny_run_writes_onnx(tmp_path, data_dir):
    pytest.importorskip("keras", reason="training needs the [train] extra")
    pytest.importorskip("onnx", reason="training needs the [train] extra")
    import onnxruntime as ort

    out = tmp_path / "model" / "face_unet.onnx"
    env = dict(os.environ, DEFACER_TEST_DATA=str(data_dir))
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "train_face_model.py"), "--tiny", "--seed", "1",
                          "--out", str(out), "--cache", str(tmp_path / "cache")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "validation Dice" in run.stdout
    assert out.stat().st_size > 100_000 and (out.parent / "face_unet.keras").exists()
    card = (out.parent / "MODEL_CARD.md").read_text()
    assert "--tiny" in card and "| brain |" in card and "CC BY-SA 3.0" in card
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"image": np.zeros((1, 1) + GRID_SHAPE, np.float32)})[0]
    assert probs.shape == (1, 6) + GRID_SHAPE
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


# ---- the shipped model ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped_results(data_dir):
    from DeFacerLib.face import segment_features

    results = {}
    for rel in VALIDATION_IXI:
        volume, brain = ixi_head(data_dir, rel)
        results[rel] = (volume, brain, segment_features(volume))
    return results


@pytest.mark.slow
def test_shipped_model_finds_the_brain(shipped_results):
    scores = {rel: dice(result.masks["brain"], brain) for rel, (_, brain, result) in shipped_results.items()}
    assert len(scores) == 3
    assert min(scores.values()) >= 0.85, scores


@pytest.mark.slow
def test_shipped_model_finds_ears_and_masks_on_the_input_grid(shipped_results):
    for rel, (volume, _, result) in shipped_results.items():
        assert set(result.masks) == set(FEATURES) | {"brain"}
        assert all(mask.shape == volume.shape3 and mask.dtype == bool for mask in result.masks.values())
        assert result.present["ears"], (rel, result.largest_component_mm3)
        assert 0.5 < result.confidence["brain"] <= 1.0


@pytest.mark.slow
def test_shipped_model_finds_eyes_and_nose_at_the_landmarks(shipped_results):
    from DeFacerLib.face.labels import load_landmarks

    table = load_landmarks(LANDMARKS_PATH)
    for rel, (volume, _, result) in shipped_results.items():
        assert all(result.present[f] for f in ("eyes", "nose")), (rel, result.present)
        marks = table[rel]["landmarks"]
        for feature, names in (("eyes", ("eye_left", "eye_right")), ("nose", ("nose_tip",))):
            voxels = volume.index_to_world(np.argwhere(result.masks[feature]))
            for name in names:
                nearest_mm = np.min(np.linalg.norm(voxels - np.asarray(marks[name]), axis=1))
                assert nearest_mm <= MAX_LANDMARK_DISTANCE_MM, (rel, name, nearest_mm)


MAX_LANDMARK_DISTANCE_MM = 10.0


@pytest.mark.slow
def test_onnx_and_keras_agree_on_a_validation_head(data_dir):
    pytest.importorskip("keras", reason="the Keras backend needs the [train] extra")
    from DeFacerLib.face.segment import _run_keras, _run_onnx

    volume, _ = ixi_head(data_dir, VALIDATION_IXI[0])
    image, _ = to_grid(volume)
    onnx_probs = _run_onnx(image, None)
    keras_probs = _run_keras(image, None)
    assert np.mean(onnx_probs.argmax(-1) == keras_probs.argmax(-1)) >= 0.999
    assert np.abs(onnx_probs - keras_probs).max() < 1e-3


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_the_model_uses_the_cpus_this_process_may_run_on(tmp_path, monkeypatch):
    """A Slurm job or container given 1 CPU of a bigger machine ran the face model with one
    thread per core of the machine (os.cpu_count); a batch's local workers each ran that many
    too. Now: the process's CPU set, or the worker's share that batch.runner sets."""
    code = ("import os, sys\n"
            "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
            "from DeFacerLib.face.segment import onnx_threads\n"
            "print(onnx_threads())\n")
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if k != "DEFACER_ONNX_THREADS"})
    assert alone.returncode == 0 and alone.stdout.split() == ["1"], alone.stderr
    shared = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DEFACER_ONNX_THREADS": "3"})
    assert shared.stdout.split() == ["3"], shared.stderr
    for text in ("²", "two", "-1", "0"):  # "²" passed str.isdigit and int() raised: the face model failed
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "DEFACER_ONNX_THREADS": text})
        assert other.returncode == 0 and other.stdout.split() == ["1"], (text, other.stderr)
    from DeFacerLib.batch.runner import _worker_threads
    from DeFacerLib.face.segment import usable_cpus

    monkeypatch.delenv("DEFACER_ONNX_THREADS", raising=False)
    assert _worker_threads(2) == {"DEFACER_ONNX_THREADS": str(max(1, usable_cpus() // 2))}
    assert _worker_threads(10 * usable_cpus()) == {"DEFACER_ONNX_THREADS": "1"}
    monkeypatch.setenv("DEFACER_ONNX_THREADS", "3")  # the user's (a container's CPU quota): kept
    assert _worker_threads(2) == {"DEFACER_ONNX_THREADS": "3"}
