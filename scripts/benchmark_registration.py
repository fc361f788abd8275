#!/usr/bin/env python3
"""Does defacing disturb a standard registration? An affine registration of each defaced head to
an undefaced reference head, scored by how well the brains line up.

    python scripts/benchmark_registration.py ../shared/data/heads/ixi \\
        --variant "DeFacer default=build/reid_study/defacer" \\
        --variant "DeFacer --shield=build/reid_study/defacershield" [--markdown FILE]

Why: defacing changes what an intensity-based registration sees (a face removed, a seal, or with
``--shield`` a block of tissue in front), and registration to a template is the first step of most
analyses. For every IXI head but the reference, the original and each variant (same file names)
are registered to the reference's ORIGINAL head (a template is undefaced) with SimpleITK: affine,
Mattes mutual information (50 bins, 20 % of voxels sampled, fixed seed), three levels (4, 2, 1;
smoothing 2, 1, 0 mm; one thread), the whole head, as a user would run it. The moving head's brain label
(IXI's DLMUSE, label > 0) carried through the transform is scored by Dice against the
reference's brain: the brain the defacer never touches must still land where it did.

``--mask-defaced``: each defaced head is registered again with the region DeFacer may have
changed masked out of the metric (deface.changed_region_mask, built from the boxes its sidecar
``NAME.defacer.json`` records: what a user can do with the output alone), and so is the
original with the same mask, to show what the mask itself costs.

A few heads sit near a local minimum, where the metric's random sample decides where the
registration ends (0.05-0.15 Dice either way). ``--seeds K`` registers every head with K sampling
seeds and scores each head by the median of its K results, so that one unlucky sample does not
count as the defacing's doing; ``--jobs`` spreads the heads over processes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from concurrent.futures import ProcessPoolExecutor
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_out import publish  # noqa: E402
from reid_study import brain_mask_for  # noqa: E402  (the study's IXI layout: its outputs are registered here)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from DeFacerLib.deface.removal import changed_region_mask  # noqa: E402

REFERENCE = "IXI162-HH-1548_T1.nii.gz"  # held out from training; any head would do
SEED = 20261205


def register(fixed: sitk.Image, moving: sitk.Image, seed: int = SEED, moving_mask: sitk.Image | None = None) -> sitk.Transform:
    """Affine, moving -> fixed, as described in the module docstring; ``moving_mask`` (1: use)
    keeps the rest of the moving head out of the metric."""
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed=seed)
    if moving_mask is not None:
        method.SetMetricMovingMask(moving_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=200,
                                         convergenceMinimumValue=1e-6, convergenceWindowSize=10)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def brain_dice(fixed_brain: sitk.Image, moving_brain: sitk.Image, transform: sitk.Transform) -> float:
    carried = sitk.Resample(moving_brain, fixed_brain, transform, sitk.sitkNearestNeighbor, 0, moving_brain.GetPixelID())
    a = sitk.GetArrayViewFromImage(fixed_brain) > 0
    b = sitk.GetArrayViewFromImage(carried) > 0
    return float(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def outside_defaced(folder: Path, name: str, like: sitk.Image) -> sitk.Image:
    """1 outside the region DeFacer may have changed in ``folder``'s output ``name`` (from its
    sidecar's boxes), 0 inside; on ``like``'s grid."""
    record = json.loads((folder / name.replace(".nii.gz", ".defacer.json")).read_text())
    changed = changed_region_mask(record["report"], like.GetSize())  # (i, j, k), as DeFacer's arrays
    mask = sitk.GetImageFromArray((~changed).T.astype(np.uint8))  # SimpleITK's arrays are (k, j, i)
    mask.CopyInformation(like)
    return mask


def score_head(heads_dir: Path, variants: dict[str, str], name: str, seeds: int,
               mask_defaced: bool = False) -> dict[str, float]:
    """Each variant of one moving head: the median brain Dice over ``seeds`` sampling seeds."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one thread: fewer run-to-run differences
    t1 = heads_dir / "t1"
    fixed = sitk.ReadImage(str(t1 / REFERENCE), sitk.sitkFloat32)
    fixed_brain = sitk.ReadImage(str(brain_mask_for(t1 / REFERENCE, heads_dir)))
    moving_brain = sitk.ReadImage(str(brain_mask_for(t1 / name, heads_dir)))
    runs = []  # (row, moving head, metric mask)
    original = sitk.ReadImage(str(t1 / name), sitk.sitkFloat32)
    for variant, folder in variants.items():
        moving = sitk.ReadImage(str(Path(folder) / name), sitk.sitkFloat32)
        runs.append((variant, moving, None))
        if mask_defaced and Path(folder) != t1:
            mask = outside_defaced(Path(folder), name, moving)
            runs += [(f"{variant}, its boxes masked out", moving, mask),
                     (f"original, masked as {variant}", original, mask)]
    return {row: float(np.median([brain_dice(fixed_brain, moving_brain, register(fixed, moving, SEED + k, mask))
                                  for k in range(seeds)]))
            for row, moving, mask in runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("heads_dir", type=Path, help="IXI layout: t1/ and brain_labels/")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR", help="defaced heads, same names")
    parser.add_argument("--limit", type=int, help="only the first N moving heads")
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds per head; the head's score is their median")
    parser.add_argument("--jobs", type=int, default=1, help="processes (one thread each)")
    parser.add_argument("--mask-defaced", action="store_true",
                        help="also register each defaced head (and the original) with DeFacer's boxes masked out")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    t1 = args.heads_dir / "t1"
    variants = {"original (no defacing)": str(t1)}
    variants.update(dict(spec.split("=", 1) for spec in args.variant))
    moving_names = [p.name for p in sorted(t1.glob("*_T1.nii.gz")) if p.name != REFERENCE][: args.limit]
    dice: dict[str, list[float]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = pool.map(score_head, *zip(*[(args.heads_dir, variants, name, args.seeds, args.mask_defaced)
                                              for name in moving_names]))
        for name, scores in zip(moving_names, results):
            for row, value in scores.items():
                dice.setdefault(row, []).append(value)
            print(name, " ".join(f"{v}: {d[-1]:.3f}" for v, d in dice.items()), file=sys.stderr, flush=True)
    original = np.asarray(dice["original (no defacing)"])
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"- Date: {now}; machine: {os.cpu_count()} cores, {platform.machine()}; {len(moving_names)} IXI heads "
        f"registered to {REFERENCE.split('_')[0]}'s original head; {args.seeds} sampling seed(s) per head "
        f"(median); {time.perf_counter() - started:.0f} s in all",
        "",
        "| moving heads | brain Dice after affine registration: median (min) | change against the original, median (worst) "
        "| heads worse than the original by > 0.02 / > 0.05 |",
        "|---|---:|---:|---:|",
    ]
    for variant, values in dice.items():
        values = np.asarray(values)
        delta = values - original
        lines.append(f"| {variant} | {np.median(values):.3f} ({values.min():.3f}) | "
                     f"{np.median(delta):+.3f} ({delta.min():+.3f}) | "
                     f"{int(np.sum(delta < -0.02))} / {int(np.sum(delta < -0.05))} |")
    publish(lines, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
