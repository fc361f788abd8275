#!/usr/bin/env python3
"""The most a brain-preserving removal can take, for the re-identification study's floor.

    python scripts/reid_brain_shell.py ../shared/data/heads/ixi build/brain_shell_10 --shell-mm 10 --seal-from-mm 4
    python scripts/reid_study.py ../shared/data/heads/ixi --no-defacer --no-quickshear \\
        --defaced "brain shell 10 mm=build/brain_shell_10"

Why: the adaptive attacker (scripts/reid_study.py) matches what is left of a head, not its
face. This removes, in front of the reference brain's centre, every head voxel farther than
``--shell-mm`` from the brain (IXI's DLMUSE labels), and fills the band from
``--seal-from-mm`` to ``--shell-mm`` with the head's median value, so the front of the head
becomes a closed surface that follows the brain. No defacer that keeps the brain (and some
skull over it) can leave less of the person in front; what the attacker still matches there
is the floor. The brain is never changed (checked for every head). Outputs keep each file's
grid, header, stored type and scaling.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface import head_mask
from DeFacerLib.io import read_volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reid_study import brain_mask_for  # noqa: E402  (the study's IXI layout)


def brain_shell(head_path: Path, brain_path: Path, out_path: Path, shell_mm: float, seal_from_mm: float) -> int:
    """Write the shelled head; returns the number of voxels changed."""
    image = nib.load(str(head_path))
    stored = np.asarray(image.dataobj.get_unscaled())
    brain = np.asanyarray(nib.load(str(brain_path)).dataobj) > 0
    head = head_mask(read_volume(head_path))
    spacing_mm = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    from_brain_mm = ndi.distance_transform_edt(~brain, sampling=spacing_mm)
    world = nib.affines.apply_affine(image.affine, np.indices(stored.shape).reshape(3, -1).T).reshape(*stored.shape, 3)
    front_half = world[..., 1] > world[..., 1][brain].mean()  # RAS: +y is anterior
    out = stored.copy()
    out[head & front_half & (from_brain_mm > shell_mm)] = np.median(stored[~head])
    out[head & front_half & (from_brain_mm > seal_from_mm) & (from_brain_mm <= shell_mm)] = np.median(stored[head])
    if np.any(out[brain] != stored[brain]):
        raise AssertionError(f"{head_path.name}: the brain changed")
    shelled = nib.Nifti1Image(out, image.affine, image.header.copy())
    shelled.header.set_slope_inter(image.dataobj.slope, image.dataobj.inter)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(shelled, str(out_path))
    return int(np.count_nonzero(out != stored))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("heads_dir", type=Path, help="IXI layout: t1/ and brain_labels/")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--shell-mm", type=float, default=10.0, help="removed beyond this distance from the brain")
    parser.add_argument("--seal-from-mm", type=float, default=4.0, help="sealed from this distance to --shell-mm")
    args = parser.parse_args()
    for head in sorted((args.heads_dir / "t1").glob("*_T1.nii.gz")):
        changed = brain_shell(head, brain_mask_for(head, args.heads_dir), args.out_dir / head.name, args.shell_mm,
                              args.seal_from_mm)
        print(f"{head.name}: {changed} voxels changed, 0 in the brain", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
