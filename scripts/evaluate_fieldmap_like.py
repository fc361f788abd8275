"""Do BIDS field-map magnitude images show a face, and can DeFacer take it off them?

A GRE field map's magnitude images (``fmap/*_magnitude1.nii.gz``) cover the head at fMRI
resolution, 3-3.5 mm, over the slab the functional runs cover. The project has no real field
map, so each IXI T1 is made into one's geometry (fieldmap_like_copy): smoothed and resampled to
3 x 3 x 3.5 mm voxels (linear; the reference brain by nearest neighbour), either whole or cut
to the slab SLAB_MM below the top of the head. The contrast stays T1's: what is measured is
what the resolution and the slab leave of the face.

Each copy is rendered and checked by `defacer qa` against itself defaced by `defacer deface`
(what batch's face check does with an image outside the anatomical rule), and the reference
brain voxels that changed are counted.

    python scripts/evaluate_fieldmap_like.py [--heads N] [--out DIR] [--json]
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ixi_layout import study_parser, study_rows  # noqa: E402

SPACING_MM = (3.0, 3.0, 3.5)  # a typical gre_field_mapping's voxels (64 x 64 matrix, 3 mm + gap slices)
SLAB_MM = 140.0  # whole-brain fMRI coverage from the top of the head down: through the nose


def fieldmap_like_copy(t1_path: Path, brain_path: Path, out_dir: Path, slab: bool) -> tuple[Path, Path]:
    """(image, brain labels) on a field map's grid: see the module docstring."""
    image = sitk.ReadImage(str(t1_path), sitk.sitkFloat32)
    labels = sitk.ReadImage(str(brain_path))
    spacing = np.array(SPACING_MM)
    size = np.ceil(np.array(image.GetSize()) * np.array(image.GetSpacing()) / spacing).astype(int)
    sigma = np.sqrt(np.maximum(spacing ** 2 - np.array(image.GetSpacing()) ** 2, 0.0)) / 2.355
    smoothed = sitk.SmoothingRecursiveGaussian(image, [float(s) for s in sigma])

    def on_grid(volume, interpolator):
        return sitk.Resample(volume, [int(n) for n in size], sitk.Transform(), interpolator, image.GetOrigin(),
                             [float(s) for s in spacing], image.GetDirection(), 0.0, volume.GetPixelID())

    copy, brain = on_grid(smoothed, sitk.sitkLinear), on_grid(labels, sitk.sitkNearestNeighbor)
    if slab:  # keep SLAB_MM below the top of the head, along the axis closest to superior
        array = sitk.GetArrayFromImage(copy)  # (k, j, i)
        direction = np.array(image.GetDirection()).reshape(3, 3)
        axis = int(np.argmax(np.abs(direction[2, :])))
        numpy_axis = 2 - axis
        occupied = np.flatnonzero((array > np.percentile(array, 60)).any(axis=tuple(a for a in range(3) if a != numpy_axis)))
        up = direction[2, axis] > 0
        top = occupied[-1] if up else occupied[0]
        keep = int(SLAB_MM / spacing[axis])
        first, last = (max(top - keep, 0), top) if up else (top, min(top + keep, array.shape[numpy_axis] - 1))
        index = [0, 0, 0]
        extent = list(copy.GetSize())
        index[axis], extent[axis] = int(first), int(last - first + 1)
        copy, brain = (sitk.RegionOfInterest(v, extent, index) for v in (copy, brain))
    stem = t1_path.name.split("-")[0] + ("_slab" if slab else "_whole")
    image_path, brain_path_out = out_dir / f"{stem}_magnitude1.nii.gz", out_dir / f"{stem}_brain.nii.gz"
    sitk.WriteImage(sitk.Cast(sitk.RescaleIntensity(copy, 0, 255), sitk.sitkUInt8), str(image_path))
    sitk.WriteImage(brain, str(brain_path_out))
    return image_path, brain_path_out


def evaluate(t1_path: Path, brain_path: Path, work: Path, slab: bool) -> dict:
    source, brain_path = fieldmap_like_copy(t1_path, brain_path, work, slab)
    row = {"head": source.name.split("_")[0], "slab": slab}
    command = [sys.executable, "-m", "DeFacerLib"]
    defaced = work / source.name.replace("_magnitude1", "_defaced")
    run = subprocess.run([*command, "deface", "-q", str(source), str(defaced)], capture_output=True, text=True)
    row["deface_exit"] = run.returncode
    target = defaced if run.returncode == 0 else source  # not defaced: the copy as batch would judge it
    qa = subprocess.run([*command, "qa", "--json", str(source), str(target), "--out", str(work / f"qa_{source.stem}")],
                        capture_output=True, text=True)
    check = json.loads(qa.stdout)["check"]
    front = next(v for v in check["views"] if v["view"] == "front" and not v.get("variant"))
    row.update(original_front_face_score=front["original_face_score"], original_front_dlib_faces=front["original_dlib_faces"])
    if run.returncode == 0:
        before, after = (np.asarray(nib.load(p).dataobj) for p in (source, defaced))
        brain = np.asarray(nib.load(brain_path).dataobj) > 0
        row.update(brain_voxels_changed=int(((before != after) & brain).sum()), qa=check["verdict"],
                   defaced_front_face_score=front["defaced_face_score"])
    else:
        row["error"] = run.stderr.strip()
    return row


def main() -> int:
    args = study_parser(__doc__.splitlines()[0]).parse_args()
    rows = study_rows(args, lambda t1, brain, work: [evaluate(t1, brain, work, slab) for slab in (False, True)])
    summary = {}
    for name, slab in (("whole", False), ("slab", True)):
        chosen = [r for r in rows if r["slab"] == slab]
        done = [r for r in chosen if r["deface_exit"] == 0]
        summary[name] = {
            "heads": len(chosen),
            "original_front_face_found_yunet": sum(r["original_front_face_score"] >= 0.75 for r in chosen),
            "original_front_face_found_dlib": sum(r["original_front_dlib_faces"] > 0 for r in chosen),
            "defaced": len(done),
            "face_not_found": sum(r["deface_exit"] == 3 for r in chosen),
            "heads_with_brain_voxels_changed": sum(r["brain_voxels_changed"] > 0 for r in done),
            "qa_pass": sum(r["qa"] == "PASS" for r in done),
            "defaced_front_face_found_yunet": sum(r["defaced_front_face_score"] >= 0.75 for r in done)}
    print(json.dumps({"summary": summary, "rows": rows}, indent=2) if args.json else json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
