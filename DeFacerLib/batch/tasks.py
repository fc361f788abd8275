"""The work of one item, run on a Dask worker: deface, scrub, copy or clean, then report.

``process_item`` never raises for a bad input: it returns an outcome with state ``done``,
``skipped`` or ``failed`` and the reason, so one corrupt file never stops the others.
Every output file appears atomically (temporary sibling + ``os.replace``); an item that
fails leaves none of its outputs behind (a scrub-only DICOM series keeps the files that
were scrubbed and counts the others as failed). What holds original identifiers (UID and
patient mappings, per-file action logs, DICOM provenance) goes to the private audit
folder, never into the output tree.

Per worker process, the key is read once (``context_for``, warmed by ``BatchWorkerPlugin``
when the worker starts); the DICOM scrubber (``dicom.tree``) and the ONNX session
(``face.segment``) are cached per process by the library itself.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from DeFacerLib.batch import bids
from DeFacerLib.batch.discover import (
    COPY, DATED_TABLE, DEFACE_VOLUME, DESCRIPTION, DICOM_FILE, DICOM_SERIES, FACE_CHECK, MANIFEST_FOLDER, PHOTO, SIDECAR,
    Item, looks_anatomical, sha256_files, with_detached_data_outputs,
)
from DeFacerLib.batch.manifest import DONE, FAILED, SKIPPED
from DeFacerLib.deface.pipeline import DefaceParameters
from DeFacerLib.dicom.profile import ProfileOptions
from DeFacerLib.errors import DeFacerError, FaceNotFound, InputError, NoHeadFound, require_extra
from DeFacerLib.io.atomic import fitted_path, partial_path
from DeFacerLib.io.detached import data_files_of, is_detached

HEAD_MODALITIES = ("MR", "CT", "PT")
MIN_HEAD_SLICES = 16  # fewer slices (or frames) than this is a localizer or a few slices, not a head volume


@dataclass(frozen=True)
class BatchConfig:
    """Everything a worker needs to process any item; pickled once per task (small)."""

    input_root: str
    output_root: str
    audit_root: str
    key_file: str
    parameters: DefaceParameters = field(default_factory=DefaceParameters)
    dicom_options: ProfileOptions = field(default_factory=ProfileOptions)
    labels_dir: str | None = None
    qa: bool = False
    scrub_only: bool = False
    key_check: str = ""  # keyed check of the driver's key: a worker that reads another key refuses to work
    version: str = ""  # the driver's DeFacer version: a worker still running another one refuses to work

    def token(self, key: bytes) -> str:
        """What a finished item depends on besides its inputs: a change means redo."""
        from DeFacerLib import __version__
        from DeFacerLib.dicom.uids import short_token

        settings = json.dumps({
            "version": __version__,
            "parameters": dataclasses.asdict(self.parameters),
            "dicom_options": dataclasses.asdict(self.dicom_options),
            "labels_dir": self.labels_dir,
            "qa": self.qa,
            "scrub_only": self.scrub_only,
            "key": short_token(key, "batch-config", "key-check", 16),
        }, sort_keys=True, default=str)
        return hashlib.sha256(settings.encode()).hexdigest()[:32]

    @property
    def meta_root(self) -> Path:
        return Path(self.output_root) / MANIFEST_FOLDER


# ---- per-worker context --------------------------------------------------------------------------

@dataclass
class WorkerContext:
    key: bytes
    key_path: Path


_CONTEXTS: dict[str, WorkerContext] = {}


def key_check_of(key: bytes) -> str:
    from DeFacerLib.dicom.uids import short_token

    return short_token(key, "batch-config", "key-check", 16)


def context_for(config: BatchConfig) -> WorkerContext:
    """The key of this config, read once per process and run (a long-lived cluster's worker
    serves runs with other keys at the same path). A worker never makes a key: one that cannot
    read the driver's key file, or reads another key there (a relative path, storage the
    workers do not share), stops the item instead of pseudonymising with a key of its own."""
    cache = (config.key_file, config.key_check)
    context = _CONTEXTS.get(cache)
    if context is None:
        from DeFacerLib.dicom import load_or_create_key

        path = Path(config.key_file)
        if not path.is_absolute() or not path.is_file():
            raise InputError(f"this worker cannot read the key file {config.key_file}; the key file must be on "
                             "storage every worker sees, given as an absolute path")
        key, path, _ = load_or_create_key(path, mark_use=False)  # the run's own reader: the driver holds it
        if config.key_check and key_check_of(key) != config.key_check:
            raise InputError(f"this worker reads another key at {config.key_file} than the run started with; "
                             "the key file must be on storage every worker sees")
        context = _CONTEXTS[cache] = WorkerContext(key, path)
    return context


def _same_version(config: BatchConfig) -> None:
    """A worker of a long-lived cluster keeps the DeFacer it imported when it started: after an
    upgrade on the driver it ran the old code while the manifest recorded the new version."""
    from DeFacerLib import __version__

    if config.version and config.version != __version__:
        raise InputError(f"this worker runs DeFacer {__version__} and the run DeFacer {config.version} "
                         "(a cluster started before an upgrade); restart the cluster's workers")


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - the [batch] extra is not installed
    WorkerPlugin = object


class BatchWorkerPlugin(WorkerPlugin):
    """Loads the key and the DICOM/deface modules when a worker starts (and when it restarts)."""

    name = "defacer-batch"

    def __init__(self, config: BatchConfig):
        self.config = config

    def setup(self, worker=None):
        import DeFacerLib.deface.workflow  # noqa: F401  (import cost paid once, not by the first item)
        import DeFacerLib.dicom.tree  # noqa: F401  (the scrubber module)

        with contextlib.suppress(DeFacerError):  # a key this worker cannot read fails each item, with the reason
            context_for(self.config)


# ---- one item -----------------------------------------------------------------------------------

def process_item(item: Item, config: BatchConfig, series_info: dict | None = None) -> dict:
    """Do one item; returns its outcome (never raises for bad input, only for bugs in the batch code)."""
    started = time.perf_counter()
    outcome = {"id": item.id, "kind": item.kind, "name": item.name, "files": len(item.files), "state": DONE,
               "reason": "", "action": "", "written": 0, "skipped": 0, "failed": 0, "outputs": [],
               "worker_pid": os.getpid()}
    root = Path(config.input_root)
    try:
        _same_version(config)
        outcome["input_sha256"] = sha256_files(root, item.files)
        context_for(config)  # the driver's key, or this item fails (never a worker's own key)
        handler = _HANDLERS[item.kind]
        handler(item, config, series_info or {}, outcome)
    except Exception as error:  # bad input or full disk: this item fails, the run goes on
        _remove_outputs(config, item.files)
        outcome.update(state=FAILED, reason=_redact(_reason(error), item, config), written=0, skipped=0, failed=len(item.files),
                       outputs=[], disk_full=_is_disk_full(error))
        if not isinstance(error, (DeFacerError, OSError, ValueError)):
            outcome["reason"] = f"{type(error).__name__}: {outcome['reason']}"
    if outcome["state"] == DONE and outcome["outputs"]:
        outcome["output_sha256"] = sha256_files(Path(config.output_root), outcome["outputs"])
    outcome["seconds"] = round(time.perf_counter() - started, 3)
    return outcome


def _deface_volume(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    rel = item.files[0]
    if config.scrub_only:
        outcome.update(state=SKIPPED, skipped=len(item.files), action="none", reason="scrub-only run: volumes are not defaced, nothing written")
        return
    from DeFacerLib.deface.workflow import deface_file
    from DeFacerLib.provenance import record_path

    target = Path(config.output_root) / rel
    record = record_path(config.meta_root / "provenance", rel)  # one that cannot fit is refused before the work
    target.parent.mkdir(parents=True, exist_ok=True)
    labels = _labels_for(config, rel)
    result = deface_file(Path(config.input_root) / rel, target, parameters=config.parameters, labels_path=labels,
                         overwrite=True)
    _keep_provenance(Path(result["sidecar"]), record, rel)
    outputs = [rel]
    if is_detached(rel):  # and its data file, as the written header names it (beside it)
        outputs += [(Path(rel).parent / data.name).as_posix() for data in data_files_of(target)]
    outcome.update(action="defaced", written=len(item.files), outputs=outputs)
    _deface_figures(outcome, result)
    if config.qa:
        _qa(config, target, rel, outcome)


def _face_check(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    """A BIDS volume outside the anatomical rule (a quantitative map, derivatives/, sourcedata/):
    defaced through the same path as an anatomical image when the face model finds a face there;
    otherwise copied only if it has no skin surface (batch.facecheck: a skull-stripped brain, a
    brain label map), and failed if it may show a face, so that a run that publishes a face
    never ends with exit code 0. A series of frames (4D) is copied, as func/ and dwi/ are, unless
    it is named as an anatomical image or a quantitative map (a multi-echo or MP2RAGE stack under
    derivatives/ or sourcedata/): deface_file cuts every frame alike, and copied it showed the face."""
    rel = item.files[0]
    if config.scrub_only:
        _deface_volume(item, config, info, outcome)  # skipped, as every volume of a scrub-only run
        return
    source = Path(config.input_root) / rel
    frames = _frames(source)
    if frames > 1 and not looks_anatomical(rel):
        _copy(item, config, info, outcome)
        outcome["reason"] = f"{frames} frames (a series, not one head image): copied"
        return
    if config.labels_dir is None or (Path(config.labels_dir) / rel).is_file():
        try:
            _deface_volume(item, config, info, outcome)
            return
        except (FaceNotFound, NoHeadFound):
            _remove_outputs(config, item.files)
    from DeFacerLib.batch.facecheck import skin_check
    from DeFacerLib.io import read_volume

    check = skin_check(read_volume(source))
    if check.skin or (check.skin is None and looks_anatomical(rel)):
        raise InputError(f"may show a face and no face was found ({check.describe()}): not published; "
                         "deface it by hand or pass labels")
    _copy(item, config, info, outcome)
    outcome.update(reason=f"no face found: copied (no skin surface: {check.describe()})", skin_litres=round(check.litres, 2),
                   front_gap_mm=round(check.front_gap_mm, 1))


def _frames(path: Path) -> int:
    """Frames of a volume (1 for 3D), from the header alone where nibabel reads it (NIfTI, MGZ):
    a derivatives bold series can be gigabytes."""
    try:
        import nibabel as nib

        shape = nib.load(str(path)).shape
    except Exception:  # NRRD, MetaImage, or a header nibabel refuses: the reader decides
        from DeFacerLib.io import read_volume

        shape = read_volume(path).array.shape
    return int(np.prod(shape[3:])) if len(shape) > 3 else 1


def _dicom_series(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    if config.scrub_only:
        _scrub_files(item, config, outcome, reason="scrub-only run: headers de-identified, pixels not defaced")
        return
    not_head = _not_a_head_volume(info)
    if not_head:
        _scrub_files(item, config, outcome, reason=f"not defaced: {not_head}; headers de-identified")
        return
    try:
        _deface_series(item, config, outcome)
    except NoHeadFound as error:
        _remove_outputs(config, item.files)
        _scrub_files(item, config, outcome, reason=f"not a head ({_redact(str(error), item, config)}); headers de-identified")


def _not_a_head_volume(info: dict) -> str:
    """Why a series cannot be a head volume, from its header alone ('' when it may be one)."""
    if not info:
        return ""
    modality = info.get("modality", "")
    if modality not in HEAD_MODALITIES:
        return f"modality {modality or 'missing'} is not MR, CT or PET"
    if info.get("samples", 1) != 1:
        return "colour (RGB) images, not a greyscale volume"
    slices = info.get("files", 1) if info.get("frames", 1) <= 1 else info.get("frames", 1)
    if slices < MIN_HEAD_SLICES:
        return f"{slices} slice(s), not a 3D head volume (at least {MIN_HEAD_SLICES} needed)"
    return ""


def _deface_series(item: Item, config: BatchConfig, outcome: dict) -> None:
    """Stage the series' files (wherever they lie) as one folder, deface_file it, publish file by file."""
    from DeFacerLib.deface.workflow import deface_file

    work = Path(config.audit_root) / ".work" / item.id
    shutil.rmtree(work, ignore_errors=True)
    staging = work / item.id  # its name is what error messages quote: the keyed item id, not a path or UID
    staging.mkdir(parents=True)
    names = {}
    for index, rel in enumerate(item.files):
        name = f"{index:06d}_{Path(rel).name}"
        os.symlink((Path(config.input_root) / rel).resolve(), staging / name)
        names[name] = rel
    out_dir = work / "out"
    folder = str(Path(item.files[0]).parent)
    # A one-file series (an enhanced multi-frame image) is a file in and a file out; a classic
    # series is a folder in and a folder out, as deface_file writes DICOM.
    source, target = staging, out_dir
    if len(names) == 1:
        out_dir.mkdir()
        source, target = staging / next(iter(names)), out_dir / next(iter(names))
    try:
        result = deface_file(source, target, parameters=config.parameters, series_uid=item.series_uid,
                             labels_path=_labels_for(config, label_map_rel(item)), dicom_options=config.dicom_options,
                             key_file=config.key_file, overwrite=True)
        produced = sorted(p.name for p in out_dir.iterdir() if not p.name.endswith(".audit"))
        if sorted(names) != produced:
            raise InputError(_not_all_written(item, config, names, produced))
        audit = Path(config.audit_root) / "items" / item.id
        shutil.rmtree(audit, ignore_errors=True)
        audit.parent.mkdir(parents=True, exist_ok=True)
        os.replace(target.with_name(target.name + ".audit"), audit)
        moves = {str(target.with_name(target.name + ".audit")): str(audit), str(out_dir): str(Path(config.output_root) / folder)}
        moves.update({str(out_dir / name): str(Path(config.output_root) / rel) for name, rel in names.items()})
        _relocate_record(audit / "defacer.json", moves, folder if len(names) > 1 else item.files[0])
        for name in produced:
            _publish(out_dir / name, Path(config.output_root) / names[name])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcome.update(action="defaced", written=len(names), outputs=list(item.files),
                   paths_holding_phi=_mirrored_paths_holding_phi(item, config))
    _deface_figures(outcome, result)
    if config.qa:
        _qa(config, Path(config.output_root) / folder, folder, outcome, files=[Path(config.output_root) / r for r in item.files])


def _relocate_record(path: Path, moves: dict[str, str], input_rel: str) -> None:
    """Point the paths of a staged series' provenance record (``path``) where its files now are:
    they named the staging folders under AUDIT/.work/, removed once the item ends, so an
    auditor following the record found nothing. ``moves``: old path -> new path; the input is
    named by its path in the input (``input_rel``), not by the staging folder's name."""
    if not path.is_file():
        return
    ordered = sorted(moves.items(), key=lambda move: -len(move[0]))  # a file before its folder

    def moved(value):
        if isinstance(value, dict):
            return {name: moved(item) for name, item in value.items()}
        if isinstance(value, list):
            return [moved(item) for item in value]
        if isinstance(value, str):
            for old, new in ordered:
                if value == old or value.startswith(old + os.sep):
                    return new + value[len(old):]
        return value

    record = moved(json.loads(path.read_text(encoding="utf-8")))
    if isinstance(record.get("input"), dict) and "name" in record["input"]:
        record["input"]["name"] = input_rel
    _write_text(path, json.dumps(record, indent=2) + "\n")


def _not_all_written(item: Item, config: BatchConfig, names: dict[str, str], produced: list[str]) -> str:
    """Why a defaced series is not published: which of its files the series reader left out (a
    slice cut short or without pixel data), by its path relative to the input, as the reports
    name items, and all of them in the item's audit (files_not_read.json); "wrote 176 files for
    177 inputs" left the user to find them."""
    left_out = [names[name] for name in sorted(set(names) - set(produced))]
    if not left_out:
        return f"defacing wrote {len(produced)} files for {len(names)} inputs"
    audit = Path(config.audit_root) / "items" / item.id
    audit.mkdir(parents=True, exist_ok=True)
    (audit / "files_not_read.json").write_text(json.dumps(left_out, indent=1) + "\n")
    first = _shared_name(left_out[0], _path_may_hold_phi(left_out[0], config))
    return (f"{len(left_out)} of its {len(names)} files could not be read as images of the series "
            f"(first: {first}: damaged, cut short or without pixel data); nothing of it published: "
            "re-export or remove them and rerun")


def _path_may_hold_phi(rel: str, config: BatchConfig) -> bool:
    """Whether a file's path holds PHI of its own header (a file named by its SOP Instance UID),
    or cannot be known to hold none: its header does not read."""
    from DeFacerLib.dicom.tree import header_phi_in_path

    try:
        return bool(header_phi_in_path(Path(config.input_root) / rel, rel, config.dicom_options, context_for(config).key))
    except Exception:  # a damaged header: its name may be its UID all the same
        return True


def _shared_name(rel: str, holds_phi: bool) -> str:
    """A file that is not published, as the shared reports name it: by its path, unless that holds
    PHI of its header. A written file's path is mirrored in the output (and counted, to rename);
    a failed file's would be published in the reports alone. Which one: the item's audit."""
    return "a file whose path holds PHI of its header (named in the item's audit)" if holds_phi else rel


def _scrub_files(item: Item, config: BatchConfig, outcome: dict, reason: str = "") -> None:
    """PS3.15 scrub of each file into its mirrored place; per-file status as ``defacer scrub`` gives it."""
    from DeFacerLib.dicom.tree import for_the_log, scrub_file

    key = context_for(config).key
    out_root = Path(config.output_root)
    records, uid_map, patients = [], {}, {}
    for rel in item.files:
        target = out_root / rel
        with _partial(target) as temp:
            record = scrub_file((str(Path(config.input_root) / rel), rel, str(temp), config.dicom_options, key))
            if record["status"] == "written":
                os.replace(temp, target)
        if record["status"] == "failed" and _is_disk_full_text(record["reason"]):
            raise OSError(errno.ENOSPC, f"No space left on device writing {rel}")
        uid_map.update(record.pop("uid_map", None) or {})
        patient = record.pop("patient", None)
        if patient:
            patients[patient[0]] = patient[1]
        records.append(for_the_log(record))
    _write_scrub_audit(config, item, records, uid_map, patients)
    counts = {status: sum(1 for r in records if r["status"] == status) for status in ("written", "skipped", "failed")}
    outputs = [r["file"] for r in records if r["status"] == "written"]
    problems = [r["reason"] if r["file"] == item.name else f"{_shared_name(r['file'], 'path_holds_phi' in r)}: {r['reason']}"
                for r in records if r["status"] != "written"]  # a file item is named by it
    state = FAILED if counts["failed"] else (SKIPPED if not counts["written"] else DONE)
    # the caller's reason says what was done to the files written: none written, it would mislead
    text = "; ".join(part for part in [reason if counts["written"] else "", *problems[:3]] if part)
    if len(problems) > 3:
        text += f"; and {len(problems) - 3} more"
    outcome.update(state=state, action="scrubbed" if counts["written"] else "none", written=counts["written"],
                   skipped=counts["skipped"], failed=counts["failed"], outputs=outputs, reason=text,
                   paths_holding_phi=sum(1 for r in records if "path_holds_phi" in r and r["status"] == "written"),
                   # published with text in their pixels that header scrubbing left (BurnedInAnnotation YES)
                   burned_in_annotation=[r["file"] for r in records
                                         if r.get("burned_in_annotation") and r["status"] == "written"],
                   # --clean-pixel-data left their pixels (pixels_ocr.ocr_skip_reason), as `defacer scrub` lists them
                   pixels_not_cleaned=[r["file"] for r in records if r.get("pixels_not_cleaned") and r["status"] == "written"],
                   # --clean-recognizable-visual-features filled faces in these (dicom.pixels_faces)
                   faces_filled=sum(r.get("faces_filled", {}).get("faces", 0) for r in records if r["status"] == "written"))


def _mirrored_paths_holding_phi(item: Item, config: BatchConfig) -> int:
    """How many of a defaced series' files are published under a path that holds PHI of their
    own header, as the scrubbed files are counted; which, and what, goes to the item's private
    audit folder (paths_holding_phi.json), never to the shared report."""
    from DeFacerLib.dicom.tree import header_phi_in_path

    key = context_for(config).key
    found = []
    for rel in item.files:
        holds = header_phi_in_path(Path(config.input_root) / rel, rel, config.dicom_options, key)
        if holds:
            found.append({"file": rel, "holds": holds})
    if found:
        audit = Path(config.audit_root) / "items" / item.id
        audit.mkdir(parents=True, exist_ok=True)
        (audit / "paths_holding_phi.json").write_text(json.dumps(found, indent=1) + "\n")
    return len(found)


def _write_scrub_audit(config, item, records, uid_map, patients) -> None:
    from DeFacerLib.dicom.audit import write_audit

    folder = Path(config.audit_root) / "items" / item.id
    shutil.rmtree(folder, ignore_errors=True)
    write_audit(folder, uid_map, patients, records, {"item": item.name, "files": len(records)})


def _dicom_file(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    _scrub_files(item, config, outcome)


def _copy(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    """Copied as it is; a NIfTI (func, dwi, derivatives) less what its header holds about people,
    machines and files (deface.header_identity: AFNI histories, embedded DICOM headers)."""
    rel = item.files[0]
    source, target = Path(config.input_root) / rel, Path(config.output_root) / rel
    if rel.lower().endswith((".nii", ".nii.gz")):
        from DeFacerLib.io.nifti import copy_nifti_without_identity

        target.parent.mkdir(parents=True, exist_ok=True)
        with _partial(target) as temp:
            removed = copy_nifti_without_identity(source, temp)
            if removed:
                os.replace(temp, target)
                outcome.update(action="copied, header cleaned", written=1, outputs=[rel], header_removed=removed)
                return
    _publish(source, target, copy=True)
    outcome.update(action="copied", written=1, outputs=[rel])
    if bids.PARTICIPANT_TABLE.match(rel):
        _warn_identifying_columns(source, outcome)


def _photo(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    """A BIDS photo of the head (``eeg/sub-01_photo.jpg``: the electrodes on it) shows the
    participant's face as often as not: each face found, in any orientation, is filled with its
    head and hair, as ``defacer photo`` does by default (docs/photo.md), and only the pixels are
    published (no EXIF/XMP: a camera's date, place and serial number). A scrub-only run
    publishes no photo."""
    rel = item.files[0]
    if config.scrub_only:
        outcome.update(state=SKIPPED, skipped=1, action="none", reason="scrub-only run: photos are not anonymized, "
                                                                       "nothing written")
        return
    require_extra("cv2", "photo", "a BIDS photo (*_photo.jpg)")
    from DeFacerLib.photo.anonymize import UNATTENDED, anonymize_path

    target = Path(config.output_root) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    report, = anonymize_path(Path(config.input_root) / rel, target, UNATTENDED, overwrite=True)
    outcome.update(action="faces filled" if report.faces else "copied, metadata removed", written=1, outputs=[rel],
                   faces_filled=report.faces)
    if not report.faces:
        outcome["reason"] = "no face found: its pixels are published as they are; look at it before sharing"


def _warn_identifying_columns(source: Path, outcome: dict) -> None:
    """participants.tsv / phenotype/*.tsv are copied as the study wrote them; columns named like
    a person's name, birth date, address or record number are reported (bids.identifying_columns)."""
    with open(source, encoding="utf-8", errors="replace", newline="") as table:
        columns = bids.identifying_columns(table.readline())
    if columns:
        outcome["identifying_columns"] = columns
        outcome["reason"] = (f"copied as it is, but column(s) {', '.join(columns)} may name or date a person: "
                             "check before sharing")


def _sidecar(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    rel = item.files[0]
    data = _read_json(Path(config.input_root) / rel)
    _dates, offset = _dates_policy(config, rel)
    cleaned, removed = bids.scrub_sidecar(data, config.dicom_options, offset)
    _write_text(Path(config.output_root) / rel, bids.dumps(cleaned))
    outcome.update(action="sidecar scrubbed" if removed else "sidecar checked", written=1, outputs=[rel],
                   removed_fields=removed)


def _dates_policy(config: BatchConfig, rel: str) -> tuple[str, int]:
    """("remove" | "modified" | "full", the whole-day shift of the file's BIDS subject) under the
    run's DICOM options: sidecars and scans tables move by the same keyed offset."""
    options = config.dicom_options
    if options.retain_long_full_dates:
        return "full", 0
    if not options.retain_long_modified_dates:
        return "remove", 0
    from DeFacerLib.dicom.uids import date_offset_days

    return "modified", date_offset_days(context_for(config).key, bids.subject_of(rel))


def _dated_table(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    rel = item.files[0]
    source = Path(config.input_root) / rel
    try:
        with open(source, encoding="utf-8", newline="") as table:  # line endings kept as they are
            text = table.read()
    except UnicodeDecodeError:
        raise InputError(f"{rel} is not UTF-8 text; BIDS tables are UTF-8 TSV") from None
    dates, offset = _dates_policy(config, rel)
    cleaned, changed = bids.scrub_dated_table(text, dates, offset)
    _write_text(Path(config.output_root) / rel, cleaned)
    action = {"remove": "acq_time removed", "modified": "acq_time shifted", "full": "acq_time kept"}[dates]
    outcome.update(action=action, written=1, outputs=[rel], dates_changed=changed)


def _description(item: Item, config: BatchConfig, info: dict, outcome: dict) -> None:
    rel = item.files[0]
    data = _read_json(Path(config.input_root) / rel)
    if not isinstance(data, dict):
        raise InputError(f"{rel} is not a JSON object; fix dataset_description.json")
    features = () if config.scrub_only else config.parameters.features
    dates, _ = _dates_policy(config, rel)
    _write_text(Path(config.output_root) / rel, bids.dumps(bids.add_generated_by(data, features, dates)))
    outcome.update(action="GeneratedBy added", written=1, outputs=[rel])


_HANDLERS = {
    PHOTO: _photo,
    DEFACE_VOLUME: _deface_volume,
    FACE_CHECK: _face_check,
    DICOM_SERIES: _dicom_series,
    DICOM_FILE: _dicom_file,
    COPY: _copy,
    SIDECAR: _sidecar,
    DATED_TABLE: _dated_table,
    DESCRIPTION: _description,
}


# ---- reporting helpers ---------------------------------------------------------------------------

def _deface_figures(outcome: dict, result: dict) -> None:
    report = result.get("report", {})
    outcome["features_removed"] = list(result.get("features_removed", []))
    outcome["features_missing"] = list(result.get("features_missing", []))
    outcome["voxels_removed"] = {name: int(entry.get("voxels_removed", 0))
                                 for name, entry in report.get("features", {}).items()}
    outcome["protected_voxels_changed"] = int(report.get("protected_voxels_changed", 0))
    if not outcome["features_removed"]:
        outcome["reason"] = "no facial feature found in this scan; nothing removed (check the QA picture)"


def _qa(config: BatchConfig, output: Path, rel: str, outcome: dict, files=None) -> None:
    """Front render of the OUTPUT and YuNet on it: a face found after defacing is a red flag."""
    from DeFacerLib.io import read_volume
    from DeFacerLib.qa import render_views
    from DeFacerLib.qa.recognize import FACE_PRESENT_SCORE
    from DeFacerLib.qa.render import detect_faces_yunet, save_png

    if files is not None:  # a DICOM series published file by file: read it through a staging folder
        staging = Path(config.audit_root) / ".work" / (outcome["id"] + "-qa")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for index, path in enumerate(files):
            os.symlink(path.resolve(), staging / f"{index:06d}_{path.name}")
        try:
            volume = read_volume(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        volume = read_volume(output)
    front = render_views(volume, views=("front",))["front"]
    faces = detect_faces_yunet(front, score_threshold=FACE_PRESENT_SCORE)  # as `defacer qa` counts a face
    picture = fitted_path(config.meta_root / "qa" / rel.replace("/", "__"), ".front.png", "QA picture")
    picture.parent.mkdir(parents=True, exist_ok=True)
    save_png(front, picture)
    outcome["qa_face_found"] = bool(faces)
    outcome["qa_face_score"] = round(faces[0].score, 3) if faces else 0.0
    outcome["qa_picture"] = str(picture.relative_to(config.meta_root))


# ---- file plumbing -------------------------------------------------------------------------------

def label_map_rel(item: Item) -> str:
    """Where ``--features-from DIR`` holds the item's label map: at a volume's own relative path,
    at a DICOM series' folder path + .nii.gz."""
    if item.kind == DICOM_SERIES:
        return str(Path(item.files[0]).parent) + ".nii.gz"
    return item.files[0]


def _labels_for(config: BatchConfig, rel: str) -> Path | None:
    """``--features-from DIR``: the label map at the item's relative path (None: the U-Net finds them)."""
    if config.labels_dir is None:
        return None
    path = Path(config.labels_dir) / rel
    if not path.is_file():
        raise InputError(f"no label map {path} for {rel}; --features-from DIR must mirror the input")
    return path


def _keep_provenance(sidecar: Path, target: Path, rel: str) -> None:
    """Move the provenance JSON out of the data tree (a BIDS validator would flag it) into .defacer/
    (``target``: provenance.record_path). The sidecar leaves the data tree whatever happens: a record
    that failed to be kept left it beside the output of a failed item."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        record["output"]["path"] = rel  # shared with the data: relative, as the reports are (never /data/<site>/...)
        _write_text(target, json.dumps(record, indent=2) + "\n")
    finally:
        with contextlib.suppress(FileNotFoundError):
            sidecar.unlink()


def _publish(source: Path, target: Path, copy: bool = False) -> None:
    """Make ``target`` appear in one step: rename when possible, else copy to a sibling then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.replace(source, target)
            return
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
    with _partial(target) as temp:
        shutil.copyfile(source, temp)
        os.replace(temp, target)


def _write_text(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with _partial(target) as temp:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, target)


@contextlib.contextmanager
def _partial(target: Path) -> Iterator[Path]:
    """Batch's fixed temporary beside ``target`` (io.atomic.partial_path: a rerun sweeps what a
    killed worker left): the caller moves it into place; removed whatever else happens."""
    temp = partial_path(target)
    try:
        yield temp
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # with a byte-order mark (Notepad) too
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path.name} is not valid JSON ({error}); fix or remove it") from None


def _remove_outputs(config: BatchConfig, rels) -> None:
    out_root = Path(config.output_root)
    for rel in with_detached_data_outputs(rels):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            (out_root / rel).unlink()


def _redact(text: str, item: Item, config: BatchConfig | None = None) -> str:
    """Error texts may quote the staging path, absolute paths or the original series UID: keep them
    out of the reports, which are shared (their paths are relative to the input; a folder above it
    may name the patient or the site)."""
    if item.series_uid:
        text = text.replace(item.series_uid, "<series>")
    if config is not None:
        staging = Path(config.audit_root) / ".work" / item.id
        text = text.replace(f"{staging / item.id}", item.id).replace(f"{staging}/", "")
        roots = ((config.input_root, ""), (config.output_root, ""), (config.audit_root, "<audit>/"))
        for root, shown in sorted(roots, key=lambda pair: -len(pair[0])):  # "/d/in_out/" before "/d/in/"
            text = text.replace(f"{root}/", shown)
    return text


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.strerror and error.strerror not in text:
        text = f"{error.strerror}: {text}"
    return text


def _is_disk_full_text(text: str) -> bool:
    return "No space left on device" in text or "disk is full" in text


def _is_disk_full(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if _is_disk_full_text(str(error)):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False
