"""De-identify DICOM headers (PS3.15 Annex E Basic profile + chosen options) over a whole folder tree.

The output mirrors the input tree; every input file is written, skipped (not DICOM) or
failed, with its reason, in the audit summary. UIDs become keyed 2.25.<int> UIDs and the
patient a keyed pseudonym, identical across runs with the same key file, so studies
scrubbed in separate batches still link. The audit trail (UID and patient-ID mappings,
per-file action log) holds the original identifiers and is written to OUTPUT.audit/, never
into the de-identified output. If any input PHI string survives in any output value the
run fails and nothing is published.
"""
from __future__ import annotations

NAME = "scrub"
HELP = "de-identify DICOM headers (PS3.15 Annex E) of a file or a folder tree"

FLAGS = (
    ("--retain-safe-private", "retain_safe_private", "keep the safe private attributes (diffusion b-values, directions)"),
    ("--retain-uids", "retain_uids", "keep the original UIDs"),
    ("--retain-device-identity", "retain_device_identity", "keep device serial numbers, station names"),
    ("--retain-institution-identity", "retain_institution_identity", "keep institution names and addresses"),
    ("--retain-patient-characteristics", "retain_patient_characteristics", "keep age, sex, size, weight"),
    ("--clean-descriptors", "clean_descriptors", "keep descriptions (series, study, protocol) with PHI removed"),
    ("--clean-structured-content", "clean_structured_content", "keep SR content with PHI removed"),
    ("--clean-graphics", "clean_graphics", "keep graphics and overlays, cleaned"),
    ("--clean-pixel-data", "clean_pixel_data", "black out text burned into the pixels (Tesseract OCR; not in primary or "
                                                "defaced CT/MR/PET/NM images that do not say Burned In Annotation YES)"),
    ("--clean-recognizable-visual-features", "clean_recognizable_visual_features",
     "fill the faces in photographs and other images that are not CT/MR/PET/NM slices (YuNet, any orientation; the "
     "head and hair; needs the photo extra); a head series' face is removed with `defacer deface`"),
)


def add_arguments(parser) -> None:
    from DeFacerLib.cli.main import input_path, home_path

    parser.add_argument("input", type=input_path, help="DICOM file or folder tree")
    parser.add_argument("output", type=home_path, help="output file or folder (the tree is mirrored)")
    add_profile_arguments(parser)
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes (default 1; one per 16 files at most; more than the idle cores only adds overhead)")
    parser.add_argument("--audit-dir", metavar="DIR", type=home_path, help="where the mappings and the action log go (default OUTPUT.audit)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def add_profile_arguments(parser) -> None:
    """The key and PS3.15 option flags (shared with ``deface`` for its DICOM outputs)."""
    from DeFacerLib.cli.main import home_path

    parser.add_argument("--key-file", metavar="PATH", type=home_path, help="secret key for UIDs, pseudonyms and date shifts "
                        "(created with a fresh random key if missing; default $DEFACER_KEY_FILE or ~/.config/defacer/deid.key)")
    parser.add_argument("--dates", choices=("remove", "full", "modified"), default="remove",
                        help="dates: remove (Basic profile), keep full dates, or shift them by a keyed per-patient offset "
                             "(default: remove)")
    for flag, _, text in FLAGS:
        parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument("--pseudonym-format", metavar="FORMAT", default="DEFACER-{hash8}",
                        help="patient name/ID pseudonym: text with {hash8} or {hash16}, the keyed hash of the patient "
                             "(default DEFACER-{hash8})")


def options_from_args(args):
    from DeFacerLib.dicom import ProfileOptions

    values = {field: bool(getattr(args, field)) for _, field, _ in FLAGS}
    return ProfileOptions(  # a bad pseudonym format: UsageError
        retain_long_full_dates=args.dates == "full",
        retain_long_modified_dates=args.dates == "modified",
        pseudonym_format=args.pseudonym_format,
        **values,
    )


def run(args) -> dict:
    from pathlib import Path

    from DeFacerLib.dicom.tree import scrub_inputs, scrub_with_key_file
    from DeFacerLib.errors import InputError, UsageError

    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    options = options_from_args(args)
    scrub_inputs(Path(args.input))  # a missing or empty input makes no key file either
    summary = scrub_with_key_file(args.input, args.output, options, args.key_file, workers=args.workers,
                                  overwrite=args.overwrite, audit_dir=args.audit_dir)
    if not args.quiet and not args.json:
        _print_summary(summary)
    if summary["failed"]:
        first = summary["failed_files"][0]
        error = InputError(
            f"{summary['failed']} of {summary['files']} file(s) could not be scrubbed (first: {first['file']}: {first['reason']}); "
            f"the {summary['written']} others are in {summary['output']}, see {summary['audit']['summary']}"
        )
        error.result = summary  # --json still gives the summary (failed_files) on stdout (cli/main.py)
        raise error
    return summary


def _print_summary(summary: dict) -> None:
    from rich.markup import escape

    from DeFacerLib.cli.progress import summary_console

    # paths, file names and reasons are escaped: a "[/x]" in the output folder's name ended a
    # scrub that had published its output with an internal error (exit 1)
    console = summary_console()
    console.print(f"[bold]{summary['written']}[/] written, {summary['skipped']} skipped, {summary['failed']} failed "
                  f"of {summary['files']} files in {summary['seconds']} s -> {escape(str(summary['output']))}")
    for entry in summary["skipped_files"][:10]:
        console.print(f"  skipped {entry['file']}: {entry['reason']}", markup=False)
    if summary.get("faces_filled"):  # --clean-recognizable-visual-features
        console.print(f"  faces filled: {sum(entry['faces'] for entry in summary['faces_filled'])} in "
                      f"{len(summary['faces_filled'])} file(s)", markup=False)
    if summary.get("text_segments_removed"):
        console.print(f"  text segments removed from compressed pixel data: "
                      f"{sum(entry['segments'] for entry in summary['text_segments_removed'])} in "
                      f"{len(summary['text_segments_removed'])} file(s)", markup=False)
    if summary.get("key_created"):
        console.print(f"  {new_key_note(summary['key_file'])}", markup=False)
    else:
        console.print(f"  key: {summary['key_file']}", markup=False)
    console.print(f"  audit trail (holds original IDs, keep private): {summary['audit']['summary'].rsplit('/', 1)[0]}",
                  markup=False)


def new_key_note(key_file: str) -> str:
    """The console line when a run made the key (scrub, deface of DICOM, batch)."""
    return f"new key stored in {key_file} (keep it secret; reuse it to keep UIDs consistent)"
