"""De-identify a whole archive: a BIDS dataset, a DICOM tree or a folder of volumes.

BIDS: anatomical (T1w, T2w, FLAIR, PD, ...), PET and CT images are defaced; every other 3D
volume (quantitative maps, derivatives/, sourcedata/) is defaced when the face model finds a
face, copied when it has no skin surface (a skull-stripped brain), and fails otherwise; JSON
sidecars lose their PHI fields, dataset_description.json gains a GeneratedBy entry, everything
else is copied (participants/phenotype columns named like a name or a birth date are warned about). DICOM: files are grouped into series by SeriesInstanceUID wherever they lie; a
series that is a 3D head volume is defaced, every series is de-identified (PS3.15). The
output tree mirrors the input. Work runs on Dask: a local cluster of --workers processes,
or an existing cluster (--scheduler). OUTPUT/.defacer/ holds the manifest (a rerun of the
same command resumes: only new, changed or failed items are redone) and report.html/.csv;
OUTPUT.audit/ holds the UID and patient mappings (original identifiers: keep it private).
"""
from __future__ import annotations

import sys
import time

from DeFacerLib.cli.deface_command import add_removal_arguments, parameters_from_args
from DeFacerLib.cli.scrub_command import add_profile_arguments, new_key_note, options_from_args

NAME = "batch"
LOG_EVERY_S = 60  # progress lines when standard error is not a terminal
HELP = "deface and de-identify a whole BIDS dataset, DICOM tree or folder of volumes (Dask, resumable)"


def add_arguments(parser) -> None:
    from DeFacerLib.cli.main import input_path, home_path

    parser.add_argument("input", type=input_path, help="BIDS dataset root, DICOM folder tree or folder of volumes")
    parser.add_argument("output", type=home_path, help="output folder (mirrors the input); rerun into it to resume")
    parser.add_argument("--layout", choices=("auto", "bids", "dicom", "volumes"), default="auto",
                        help="how to read the input (default: auto, BIDS when dataset_description.json exists)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="local worker processes, one thread each (default 2)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="use an existing Dask cluster, e.g. tcp://host:8786 "
                        "(input, output, audit and key file must be on storage every worker sees)")
    add_removal_arguments(parser)
    parser.add_argument("--features-from", metavar="DIR", type=input_path, help="label maps mirroring the input (same relative path; "
                        "a DICOM series folder F takes F.nii.gz) instead of the face model")
    parser.add_argument("--scrub-only", action="store_true", help="DICOM headers only: no defacing (volumes are skipped)")
    parser.add_argument("--qa", action="store_true", help="render each defaced output's front and look for a face (YuNet)")
    parser.add_argument("--audit-dir", metavar="DIR", type=home_path, help="private audit folder (default OUTPUT.audit)")
    parser.add_argument("--max-items", type=int, metavar="N", help="stop after N items (the rest on a rerun)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder without a manifest")
    add_profile_arguments(parser.add_argument_group("DICOM de-identification"))


def run(args) -> dict:
    from DeFacerLib.batch import run_batch
    from DeFacerLib.errors import UsageError

    if args.scrub_only and (args.features_from or args.qa):  # a run that defaces nothing ignored them without a word
        raise UsageError(f"{'--features-from' if args.features_from else '--qa'}: a --scrub-only run defaces "
                         "nothing; leave it out")
    parameters = parameters_from_args(args)
    progress = RichBatchProgress(quiet=args.quiet or args.json)
    try:
        summary = run_batch(
            args.input, args.output, parameters=parameters, dicom_options=options_from_args(args),
            key_file=args.key_file, labels_dir=args.features_from, qa=args.qa, scrub_only=args.scrub_only,
            layout=args.layout, workers=args.workers, scheduler=args.scheduler, audit_dir=args.audit_dir,
            max_items=args.max_items, overwrite=args.overwrite, progress=progress,
        )
    finally:
        progress.close()
    if not args.quiet and not args.json:
        _print_summary(summary)
    if summary["failed"]:
        from DeFacerLib.errors import InputError

        first = summary["failed_items"][0] if summary["failed_items"] else {"name": "?", "reason": "?"}
        error = InputError(f"{summary['failed']} of {summary['files']} file(s) failed (first: {first['name']}: "
                           f"{first['reason']}); the others are in {summary['output']}; see {summary['reports']['html']}; "
                           "rerun the same command to retry the failed items")
        error.result = summary  # --json still gives the summary (failed_items) on stdout (cli/main.py)
        raise error
    return summary


class RichBatchProgress:
    """Items done / total, items per second and ETA on standard error; the Dask dashboard link."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        self.task = None

    def cluster(self, client) -> None:
        if self.quiet:
            return
        from DeFacerLib.cli.progress import STDERR

        link = getattr(client, "dashboard_link", None)
        workers = len(client.scheduler_info().get("workers", {}))
        STDERR.print(f"Dask: {workers} worker(s)" + (f", dashboard {link}" if link else
                                                     " (pip install bokeh for the dashboard)"))

    def discovered(self, plan, todo: int, already: int, removed: int = 0) -> None:
        if self.quiet:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from DeFacerLib.cli.progress import STDERR

        STDERR.print(f"{plan.layout}: {plan.file_count} files in {len(plan.items)} items; "
                     f"{already} already done, {todo} to do"
                     + (f"; {removed} output(s) of inputs that are gone removed" if removed else ""))
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} items/s"), TextColumn("ETA"), TimeRemainingColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[failed]}"), console=STDERR,
                            disable=not sys.stderr.isatty())
        self.bar.start()
        self.task = self.bar.add_task("de-identifying", total=todo, rate="-", failed="")
        self.failed = 0
        self.lines = not sys.stderr.isatty()  # a job log (SLURM, nohup): a line now and then instead of the bar
        self.last_line = time.monotonic()

    def item_done(self, outcome: dict) -> None:
        if self.bar is None:
            return
        self.failed += outcome["state"] == "failed"
        self.bar.advance(self.task)
        task = self.bar.tasks[0]
        speed = task.finished_speed or task.speed
        self.bar.update(self.task, rate=f"{speed:.2f}" if speed else "-",
                        failed=f"[red]{self.failed} failed" if self.failed else "")
        if self.lines and (time.monotonic() - self.last_line >= LOG_EVERY_S or task.finished):
            from DeFacerLib.cli.progress import STDERR

            self.last_line = time.monotonic()
            left = task.time_remaining
            STDERR.print(f"{int(task.completed)}/{int(task.total)} items, {self.failed} failed"
                         + (f", {speed:.2f} items/s" if speed else "") + (f", ETA {left:.0f} s" if left else ""))

    def stopping(self, running: int) -> None:
        if self.quiet:
            return
        from DeFacerLib.cli.progress import STDERR

        STDERR.print(f"stopping: waiting for the {running} item(s) the cluster's workers are running to end "
                     "(Ctrl-C again to leave them; the rerun redoes them)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _print_summary(summary: dict) -> None:
    from DeFacerLib.cli.progress import summary_console

    # paths are printed without markup: a "[/x]" in a folder's name ended a finished batch with
    # an internal error (exit 1)
    console = summary_console()
    console.print(f"[bold]{summary['files']}[/] input files = {summary['written']} written + {summary['skipped']} skipped "
                  f"+ {summary['failed']} failed" + (f" + {summary['pending']} pending (rerun to continue)"
                                                     if summary["pending"] else "")
                  + f"  ({summary['seconds']} s)")
    console.print(f"  items: {summary['items_done']} done, {summary['items_skipped']} skipped, {summary['items_failed']} "
                  f"failed, {summary['items_pending']} pending; {summary['defaced']} defaced, protected voxels changed: "
                  f"{summary['protected_voxels_changed']}")
    if summary.get("key_created"):
        console.print(f"  {new_key_note(summary['key_file'])}", markup=False)
    console.print(f"  report: {summary['reports']['html']}", markup=False)
    console.print(f"  audit (original identifiers, keep private): {summary['audit_folder']}", markup=False)
