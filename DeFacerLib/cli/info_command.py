"""Print what a volume is: format, size, spacing, orientation, a modality guess, and what in its
header can name a person, a machine or a file (which `defacer deface` leaves out)."""
from __future__ import annotations

NAME = "info"
HELP = "describe a volume (format, size, spacing, orientation, modality)"


def add_arguments(parser) -> None:
    from DeFacerLib.cli.main import input_path
    from DeFacerLib.io.formats import SUPPORTED_TEXT

    parser.add_argument("input", type=input_path, help=f"volume: {SUPPORTED_TEXT}")
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read when a folder holds several")


def run(args) -> dict:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from DeFacerLib.deface.header_identity import without_identifying_header
    from DeFacerLib.io import describe, read_volume

    volume = read_volume(args.input, series_uid=args.series)
    description = describe(volume)
    # what `defacer deface` leaves out of this header: names, machines, paths; always a list
    if volume.source is not None and volume.source.format.startswith("dicom"):
        found = ["DICOM attributes (patient, dates, UIDs, institution): de-identified to PS3.15 by "
                 "`defacer deface` and `defacer scrub`"]
    else:
        found = without_identifying_header(volume)[1] + replaced_description(volume)
    description["identifying_header"] = found
    if not args.quiet and not args.json:
        # Text, not markup: a path or header text holding "[/x]" ended in an internal error, and
        # a descrip "[red]Doe[/red]" was shown as "Doe"
        table = Table(title=Text(str(args.input)), show_header=False)
        # long values (a series UID) wrap whole: cut with "…" they could not be copied to --series,
        # and under an ASCII locale the "…" was an internal error
        table.add_column()
        table.add_column(overflow="fold")
        for key, value in description.items():
            shown = ("; ".join(value) or "none found") if key == "identifying_header" else str(value)
            table.add_row(Text(key), Text(shown))
        Console().print(table)
    return description


def replaced_description(volume) -> list[str]:
    """NIfTI's free-text ``descrip``, which `defacer deface` overwrites with its own note: converters
    put the acquisition time there (dcm2niix: 'TE=2.5;Time=153152.362'), users put names."""
    text = (volume.source.extra.get("descrip") or "").strip() if volume.source is not None else ""
    if not text or text.startswith("DeFacer "):  # empty, or the note of an earlier deface
        return []
    return [f"NIfTI descrip {text!r} (replaced by the deface note)"]
