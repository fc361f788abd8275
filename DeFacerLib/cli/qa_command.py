"""Render an original head and its defaced copy, and test whether a face is still recognisable.

Faces are looked for with YuNet and dlib, and identities compared with SFace and dlib's
ResNet descriptor against thresholds calibrated on skin renders. The verdict is PASS only
when no facial view of the defaced head matches the original. Writes an HTML report (images
embedded), JSON and a before/after PNG to --out. Exit code 6 when the verdict is FAIL.
"""
from __future__ import annotations

NAME = "qa"
HELP = "check whether a defaced head's face is still recognisable (renders + face recognition)"


def add_arguments(parser) -> None:
    from DeFacerLib.cli.main import folder_path, input_path

    parser.add_argument("original", type=input_path, help="the original head (any supported format)")
    parser.add_argument("defaced", type=input_path, help="the defaced head, same grid")
    parser.add_argument("--out", required=True, metavar="DIR", type=folder_path, help="folder for the report, JSON and pictures")
    parser.add_argument("--name", help="report name (default: the defaced file's name without its volume extension)")
    # a folder with several series: read errors say "pick one with --series UID"; a defaced DICOM
    # series has a new UID, so the defaced folder gets its own option
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID of the original when its folder holds several")
    parser.add_argument("--defaced-series", metavar="UID",
                        help="SeriesInstanceUID of the defaced copy when its folder holds several")
    from DeFacerLib.cli.deface_command import add_modality_argument

    add_modality_argument(parser)  # both are rendered as the original's (check_pair)


def run(args) -> dict:
    from DeFacerLib.cli.progress import summary_console
    from DeFacerLib.errors import FaceStillRecognisable, OutputError
    from DeFacerLib.io import read_volume
    from DeFacerLib.io.atomic import check_output_folder, make_folder, remove_made_folders
    from DeFacerLib.io.modality import state_modality
    from DeFacerLib.qa.check import check_pair
    from DeFacerLib.qa.report import FAIL_ADVICE, check_report_names, write_report

    name = report_name(args.name, args.defaced)
    check_output_folder(args.out, "--out folder")
    try:  # before the renders and face recognition (8 s and more), and before --out is made
        check_report_names(args.out, name)
    except OutputError as error:  # the exit code of `deface` for an output name too long (4)
        raise OutputError(f"{error}{'' if args.name is not None else ' with --name'}") from None
    refuse_out_inside_inputs(args.out, (args.original, args.defaced))
    created = make_folder(args.out, "--out folder")
    try:
        original = read_volume(args.original, series_uid=args.series)
        if args.modality is not None:
            state_modality(original, args.modality)
        defaced = _read_defaced(args.defaced, args.defaced_series)
        require_same_grid(original, defaced, args.original, args.defaced)
        check, before, after = check_pair(original, defaced)
        inputs = {"original": str(args.original), "defaced": str(args.defaced)}
        files = write_report(check, before, after, args.out, name=name, inputs=inputs)
    except BaseException:  # no empty report folder is left behind by a refused or failed run
        remove_made_folders(created)
        raise
    result = {"verdict": check.verdict, "reasons": check.reasons, "warnings": check.warnings, "inputs": inputs, "files": files,
              "check": check.to_dict()}
    if not args.quiet and not args.json:
        console = summary_console()
        style = "bold green" if check.verdict == "PASS" else "bold red"
        console.print(check.verdict, style=style, end="  ")
        # markup off: a path or name holding "[...]" is text, not rich markup (a "[/x]" crashed)
        console.print("; ".join(check.reasons) or "no facial view matches the original", markup=False)
        console.print(f"report: {files['html']} (private: it shows the original face)", markup=False)
    if check.verdict != "PASS":
        error = FaceStillRecognisable("re-identification check FAILED: " + "; ".join(check.reasons)
                                      + f" (report: {files['html']}); {FAIL_ADVICE}")
        error.result = result  # --json still gives the report on stdout when the verdict is FAIL (cli/main.py)
        raise error
    return result


def report_name(name: str | None, defaced_path: str) -> str:
    """--name, else the defaced input's name without its volume extension: DICOM folders named
    by UIDs ("1.3.12.2...") keep their whole name, so that two of them do not share one report.
    A name is a plain file name: a path in it would write outside --out."""
    from DeFacerLib.errors import UsageError
    from DeFacerLib.io.formats import volume_stem

    if name is not None:
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise UsageError(f"--name {name!r} must be a plain file name (no folder), e.g. sub-01")
        return name
    from pathlib import Path

    return volume_stem(Path(defaced_path).resolve().name)


def refuse_out_inside_inputs(out, inputs) -> None:
    """--out inside an input folder (a DICOM series) would change that input, and inside the
    defaced folder it would ship the ORIGINAL face renders with the data meant to be shared."""
    from pathlib import Path

    from DeFacerLib.errors import OutputError
    from DeFacerLib.io.atomic import is_within

    for path in inputs:
        if Path(path).is_dir() and is_within(out, path):
            raise OutputError(f"--out folder {out} is inside the input folder {path}; choose a folder outside "
                              "the inputs (the report shows the original face)")


GRID_TOLERANCE_MM = 0.01  # float32 headers and DICOM's decimal strings round the same grid differently


def require_same_grid(original, defaced, original_path, defaced_path) -> None:
    """A defaced copy lies on its original's grid. Two different grids mean a wrong pair (another
    scan, another person), whose renders differ anyway: the check would PASS without judging
    the defacing."""
    import numpy as np

    from DeFacerLib.errors import InputError

    if original.shape3 != defaced.shape3:
        raise InputError(f"{defaced_path} ({'x'.join(map(str, defaced.shape3))}) is not on the grid of {original_path} "
                         f"({'x'.join(map(str, original.shape3))}); qa compares a head with its own defaced copy")
    if not np.allclose(original.affine_lps, defaced.affine_lps, rtol=0, atol=GRID_TOLERANCE_MM):
        raise InputError(f"{defaced_path} is placed differently in space from {original_path} (another voxel size, "
                         "origin or orientation); qa compares a head with its own defaced copy")


def _read_defaced(path, series_uid):
    """The defaced copy; a "--series" hint in its error becomes the option that reads it."""
    from DeFacerLib.errors import InputError
    from DeFacerLib.io import read_volume

    try:
        return read_volume(path, series_uid=series_uid)
    except InputError as error:
        raise InputError(str(error).replace("--series UID", "--defaced-series UID")) from None
