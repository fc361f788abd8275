"""DeFacer on PET-like heads made from the IXI T1s: the brain guarantee and the face check.

The project has no real head PET with a reference brain, so each IXI head is turned into a
PET-like copy of itself (pet_like_copy): uptake 1 in the head's soft tissue, 4 in the reference
brain (FDG's brain-to-scalp ratio is 4-8), blurred to 6 mm FWHM (a PET scanner's resolution),
with Poisson-like noise; 0 outside. Each copy is defaced by the CLI (`defacer deface`, the
name `*_pet.nii.gz` says PET), the reference-brain voxels that changed are counted, and
`defacer qa` judges the face (rendered at the PET skin threshold).

    python scripts/evaluate_pet_like.py [--heads N] [--out DIR] [--json]
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ixi_layout import study_parser, study_rows  # noqa: E402

SOFT_TISSUE_UPTAKE = 1.0
BRAIN_UPTAKE = 4.0
FWHM_MM = 6.0
SCALE = 1000.0  # stored as float32 Bq/ml-like values


def pet_like_copy(t1_path: Path, brain_path: Path, out_path: Path, seed: int = 0,
                  brain_uptake: float = BRAIN_UPTAKE) -> Path:
    """A PET-like copy of a T1 head (same grid and affine): see the module docstring.
    ``brain_uptake``: the brain's over the soft tissue's (1: a tracer the brain takes no more of)."""
    from DeFacerLib.intensity import otsu_threshold

    image = nib.load(t1_path)
    t1 = np.asarray(image.dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(brain_path).dataobj) > 0
    head = ndi.binary_fill_holes(ndi.binary_closing(t1 > otsu_threshold(t1), iterations=2))
    uptake = SOFT_TISSUE_UPTAKE * head + (brain_uptake - SOFT_TISSUE_UPTAKE) * brain
    sigma_vox = FWHM_MM / 2.355 / np.asarray(image.header.get_zooms()[:3], dtype=float)
    uptake = ndi.gaussian_filter(uptake.astype(np.float32), sigma_vox)
    noise = np.random.default_rng(seed).normal(0.0, 0.05, uptake.shape).astype(np.float32)
    uptake = np.clip(uptake + noise * np.sqrt(np.maximum(uptake, 0.0)), 0.0, None)
    pet = nib.Nifti1Image((uptake * SCALE).astype(np.float32), image.affine)
    pet.header.set_xyzt_units("mm")
    nib.save(pet, out_path)
    return out_path


def evaluate(t1_path: Path, brain_path: Path, work: Path) -> dict:
    subject = t1_path.name.split("-")[0]
    source = pet_like_copy(t1_path, brain_path, work / f"{subject}_pet.nii.gz")
    defaced = work / f"{subject}_pet_defaced.nii.gz"
    command = [sys.executable, "-m", "DeFacerLib"]
    run = subprocess.run([*command, "deface", "-q", str(source), str(defaced)], capture_output=True, text=True)
    if run.returncode:
        return {"head": subject, "error": run.stderr.strip()}
    before, after = (np.asarray(nib.load(p).dataobj) for p in (source, defaced))
    brain = np.asarray(nib.load(brain_path).dataobj) > 0
    changed = before != after
    qa = subprocess.run([*command, "qa", "--json", str(source), str(defaced), "--out", str(work / f"qa_{subject}")],
                        capture_output=True, text=True)
    check = json.loads(qa.stdout)["check"]
    front = next(v for v in check["views"] if v["view"] == "front" and not v.get("variant"))
    return {"head": subject, "voxels_changed": int(changed.sum()), "brain_voxels_changed": int((changed & brain).sum()),
            "qa": check["verdict"], "original_front_face_score": front["original_face_score"],
            "defaced_front_face_score": front["defaced_face_score"]}


def main() -> int:
    args = study_parser(__doc__.splitlines()[0]).parse_args()
    rows = study_rows(args, lambda t1, brain, work: [evaluate(t1, brain, work)])
    done = [r for r in rows if "error" not in r]
    summary = {"heads": len(rows), "defaced": len(done),
               "heads_with_brain_voxels_changed": sum(r["brain_voxels_changed"] > 0 for r in done),
               "brain_voxels_changed_max": max((r["brain_voxels_changed"] for r in done), default=0),
               "qa_pass": sum(r["qa"] == "PASS" for r in done),
               "original_front_face_found": sum(r["original_front_face_score"] >= 0.75 for r in done),
               "defaced_front_face_found": sum(r["defaced_front_face_score"] >= 0.75 for r in done)}
    print(json.dumps({"summary": summary, "rows": rows}, indent=2) if args.json else summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
