"""Deface the built-in synthetic heads (an MR and a CT in another orientation) end to end.

Writes the phantom heads, their label maps, the defaced outputs with provenance sidecars,
and before/after skin renders, so a new user sees the whole job without any data of their own.
"""
from __future__ import annotations

from pathlib import Path

NAME = "demo"
HELP = "deface the built-in synthetic heads and write outputs plus QA pictures"

DEMO_HEADS = (
    # file stem, modality, array orientation (3-letter code)
    ("phantom_T1w", "MR", "LPS"),
    ("phantom_ct", "CT", "RAS"),
)


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_output", help="folder for the demo outputs (default: demo_output)")
    parser.add_argument("--no-qa", action="store_true", help="skip the QA renders")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier demo run")


def run(args) -> dict:
    from rich.console import Console

    from DeFacerLib.cli.progress import progress_callback
    from DeFacerLib.deface.workflow import deface_file
    from DeFacerLib.io import write_volume
    from DeFacerLib.phantom import make_phantom

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for stem, modality, orientation in DEMO_HEADS:
        head, labels = make_phantom(modality=modality, orientation=orientation)
        head_path = write_volume(head, out / f"{stem}.nii.gz", overwrite=args.overwrite)
        labels_path = write_volume(head.label_map(labels), out / f"{stem}_labels.nii.gz", overwrite=args.overwrite)
        with progress_callback(f"defacing {stem}", args.quiet) as progress:
            outcome = deface_file(
                head_path,
                out / f"{stem}_defaced.nii.gz",
                labels_path=labels_path,
                qa_dir=None if args.no_qa else out / "qa",
                overwrite=args.overwrite,
                progress=progress,
            )
        results.append(outcome)
        if not args.quiet and not args.json:
            removed = ", ".join(
                f"{name} {entry['voxels_removed']:,}" for name, entry in outcome["report"]["features"].items()
            )
            Console().print(f"[bold]{stem}[/] ({modality}, {orientation}): removed voxels: {removed}; "
                            f"protected voxels changed: {outcome['report']['protected_voxels_changed']}")
            if outcome.get("qa_figure"):
                Console().print(f"  QA picture: {outcome['qa_figure']}")
    return {"outputs": results}
