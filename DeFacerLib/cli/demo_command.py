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
    from DeFacerLib.cli.main import folder_path

    parser.add_argument("--out", default="demo_output", metavar="DIR", type=folder_path, help="folder for the demo outputs (default: demo_output)")
    parser.add_argument("--no-qa", action="store_true", help="skip the QA renders")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier demo run")


def run(args) -> dict:
    from DeFacerLib.errors import require_extra
    from DeFacerLib.io.atomic import check_output_folder, make_folder

    out = Path(args.out)
    check_output_folder(out, "--out folder")
    if not args.no_qa:  # the core install has no renderer: say so before anything is written
        require_extra("vtk", "qa", "defacer demo (without --no-qa)")
    created = make_folder(out if args.no_qa else out / "qa", "demo folder")
    written: list[Path] = []
    try:
        return {"outputs": [_demo_head(args, out, stem, modality, orientation, written)
                            for stem, modality, orientation in DEMO_HEADS]}
    except BaseException:  # an error or Ctrl-C half way: no partial demo is left behind
        _remove_written(written, created)
        raise


def _demo_head(args, out: Path, stem: str, modality: str, orientation: str, written: list[Path]) -> dict:
    from DeFacerLib.cli.progress import progress_callback, summary_console
    from DeFacerLib.deface.workflow import deface_file
    from DeFacerLib.io import write_volume
    from DeFacerLib.phantom import make_phantom

    head, labels = make_phantom(modality=modality, orientation=orientation)
    head_path = write_volume(head, out / f"{stem}.nii.gz", overwrite=args.overwrite)
    written.append(Path(head_path))
    labels_path = write_volume(head.label_map(labels), out / f"{stem}_labels.nii.gz", overwrite=args.overwrite)
    written.append(Path(labels_path))
    with progress_callback(f"defacing {stem}", args.quiet) as progress:
        outcome = deface_file(
            head_path,
            out / f"{stem}_defaced.nii.gz",
            labels_path=labels_path,
            qa_dir=None if args.no_qa else out / "qa",
            overwrite=args.overwrite,
            progress=progress,
        )
    written += [Path(outcome[key]) for key in ("output", "sidecar", "qa_figure") if outcome.get(key)]
    if not args.quiet and not args.json:
        removed = ", ".join(
            f"{name} {entry['voxels_removed']:,}" for name, entry in outcome["report"]["features"].items()
        )
        console = summary_console()
        console.print(f"{stem} ({modality}, {orientation}): removed voxels: {removed}; "
                      f"protected voxels changed: {outcome['report']['protected_voxels_changed']}", markup=False)
        if outcome.get("qa_figure"):  # markup off: a "[/x]" in --out is a path, not rich markup
            console.print(f"  QA picture: {outcome['qa_figure']}", markup=False)
    return outcome


def _remove_written(written: list[Path], created: list[Path]) -> None:
    """Delete what this run wrote, then the folders it made (when left empty)."""
    import contextlib

    from DeFacerLib.io.atomic import remove_made_folders

    for path in written:
        with contextlib.suppress(OSError):
            path.unlink()
    remove_made_folders(created)