"""Remove the chosen facial features from a head volume, keeping its format, geometry and header.

Only voxels in the chosen features' boxes (plus a margin; around the ears also what stands
proud of the head's side), in the whole face's box in front of the face plane and under its
floor (--whole-face, the default) and, with --shield, in the shield's block change, never the
protected brain (README.md says how far each cut reaches, and why); a JSON provenance sidecar is
written beside the output (for a DICOM series, in OUTPUT.audit/).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from DeFacerLib.cli.scrub_command import FLAGS, add_profile_arguments, new_key_note, options_from_args
from DeFacerLib.features import (
    DEFAULT_MARGIN_MM,
    DEFAULT_MAX_DEPTH_MM,
    DEFAULT_PROTECT_MARGIN_MM,
    DEFAULT_SEAL_MM,
    DEFAULT_SHIELD,
    DEFAULT_WHOLE_FACE,
    EARS_MAX_DEPTH_MM,
    SEAL_MIN_VOXELS,
)

NAME = "deface"
HELP = "remove eyes, nose, mouth and/or ears from a head volume"


def add_removal_arguments(parser) -> None:
    """What to remove and how far (shared with ``batch``)."""
    parser.add_argument("--features", default="all", help="comma-separated subset of eyes,nose,mouth,ears (default: all)")
    parser.add_argument("--margin-mm", type=distance_mm,
                        help=f"margin added around each feature's bounding box (default: {DEFAULT_MARGIN_MM:g})")
    parser.add_argument("--max-depth-mm", type=distance_mm,
                        help=f"deepest tissue below the skin that may be removed (default: {DEFAULT_MAX_DEPTH_MM:g}; "
                             f"the ears at most {EARS_MAX_DEPTH_MM:g})")
    parser.add_argument("--protect-margin-mm", type=distance_mm,
                        help=f"safety distance kept from the protected region (default: {DEFAULT_PROTECT_MARGIN_MM:g}; "
                             "deep cuts next to a predicted brain keep more)")
    parser.add_argument("--seal-mm", type=distance_mm,
                        help="deepest part of each face cut set to tissue, not air, so the new surface is the cut, "
                             f"with the eye visor (0: air only, no visor; default: {DEFAULT_SEAL_MM:g}, at least "
                             f"{SEAL_MIN_VOXELS} voxels)")
    parser.add_argument("--whole-face", action=argparse.BooleanOptionalAction, default=None,
                        help="also remove the tissue between the chosen eyes, nose and mouth and down past the "
                             "chin, as one box (default: " + ("on" if DEFAULT_WHOLE_FACE else "off") + "; --no-whole-face removes each feature's own box only)")
    parser.add_argument("--shield", action=argparse.BooleanOptionalAction, default=None,
                        help="also close the front of the head, forehead to chin, with a hollow block of tissue up to a "
                             "flat plane 35 mm in front of the eyes, so it is the same featureless front on everyone "
                             "(stronger against re-identification from head shape; adds tissue to the image; "
                             "default: " + ("on" if DEFAULT_SHIELD else "off") + "; needs the whole face)")


def add_modality_argument(parser) -> None:
    """--modality (deface and qa): the input's kind when nothing about the file says it."""
    from DeFacerLib.io.modality import STATED_MODALITIES

    parser.add_argument("--modality", type=str.upper, choices=STATED_MODALITIES,
                        help="the (original) input's modality, over what the file says: a PET read as MR keeps less "
                             "of its brain and is rendered at the brain, not the skin (default: its DICOM Modality, "
                             "a JSON sidecar's (dcm2niix), its name (sub-01_pet, _ct), else CT by its air at "
                             "-1000 HU, else MR)")


def distance_mm(text: str) -> float:
    """argparse type of the millimetre options: a finite number, not negative."""
    from DeFacerLib.deface.removal import MAX_DISTANCE_MM, distance_is_valid

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not distance_is_valid(value):
        raise argparse.ArgumentTypeError(f"must be a finite distance >= 0 mm and <= {MAX_DISTANCE_MM:g} mm (got {text})")
    return value


def parameters_from_args(args):
    """DefaceParameters from the removal options; an unknown feature is a usage error."""
    from DeFacerLib.deface.pipeline import DefaceParameters

    return DefaceParameters(features=args.features, margin_mm=args.margin_mm, max_depth_mm=args.max_depth_mm,
                            protect_margin_mm=args.protect_margin_mm, whole_face=args.whole_face,
                            seal_mm=args.seal_mm, shield=args.shield)


def add_arguments(parser) -> None:
    from DeFacerLib.cli.main import folder_path, input_path, home_path

    parser.add_argument("input", type=input_path, help="head volume file or DICOM series folder")
    parser.add_argument("output", type=home_path, help="output path, in the input's format: a file of the same kind for a volume "
                                       "file; for DICOM a folder, or a .dcm file for an enhanced multi-frame file")
    add_removal_arguments(parser)
    parser.add_argument(
        "--features-from",
        metavar="LABELS",
        type=input_path,
        help="label map on the head's grid: 1 eyes, 2 nose, 3 mouth, 4 ears, 5 brain (brain is protected; without 5, "
             "the U-Net's brain; default: the U-Net finds the features)",
    )
    parser.add_argument("--protect-from", metavar="MASK", type=input_path, help="extra mask (non-zero = protected) on the head's grid (default: none)")
    parser.add_argument("--qa", metavar="DIR", type=folder_path, help="also write a before/after skin render to this folder")
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read when a folder holds several")
    add_modality_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    dicom = parser.add_argument_group(
        "DICOM output",
        "a DICOM input gives a new, de-identified DICOM series (PS3.15 Basic profile plus these options); "
        "mappings, action log and provenance go to OUTPUT.audit/",
    )
    add_profile_arguments(dicom)
    for action in dicom._group_actions:  # scrub's help said what it does; deface_file always refuses it
        if "--clean-pixel-data" in action.option_strings:
            action.help = ("refused here (exit 2): OCR over head slices blacks out what it reads as words in the "
                           "anatomy, the brain too; it is for `defacer scrub` of images that are not head slices")
        if "--clean-recognizable-visual-features" in action.option_strings:
            action.help = "what deface does to the volume itself (recorded as 113102 on every defaced series)"


def run(args) -> dict:
    from DeFacerLib.cli.progress import progress_callback
    from DeFacerLib.deface.workflow import deface_file

    parameters = parameters_from_args(args)
    refuse_dicom_options_without_dicom(args)
    with progress_callback(f"defacing {Path(args.input).name}", args.quiet) as progress:
        outcome = deface_file(
            args.input,
            args.output,
            parameters=parameters,
            labels_path=args.features_from,
            protect_path=args.protect_from,
            series_uid=args.series,
            modality=args.modality,
            qa_dir=args.qa,
            overwrite=args.overwrite,
            dicom_options=dicom_options_from_args(args),
            key_file=args.key_file,
            progress=progress,
        )
    if not args.quiet and not args.json:
        _print_summary(outcome)
    return outcome


def refuse_dicom_options_without_dicom(args) -> None:
    """--key-file and the PS3.15 options shape a DICOM output's header; for a NIfTI, MGZ, NRRD
    or MetaImage input they were ignored without a word (a user who asked for --dates modified
    believed the dates shifted). Refused as --series is for a file that holds no series."""
    from DeFacerLib.errors import UsageError
    from DeFacerLib.io.formats import DICOM_FORMATS, detect_format

    given = profile_options_given(args) + ["--key-file"] * (args.key_file is not None)
    if given and detect_format(args.input) not in DICOM_FORMATS:
        raise UsageError(f"{', '.join(given)}: for a DICOM input only (they set how its new series' header is "
                         f"de-identified); {Path(args.input).name} is not DICOM: leave them out")


def dicom_options_from_args(args):
    """The PS3.15 options for a DICOM output, or None when every option is at its default
    (deface_file then uses ProfileOptions(), the same thing) so that defacing a NIfTI file
    does not import the DICOM de-identification stack."""
    return options_from_args(args) if profile_options_given(args) else None


def profile_options_given(args) -> list[str]:
    """The PS3.15 options given away from their defaults (scrub_command.add_profile_arguments)."""
    given = [flag for flag, field, _ in FLAGS if getattr(args, field)]
    return given + ["--dates"] * (args.dates != "remove") + ["--pseudonym-format"] * (args.pseudonym_format != "DEFACER-{hash8}")


def _print_summary(outcome: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from DeFacerLib.cli.progress import summary_console

    report = outcome["report"]
    # markup off wherever paths and header text are shown: "[...]" in a name is text, not rich
    # markup (a "[/x]" in the --qa folder's name ended the run with an internal error)
    table = Table(title=Text(str(outcome["output"])))
    for column in ("feature", "status", "voxels removed", "box (LPS mm)"):
        table.add_column(column)
    for name, entry in report["features"].items():
        if entry["present"]:
            low, high = entry["box_world_mm"]
            box = " to ".join("(" + ", ".join(f"{v:.0f}" for v in corner) + ")" for corner in (low, high))
            table.add_row(name, "removed", f"{entry['voxels_removed']:,}", box)
        else:
            table.add_row(name, "not found: skipped", "0", "")
    console = summary_console()
    console.print(table)
    evidence = f" ({report['modality_from']})" if report.get("modality_from") else ""
    console.print(f"modality: {report['modality']}{evidence}  protected voxels changed: {report['protected_voxels_changed']}  "
                  f"sidecar: {outcome['sidecar']}",
                  markup=False)
    removed = report.get("header_removed", [])
    if removed:
        more = f"; and {len(removed) - 4} more (listed in the sidecar)" if len(removed) > 5 else ""
        console.print("removed from the header: " + "; ".join(removed[:4] if more else removed) + more, markup=False)
    if outcome.get("files_not_copied"):
        console.print(f"{outcome['files_not_copied']} other file(s) in the input folder (not of this series: notes, "
                      "a DICOMDIR, other series) were not copied; the sidecar names them", markup=False)
    if outcome.get("key_created"):
        console.print(new_key_note(outcome["key_file"]), markup=False)
    if report.get("shield_voxels") is not None:  # asked for and not placed is refused (pipeline.deface_volume)
        console.print(f"face shield: {report['shield_voxels']:,} voxels filled")
    if outcome.get("qa_figure"):
        console.print(f"QA picture: {outcome['qa_figure']} (private: it shows the original face above the defaced one)",
                      markup=False)
