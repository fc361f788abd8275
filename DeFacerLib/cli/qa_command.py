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
    parser.add_argument("original", help="the original head (any supported format)")
    parser.add_argument("defaced", help="the defaced head, same grid")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the report, JSON and pictures")
    parser.add_argument("--name", help="report name (default: the defaced file's name)")


def run(args) -> dict:
    from pathlib import Path

    from rich.console import Console

    from DeFacerLib.errors import FaceStillRecognisable
    from DeFacerLib.io import read_volume
    from DeFacerLib.qa.check import check_pair
    from DeFacerLib.qa.report import write_report

    original = read_volume(args.original)
    defaced = read_volume(args.defaced)
    check, before, after = check_pair(original, defaced)
    name = args.name or Path(args.defaced).name.split(".")[0]
    files = write_report(check, before, after, args.out, name=name)
    result = {"verdict": check.verdict, "reasons": check.reasons, "files": files, "check": check.to_dict()}
    if not args.quiet and not args.json:
        console = Console()
        style = "bold green" if check.verdict == "PASS" else "bold red"
        console.print(f"[{style}]{check.verdict}[/]  " + ("; ".join(check.reasons) or "no facial view matches the original"))
        console.print(f"report: {files['html']} (private: it shows the original face)")
    if check.verdict != "PASS":
        if args.json:  # the report is still wanted on stdout when the verdict is FAIL
            import json
            import sys

            json.dump(result, sys.stdout, indent=2)
            sys.stdout.write("\n")
        raise FaceStillRecognisable("re-identification check FAILED: " + "; ".join(check.reasons)
                                    + f" (report: {files['html']})")
    return result
