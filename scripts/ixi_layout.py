"""Where an IXI head's reference brain lies in the shared test data, for scripts and tests alike.

heads/ixi/t1/IXI162-HH-1548_T1.nii.gz has its brain labels (DLMUSE, non-zero = brain) in
heads/ixi/brain_labels/IXI162-HH-1548_T1_DLMUSE.nii.gz.
"""
from __future__ import annotations

from pathlib import Path


def brain_labels_of(t1: str | Path, ixi_dir: str | Path) -> Path:
    """The reference brain labels of the IXI T1 named ``t1`` (a name or path), under ``ixi_dir``
    (the folder holding t1/ and brain_labels/), whether or not the file exists."""
    return Path(ixi_dir) / "brain_labels" / Path(t1).name.replace("_T1.nii.gz", "_T1_DLMUSE.nii.gz")


def study_parser(description: str):
    """The command line of a study over the IXI heads: --data, --heads, --out, --json."""
    import argparse
    import os

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=os.environ.get("DEFACER_TEST_DATA", "../shared/data"))
    parser.add_argument("--heads", type=int, default=27, help="the first N IXI heads (default: all 27)")
    parser.add_argument("--out", help="keep the copies, outputs and QA reports here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    return parser


def study_rows(args, evaluate) -> list[dict]:
    """``evaluate(t1, brain_labels, work_folder)`` -> rows, for each of the first ``args.heads``
    IXI heads, each row printed to standard error as it comes."""
    import json
    import sys
    import tempfile

    ixi = Path(args.data) / "heads" / "ixi"
    heads = sorted((ixi / "t1").glob("IXI*_T1.nii.gz"))[: args.heads]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.out or scratch)
        work.mkdir(parents=True, exist_ok=True)
        for t1 in heads:
            for row in evaluate(t1, brain_labels_of(t1, ixi), work):
                rows.append(row)
                print(json.dumps(row) if args.json else row, file=sys.stderr, flush=True)
    return rows
