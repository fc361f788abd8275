"""`defacer scrub --clean-recognizable-visual-features` on DICOM photographs: faces hidden, cost.

Each of the nine labelled group photos of photos/dlib_faces (43 hand-labelled faces) is stored
as an RGB Secondary Capture (modality XC) with a patient's name. The folder is scrubbed with and
without the option, alternating, ``--repeat`` times (median seconds; the run without it is the
header-only scrub every file gets anyway). Counted on the option's outputs: the labelled faces
whose box is at least 90 % filled, the faces YuNet still finds in any orientation, and the share
of each photo's pixels that changed.

    python scripts/benchmark_dicom_faces.py [--repeat 3] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from markdown_out import publish  # noqa: E402

from DeFacerLib.photo.anonymize import UNATTENDED, find_faces  # noqa: E402
from DeFacerLib.photo.detect import read_labelled_boxes  # noqa: E402
from DeFacerLib.photo.media import read_image  # noqa: E402

HIDDEN_SHARE = 0.9  # a labelled face counts as hidden when this share of its box changed


def dicom_photo(rgb: np.ndarray, path: Path, patient: str = "Test^Patient") -> pydicom.Dataset:
    """``rgb`` (uint8) saved at ``path`` as an uncompressed RGB Secondary Capture of ``patient``
    (modality XC, as an external camera's photo); the tests build their DICOM photos with it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.Modality = patient, "XC"
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.ascontiguousarray(rgb).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def scrub(folder: Path, out: Path, key: Path, option: bool) -> float:
    command = [sys.executable, "-m", "DeFacerLib", "scrub", str(folder), str(out), "--key-file", str(key), "-q",
               "--overwrite"] + (["--clean-recognizable-visual-features"] if option else [])
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("DEFACER_TEST_DATA", "../shared/data"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="also write the Markdown block here")
    args = parser.parse_args()
    photos = Path(args.data) / "photos" / "dlib_faces"
    truth = {}
    for name in ("training.xml", "testing.xml"):
        truth.update(read_labelled_boxes(photos / name))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "in").mkdir()
        images = {}
        for index, name in enumerate(sorted(truth)):
            images[name] = read_image(photos / name)
            dicom_photo(images[name], work / "in" / f"{Path(name).stem}.dcm", f"Doe^Jane{index}")
        seconds = {False: [], True: []}
        for _ in range(args.repeat):
            for option in (False, True):
                seconds[option].append(scrub(work / "in", work / f"out_{option}", work / "key", option))
        hidden = labelled = 0
        left: list[float] = []  # the scores of what YuNet still finds (recall first: score >= 0.5)
        changed_shares = []
        for name, boxes in truth.items():
            after = pydicom.dcmread(work / "out_True" / f"{Path(name).stem}.dcm").pixel_array
            changed = (after != images[name]).any(axis=-1)
            changed_shares.append(float(changed.mean()))
            for x0, y0, x1, y1 in boxes:
                box = changed[max(int(y0), 0):max(int(y1), 1), max(int(x0), 0):max(int(x1), 1)]
                labelled += 1
                hidden += bool(box.size) and float(box.mean()) >= HIDDEN_SHARE
            left += [face.score for face in find_faces(after, UNATTENDED)]
        before = [face.score for image in images.values() for face in find_faces(image, UNATTENDED)]
    plain, with_option = statistics.median(seconds[False]), statistics.median(seconds[True])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"`python scripts/benchmark_dicom_faces.py --repeat {args.repeat}` ({now}, {os.cpu_count()} cores, load "
        f"{load:.2f} before; {len(truth)} photos, {labelled} labelled faces):",
        "",
        "| | scrub (header only) | scrub `--clean-recognizable-visual-features` |",
        "|---|---:|---:|",
        f"| seconds for the {len(truth)} photos (median of {args.repeat}, whole command) | {plain:.2f} | {with_option:.2f} "
        f"({with_option / plain:.1f}x) |",
        f"| labelled faces whose box is >= {HIDDEN_SHARE:.0%} filled | 0 of {labelled} | {hidden} of {labelled} |",
        f"| faces YuNet finds, any orientation, at its recall-first 0.5 (the labelled faces, more in the "
        f"background, hands) | {len(before)} | {len(left)} (scores {min(left, default=0):.2f}-{max(left, default=0):.2f}) |",
        f"| ... at 0.75, what `defacer qa` counts as a face | {sum(s >= 0.75 for s in before)} | "
        f"{sum(s >= 0.75 for s in left)} |",
        f"| share of each photo's pixels changed | 0 | {min(changed_shares):.2f}-{max(changed_shares):.2f} "
        f"(median {statistics.median(changed_shares):.2f}) |",
    ]
    publish(lines, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
