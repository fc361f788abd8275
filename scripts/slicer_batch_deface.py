"""Deface every head volume and DICOM series under a folder with the DeFacer Slicer module.

    Slicer --no-main-window --python-script scripts/slicer_batch_deface.py \\
        --input DIR --output DIR [--features eyes,nose,mouth,ears] [--labels DIR] [--screenshots]

Inputs are volume files (.nii/.nii.gz, .mgz/.mgh, .nrrd/.nhdr, .mha/.mhd) and folders holding
DICOM files (one series each); outputs mirror the input tree in the input's own format (a DICOM
series gives a new, de-identified series). Each is defaced through the module's Logic
(``DeFacerLogic.deface_file``, the command line's code path); with ``--screenshots`` the
before/after skin is rendered offscreen into ``OUTPUT/qa/``. A summary goes to
``OUTPUT/defacer_batch.json``. The exit code is 0 when every input succeeded, else the first
failure's DeFacer exit code (2 usage, 3 input, 4 output, 5 guarantee, 1 other).

``--labels DIR``: feature label maps (1 eyes, 2 nose, 3 mouth, 4 ears, 5 brain) at the same
relative paths as the inputs, as NIfTI (``head.nii.gz``, or ``series_folder.nii.gz`` for a
DICOM folder); without it the features are found automatically when the model ships.

Argument parsing and the file loop need no Slicer (they are tested with plain Python); only
``slicer_deface_one`` and ``main``'s exit touch the application.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd")
SUMMARY_NAME = "defacer_batch.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    from DeFacerLib.cli.deface_command import add_removal_arguments

    parser = argparse.ArgumentParser(prog="slicer_batch_deface.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="folder of head volumes and/or DICOM series")
    parser.add_argument("--output", required=True, type=Path, help="folder for the defaced outputs (mirrors --input)")
    add_removal_arguments(parser)  # --features, --margin-mm, ... exactly as `defacer deface` takes them
    parser.add_argument("--labels", type=Path, help="folder of feature label maps mirroring --input")
    parser.add_argument("--screenshots", action="store_true", help="write before/after QA renders to OUTPUT/qa/")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    args.features = parse_features(parser, args.features)
    if not args.input.is_dir():
        parser.error(f"--input {args.input} is not a folder")
    if args.labels is not None and not args.labels.is_dir():
        parser.error(f"--labels {args.labels} is not a folder")
    resolved_in, resolved_out = args.input.resolve(), args.output.resolve()
    if resolved_out == resolved_in or resolved_in in resolved_out.parents:
        parser.error("--output must be outside --input (inputs are never modified)")
    return args


def parse_features(parser: argparse.ArgumentParser, text: str) -> tuple[str, ...]:
    from DeFacerLib.errors import UsageError
    from DeFacerLib.features import parse_features as parse

    try:
        return parse(text)
    except UsageError as error:
        parser.error(str(error))


def _is_dicom_file(path: Path) -> bool:
    from DeFacerLib.io.formats import DICOM_EXTENSIONS, has_dicom_magic

    return path.suffix.lower() in DICOM_EXTENSIONS or has_dicom_magic(path)


def find_inputs(root: Path) -> list[Path]:
    """Volume files and DICOM series folders under ``root``, sorted; hidden entries skipped."""
    found: list[Path] = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        volumes = [p for p in files if p.name.lower().endswith(VOLUME_SUFFIXES)]
        found.extend(volumes)
        rest = [p for p in files if p not in volumes]
        if any(_is_dicom_file(p) for p in rest):
            found.append(folder)
    return sorted(found)


def output_for(path: Path, input_root: Path, output_root: Path) -> Path:
    """Same relative place under the output root; the input root itself maps to OUTPUT/NAME."""
    relative = path.relative_to(input_root)
    return output_root / (relative if relative.parts else Path(input_root.name))


def labels_for(path: Path, input_root: Path, labels_root: Path | None) -> Path | None:
    """The label map mirroring ``path`` (``series_folder.nii.gz`` for a DICOM folder), or None."""
    if labels_root is None:
        return None
    relative = path.relative_to(input_root)
    if path.is_dir():
        relative = relative.parent / f"{relative.name or input_root.name}.nii.gz"
    candidate = labels_root / relative
    return candidate if candidate.exists() else None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _relative(path, root) -> str:
    """``path`` relative to the folder ``root`` (its name when ``root`` is the path itself)."""
    path, root = Path(path), Path(root)
    if path == root:
        return path.name
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _without_roots(message: str, args: argparse.Namespace) -> str:
    """An error text with the input, output and labels folders' own paths taken out."""
    roots = [Path(root) for root in (args.input, args.output, getattr(args, "labels", None)) if root is not None]
    for root in sorted(roots, key=lambda r: -len(str(r))):
        base = root.parent if root.is_file() else root
        message = message.replace(f"{base}/", "")
    return message


def run(args: argparse.Namespace, deface_one: Callable[..., dict], log: Callable[[str], None] = print) -> int:
    """Deface every input with ``deface_one(input, output, labels, qa_dir, args)``; write the
    summary; return the exit code (0, or the first failure's)."""
    inputs = find_inputs(args.input)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # an existing file, no permission: the output cannot be written (4)
        log(f"cannot create the output folder {args.output}: {error.strerror or error}")
        return 4
    records, exit_code = [], 0
    if not inputs:
        log(f"no head volumes or DICOM series found under {args.input}")
        exit_code = 3
    for number, path in enumerate(inputs, start=1):
        output = output_for(path, args.input, args.output)
        labels = labels_for(path, args.input, args.labels)
        qa_dir = args.output / "qa" if args.screenshots else None
        started = time.perf_counter()
        # the summary lies in the output, which is shared: paths relative to the folders given,
        # never the folders above them (they may name a patient, a site or a user)
        record = {"input": _relative(path, args.input), "output": _relative(output, args.output),
                  "labels": None if labels is None else _relative(labels, args.labels)}
        try:
            outcome = deface_one(path, output, labels, qa_dir, args)
            record.update(status="ok", features_removed=outcome.get("features_removed", []),
                          features_missing=outcome.get("features_missing", []),
                          screenshots=outcome.get("screenshots", []))
            log(f"[{number}/{len(inputs)}] {path} -> {output}: removed {', '.join(record['features_removed']) or 'nothing'}")
        except Exception as error:  # one bad input must not stop the batch; its code is kept
            code = int(getattr(error, "exit_code", 1))
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            record.update(status="failed", exit_code=code, error=_without_roots(message, args))
            exit_code = exit_code or code
            log(f"[{number}/{len(inputs)}] {path}: FAILED ({record['error']})")
        record["seconds"] = round(time.perf_counter() - started, 2)
        records.append(record)
    summary = {"input": Path(args.input).name, "output": Path(args.output).name, "features": list(args.features),
               "succeeded": sum(r["status"] == "ok" for r in records),
               "failed": sum(r["status"] == "failed" for r in records), "exit_code": exit_code, "items": records}
    (args.output / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"{summary['succeeded']} defaced, {summary['failed']} failed; summary in {args.output / SUMMARY_NAME}")
    return exit_code


# ---- the part that needs Slicer -------------------------------------------------------------
def slicer_deface_one(path: Path, output: Path, labels: Path | None, qa_dir: Path | None, args, logic=None) -> dict:
    """Deface one input through the DeFacer module's Logic (inside Slicer: ``DeFacer.DeFacerLogic``
    on the application's scene); the QA renders are made offscreen from nodes in that scene."""
    from DeFacerLib.deface.workflow import take_back
    from DeFacerLib.io import read_volume

    if logic is None:
        from DeFacer import DeFacerLogic

        logic = DeFacerLogic()
    output.parent.mkdir(parents=True, exist_ok=True)
    outcome = logic.deface_file(path, output, features=args.features, margin_mm=args.margin_mm,
                                max_depth_mm=args.max_depth_mm, protect_margin_mm=args.protect_margin_mm,
                                whole_face=args.whole_face, seal_mm=args.seal_mm, labels_path=labels,
                                overwrite=args.overwrite)
    if qa_dir is not None:
        nodes = []
        try:
            nodes.append(logic.node_from_volume(read_volume(path), "DeFacer batch input"))
            nodes.append(logic.node_from_volume(read_volume(outcome["output"]), "DeFacer batch output"))
            stem = "_".join(output.relative_to(args.output).parts[:-1] + (_stem(output),))
            outcome["screenshots"] = [str(p) for p in logic.save_qa_screenshots(*nodes, qa_dir, stem=stem)]
        except BaseException:  # a failed item has no output: screenshots asked for and not made fail it whole
            take_back(outcome)
            raise
        finally:
            for node in nodes:
                logic.scene.RemoveNode(node)
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run(args, slicer_deface_one)


def _main_exit_code() -> int:
    """main()'s exit code; any error becomes one line on stderr and its DeFacer code (1 when it
    has none), never a traceback: inside Slicer a traceback would leave the application running."""
    try:
        return main()
    except SystemExit as stop:  # argparse errors: usage, code 2
        return stop.code if isinstance(stop.code, int) else 2
    except Exception as error:  # noqa: BLE001 - the batch's last line of defence
        print(f"slicer_batch_deface.py: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return int(getattr(error, "exit_code", 1))


if __name__ == "__main__":
    code = _main_exit_code()
    try:
        import slicer

        slicer.util.exit(code)  # lets Slicer finish cleanly with this exit status
    except (ImportError, AttributeError):
        sys.exit(code)
