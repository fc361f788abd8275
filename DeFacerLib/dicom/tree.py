"""Scrub a whole folder tree (or one file): mirror the tree, account for every file.

Each input file ends as exactly one of: written, skipped (not DICOM) or failed (truncated,
no transfer syntax, undecodable pixels for Clean Pixel Data, PHI left after scrubbing),
with its reason. The output tree appears atomically (temp folder + rename); if the leak
check finds any input PHI left in any file, nothing is published. The audit trail (UID and
patient mappings, per-file action log, summary) goes to a separate folder, since it holds
the original identifiers; a run that publishes nothing writes it to AUDIT.failed instead, so
that the audit of an output already in place keeps matching it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from DeFacerLib.dicom.dicomdir import indexed_files, record_links, save_scrubbed
from DeFacerLib.dicom.leakcheck import PhiSet, phi_in_path
from DeFacerLib.dicom.markers import BURNED_IN_ANNOTATION
from DeFacerLib.dicom.profile import ProfileOptions
from DeFacerLib.dicom.scrub import IMAGE_DATA_TAGS, ISSUER_OF_PATIENT_ID, SOP_INSTANCE_UID, Scrubber, peek_value
from DeFacerLib.errors import DeFacerError, GuaranteeError, InputError, OutputError, require_extra
from DeFacerLib.io.atomic import atomic_path, check_name_fits, check_output_path, is_within
from DeFacerLib.io.walk import walk_folders

_SCRUBBERS: dict = {}
MIN_FILES_PER_WORKER = 16
MAX_CHUNK_FILES = 4
ROWS, COLUMNS, BITS_ALLOCATED, NUMBER_OF_FRAMES, SAMPLES_PER_PIXEL = 0x00280010, 0x00280011, 0x00280100, 0x00280008, 0x00280002
TRANSFER_SYNTAX_UID, PIXEL_DATA = 0x00020010, 0x7FE00010


def default_audit_dir(output: Path) -> Path:
    return output.with_name(output.name + ".audit")


def failed_audit_dir(audit: Path) -> Path:
    """Where a run that published nothing (the leak check failed) writes its audit: beside the
    audit of the output in place, which must keep matching that output."""
    return audit.with_name(audit.name + ".failed")


def list_inputs(root: Path) -> list[tuple[str, str]]:
    """(path, path relative to ``root``) of every file, folders and names sorted. Strings, not
    Paths: pathlib costs ~10 us a file, several per cent of a header scrub."""
    if root.is_file():
        return [(str(root), root.name)]
    top = str(root)
    start = len(os.path.join(top, ""))
    files = []
    for folder, _dirs, names in walk_folders(top):
        files += [(path, path[start:]) for path in (os.path.join(folder, name) for name in names)]
    return files


def scrub_inputs(source: Path) -> list[tuple[str, str]]:
    """list_inputs of an input that exists and holds a file; InputError otherwise (checked
    before anything is made, the key file included)."""
    if not Path(source).exists():
        raise InputError(f"{source} does not exist; give a DICOM file or a folder of DICOM files")
    inputs = list_inputs(Path(source))
    if not inputs:
        raise InputError(f"{source} holds no files; give a DICOM file or a folder of DICOM files")
    return inputs


def pool_size(workers: int, files: int) -> int:
    """Worker processes worth starting: each must get MIN_FILES_PER_WORKER files, since a pool
    costs ~10-20 ms to start and a header scrub ~2-3 ms per file (1 means: no pool at all)."""
    return max(1, min(workers, files // MIN_FILES_PER_WORKER))


def chunk_size(files: int, workers: int) -> int:
    """Files per task sent to a worker: a few (one round trip per chunk, not per file), but
    small enough that no worker sits idle long while the last chunk of another finishes."""
    return max(1, min(MAX_CHUNK_FILES, files // (8 * workers)))


def _scrubber(options: ProfileOptions, key: bytes):
    cache_key = (options, key)
    if cache_key not in _SCRUBBERS:
        _SCRUBBERS[cache_key] = Scrubber(options, key)
    return _SCRUBBERS[cache_key]


def _expected_pixel_bytes(ds) -> int | None:
    """From the values peeked at: the elements stay raw for the writer."""
    try:
        rows, cols = int(peek_value(ds, ROWS)), int(peek_value(ds, COLUMNS))
        bits = int(peek_value(ds, BITS_ALLOCATED))
    except (AttributeError, TypeError, ValueError):
        return None
    frames = int(peek_value(ds, NUMBER_OF_FRAMES, 1) or 1)
    samples = int(peek_value(ds, SAMPLES_PER_PIXEL, 1) or 1)
    total_bits = rows * cols * frames * samples * bits
    return (total_bits + 7) // 8


def _read(path: str | Path):
    """(dataset, None) or (None, ('skipped'|'failed', reason)). Tags are looked up as numbers:
    a keyword costs a failed int() inside pydicom's Tag() first (an exception per lookup)."""
    try:
        status = os.stat(path)
    except OSError:
        status = None
    if status is None and not os.path.lexists(path):  # listed, then deleted or moved: no broken link
        return None, ("failed", "it disappeared while the run read the tree (deleted or moved); rerun to mirror "
                                "the input as it is now")
    if status is None or not stat.S_ISREG(status.st_mode):  # a pipe would block the read forever
        return None, ("skipped", "not a regular file (a pipe, a device or a broken link)")
    try:
        with warnings.catch_warnings(record=True) as caught:  # pydicom only warns when a file ends early
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
    except InvalidDicomError:
        try:
            with warnings.catch_warnings():  # a forced read of any file warns about what it guessed
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True)
        except Exception:
            return None, ("skipped", "not a DICOM file")
        if "SOPClassUID" not in ds and "SOPInstanceUID" not in ds:
            return None, ("skipped", "not a DICOM file")
        return None, ("failed", "DICOM dataset without Part 10 file meta (no transfer syntax); re-export it as a DICOM file")
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return None, ("failed", f"damaged or truncated DICOM file ({reason})")
    meta = getattr(ds, "file_meta", None)
    if meta is None or TRANSFER_SYNTAX_UID not in meta._dict:
        return None, ("failed", "missing transfer syntax in the file meta; re-export it as a DICOM Part 10 file")
    syntax = meta[TRANSFER_SYNTAX_UID].value
    if not getattr(syntax, "is_transfer_syntax", False):  # JPEG XL, a vendor's private syntax: pydicom cannot say how it is encoded
        return None, ("failed", f"unknown transfer syntax {str(syntax).strip() or '(empty)'} in the file meta; "
                                "re-export it with a standard transfer syntax")
    cut = _ends_early(ds, caught, status.st_size) or _image_without_pixels(ds)
    if cut:
        return None, ("failed", f"truncated: {cut}")
    if PIXEL_DATA in ds._dict and not meta[TRANSFER_SYNTAX_UID].value.is_compressed:
        expected = _expected_pixel_bytes(ds)
        pixels = ds.get_item(PIXEL_DATA)  # raw: its length without converting the value
        actual = len(pixels.value or b"")
        if expected is not None and actual < expected:
            return None, ("failed", f"truncated: pixel data has {actual} of {expected} bytes")
    return ds, None


ROWS, COLUMNS = 0x00280010, 0x00280011


def _image_without_pixels(ds) -> str | None:
    """An image header (Rows and Columns) with no image data after it: a file cut exactly between
    two elements, which reads as a complete, shorter file; written, it is an image without pixels."""
    elements = ds._dict
    if ROWS in elements and COLUMNS in elements and not any(tag in elements for tag in IMAGE_DATA_TAGS):
        return "the image has Rows and Columns but no pixel data"
    return None


def says_burned_in(ds) -> bool:
    """The file itself says its pixels carry burned-in text (BurnedInAnnotation YES, kept as
    the source said when the pixels were not cleaned): header scrubbing does not remove it. An
    encapsulated PDF or CDA says YES of its document, which the profile replaces (D): no pixels."""
    return (str(peek_value(ds, BURNED_IN_ANNOTATION, "") or "").strip().upper() == "YES"
            and any(tag in ds._dict for tag in IMAGE_DATA_TAGS))


def _ends_early(ds, caught, file_bytes: int) -> str | None:
    """Why a file read without error still ends before its last element does, else None.

    pydicom keeps what it got: a short last value (a defined length cut off), after a
    warning an undefined-length one (compressed pixel data, a sequence) without its end,
    and it drops a last element header cut off after fewer than 8 bytes. Written as it is,
    the output would be an image without its pixels or with corrupt ones."""
    for warning in caught:
        if "End of file reached" in str(warning.message):
            return "the file ends inside its last element (no sequence delimiter)"
    elements = ds._dict
    if not elements:
        return "nothing after the file meta"
    last = elements[next(reversed(elements))]
    length = getattr(last, "length", 0)
    if isinstance(last.value, (bytes, bytearray)) and length != 0xFFFFFFFF and len(last.value) < length:
        return f"the file ends inside {_tag_name(last.tag)} ({len(last.value)} of {length} bytes)"
    end = getattr(last, "value_tell", None)
    if isinstance(last.value, (bytes, bytearray)) and length != 0xFFFFFFFF and end is not None \
            and 0 < file_bytes - (end + length) < 8:
        return f"the file ends inside the header of the element after {_tag_name(last.tag)}"
    return None


def _tag_name(tag) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or f"({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})"


def header_phi_in_path(in_path, rel: str, options: ProfileOptions, key: bytes) -> str | None:
    """What of its own header a file's mirrored path ``rel`` holds (leakcheck.phi_in_path), for
    files another writer de-identifies under that path (batch's defaced series)."""
    return phi_in_path(rel, header_phi(in_path, rel, options, key), skip_uids=options.retain_uids)


def header_phi(path, where: str, options: ProfileOptions, key: bytes) -> PhiSet:
    """The PHI of a file's header, read without its pixels and scrubbed in memory as scrub_file
    would scrub it (nothing is written)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return _scrubber(options, key).scrub(ds, where=where).phi


def indexed_phi(dicomdir, path, options: ProfileOptions, key: bytes, phi_by_file: dict | None = None) -> PhiSet:
    """The PHI of the files a DICOMDIR indexes, their headers scrubbed in memory as scrub_file
    would: its records copy them (an SR record's content holds the report's text), and its own
    header names no referring physician, operator or institution to take out of that text.
    ``phi_by_file``: what scrub_file already found in some of them (absolute path -> PhiSet),
    so that a tree's files are not read and scrubbed a second time."""
    phi = PhiSet()
    for file in indexed_files(dicomdir, path):
        if phi_by_file and file in phi_by_file:
            phi.include(phi_by_file[file])
            continue
        try:
            phi.include(header_phi(file, file, options, key))
        except Exception:  # unreadable: scrub_file reports it in its own right
            continue
    return phi


def scrub_file(task: tuple, keep_phi: bool = False) -> dict:
    """Scrub one file into ``out_path`` (worker entry point); returns its audit record.
    ``task``: (input path, relative path, output path, options, key[, mirrored[, phi_by_file]]);
    mirrored (default): the output's path is the input's relative path, so PHI in it is
    reported; phi_by_file: indexed_phi's, for a DICOMDIR. ``keep_phi``: the record's "phi" is
    the file's PhiSet, for the tree's DICOMDIRs (scrub_tree takes it out of the record)."""
    in_path, rel, out_path, options, key, *rest = task
    mirrored = rest[0] if rest else True
    phi_by_file = rest[1] if len(rest) > 1 else None
    started = time.perf_counter()
    record = {"file": rel, "status": "written", "reason": ""}
    ds, problem = _read(in_path)
    if problem is not None:
        record["status"], record["reason"] = problem
        return record
    record["sop_instance_uid_old"] = str(peek_value(ds, SOP_INSTANCE_UID, ""))
    record["issuer_old"] = str(peek_value(ds, ISSUER_OF_PATIENT_ID, "") or "").strip()
    links = record_links(ds)  # a DICOMDIR's: its records move as the scrub changes value lengths
    try:
        known = indexed_phi(ds, in_path, options, key, phi_by_file) if links is not None else None
        with warnings.catch_warnings():  # pydicom's notes on the input's own non-conformant values
            warnings.simplefilter("ignore")
            result = _scrubber(options, key).scrub(ds, where=rel, known_phi=known)
    except DeFacerError as error:
        record["status"], record["reason"] = "failed", str(error)
        return record
    if keep_phi:
        record["phi"] = result.phi
    if mirrored:  # a tree's mirrored path, not a file the user named
        in_path_phi = phi_in_path(rel, result.phi, skip_uids=options.retain_uids)
        if in_path_phi:
            record["path_holds_phi"] = in_path_phi
    record["actions"] = result.action_rows()
    record["kept_untouched"] = result.kept
    record["uid_map"] = result.uid_map
    record["patient"] = list(result.patient) if result.patient else None
    if result.pixels_cleaned is None and says_burned_in(ds):
        record["burned_in_annotation"] = True
    if result.pixels_not_cleaned:
        record["pixels_not_cleaned"] = result.pixels_not_cleaned
    if result.pixels_cleaned is not None:
        record["pixels_cleaned"] = {"boxes": result.pixels_cleaned["boxes"], "words": len(result.pixels_cleaned["words"]),
                                    "decompressed_from": result.pixels_cleaned["decompressed_from"]}
    if result.faces_not_checked:
        record["faces_not_checked"] = result.faces_not_checked
    if result.faces_filled is not None:
        record["faces_filled"] = result.faces_filled
    if result.text_segments_removed:
        record["text_segments_removed"] = result.text_segments_removed
    if result.leaks:
        record["status"] = "failed"
        # the reason reaches batch's shared reports: the value found stays in "leaks" (the private audit)
        record["reason"] = "leak check: " + "; ".join(leak.line_without_value() for leak in result.leaks[:5])
        record["leaks"] = [leak.line() for leak in result.leaks]
        return record
    try:
        try:
            save_scrubbed(ds, out_path, links)
        except FileNotFoundError:  # the first file of its folder: make the folder (one syscall less per file)
            os.makedirs(os.path.dirname(out_path), exist_ok=True)
            save_scrubbed(ds, out_path, links)
    except Exception as error:
        record["status"], record["reason"] = "failed", f"cannot write ({type(error).__name__}: {error})"
    record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def scrub_tree(input_path: str | Path, output_path: str | Path, options: ProfileOptions, key: bytes, *,
               workers: int = 1, overwrite: bool = False, audit_dir: str | Path | None = None,
               progress=None) -> dict:
    """Scrub every file under ``input_path`` into a mirrored tree at ``output_path``."""
    source, target = Path(input_path), Path(output_path)
    inputs = scrub_inputs(source)
    target = check_output_path(source, target, overwrite)
    if target.exists() and target.is_dir() != source.is_dir():  # --overwrite: cannot replace one with the other
        kind, wanted = ("a folder", "a file") if target.is_dir() else ("a file", "a folder")
        raise OutputError(f"output {output_path} is {kind} but this input gives {wanted}; remove it or choose another path")
    audit = Path(audit_dir) if audit_dir else default_audit_dir(target)
    for folder in (audit, failed_audit_dir(audit)):  # a run whose leak check fails writes the second
        check_name_fits(folder, "audit folder")
    # an audit folder there would be published with the output (or removed when it is replaced)
    # or would change the input
    if any(is_within(folder, target) or is_within(folder, source) for folder in (audit, failed_audit_dir(audit))):
        raise OutputError(f"audit folder {audit} must be outside the input and the output")
    if not overwrite and audit.is_dir() and any(audit.iterdir()):  # its mappings are the only way back
        raise OutputError(f"audit folder {audit} holds an earlier run's mappings; pass --overwrite to replace them "
                          "or choose another --audit-dir")
    if options.clean_pixel_data:
        from DeFacerLib.dicom.pixels_ocr import require_tesseract

        require_tesseract()
    if options.clean_recognizable_visual_features:
        require_extra("cv2", "photo", "--clean-recognizable-visual-features")
    started = time.perf_counter()
    own_audit: list[Path] = []  # removed if the output cannot be published after it
    with _removed_on_error(own_audit), atomic_path(target, directory=source.is_dir(), replace=overwrite) as temp:
        single = source.is_file()
        tasks = [(path, rel, str(temp) if single else os.path.join(temp, rel), options, key, not single)
                 for path, rel in inputs]
        records = _scrub_files(tasks, options, key, workers, progress)
        if single and records[0]["status"] != "written" and not records[0].get("leaks"):  # nothing to publish or audit
            raise InputError(f"{source} was not scrubbed: {records[0]['reason']}")
        if not any(r["status"] == "written" or r.get("leaks") for r in records):  # an empty tree is no output
            first = records[0]
            raise InputError(f"{source} holds no DICOM file that could be scrubbed ({len(records)} file(s); "
                             f"first: {first['file']}: {first['reason']})")
        summary, uid_map, patient_map = _summarize(records, source, target, audit, options, time.perf_counter() - started)
        leaked = [r for r in records if r.get("leaks")]
        if leaked:  # nothing is published, so the audit of what is published stays as it was
            audit_files = _write_audit(failed_audit_dir(audit), uid_map, patient_map, records, summary)
            # The reason names the attribute, not the value: standard error ends up in job logs;
            # the value found is in the private failed audit's actions log.
            raise GuaranteeError(
                f"PHI left after scrubbing in {len(leaked)} file(s), nothing was written to {target}: "
                f"{leaked[0]['file']}: {leaked[0]['reason']} (details in {audit_files['summary']}, "
                f"the values found in {audit_files['actions_log']})"
            )
        summary["audit"] = _write_audit(audit, uid_map, patient_map, records, summary, replace=overwrite)
        if not overwrite:  # a new audit, of an output that another run may publish first (atomic_path)
            own_audit.append(audit)
    shutil.rmtree(failed_audit_dir(audit), ignore_errors=True)  # an earlier failed run's report, superseded
    return summary


def scrub_with_key_file(input_path: str | Path, output_path: str | Path, options: ProfileOptions,
                        key_file: str | Path | None, **scrub_options) -> dict:
    """scrub_tree keyed from ``key_file`` (made when missing; None: the default key), as `defacer
    scrub` and the Slicer module run it: a key file inside the input or the output is refused
    before it is made or read (it would be shared with the data it keys), a key made for a run
    that published nothing is removed again, and the summary names the key and whether others
    can read it (sharing_warnings.key_readable)."""
    from DeFacerLib.dicom.uids import forget_new_key, key_readable_by_others, load_or_create_key, refuse_key_inside

    refuse_key_inside(key_file, input_path, output_path)
    key, key_path, created = load_or_create_key(key_file)
    try:
        summary = scrub_tree(input_path, output_path, options, key, **scrub_options)
    except BaseException:  # scrub_tree publishes whole or not at all: nothing was keyed with a new key
        forget_new_key(key_path, created)
        raise
    return dict(summary, key_file=str(key_path), key_created=created,
                key_readable_by_others=key_readable_by_others(key_path))


def _scrub_files(tasks: list[tuple], options: ProfileOptions, key: bytes, workers: int, progress) -> list[dict]:
    """scrub_file on every task, in a pool when worth it; the records in the tasks' order.

    A DICOMDIR (by its name) is scrubbed last, with the PHI its indexed files gave when they
    were scrubbed: read and scrubbed again for it, one by one, they doubled the time of a
    10,000-file archive's scrub (indexed_phi still reads any file this run did not scrub)."""
    last = [i for i, task in enumerate(tasks) if is_named_dicomdir(task[0])]
    first = [i for i, task in enumerate(tasks) if not is_named_dicomdir(task[0])]
    keep_phi = bool(last)
    by_index: dict[int, dict] = {}

    def done(index: int, record: dict) -> None:
        by_index[index] = record
        if progress:
            progress(len(by_index), len(tasks))

    _scrubber(options, key)  # built once here: forked workers inherit it (others build it at start)
    workers = pool_size(workers, len(first))
    if workers > 1:
        # The first file here, before the fork: the workers inherit its warm caches (encoded
        # markers, compiled PHI patterns, the series' repeated sequences and elements).
        done(first[0], scrub_file(tasks[first[0]], keep_phi))
        with ProcessPoolExecutor(max_workers=workers, initializer=_scrubber, initargs=(options, key)) as pool:
            rest = [tasks[i] for i in first[1:]]
            scrubbed = pool.map(functools.partial(scrub_file, keep_phi=keep_phi), rest,
                                chunksize=chunk_size(len(tasks), workers))
            for index, record in zip(first[1:], scrubbed):
                done(index, record)
    else:
        for index in first:
            done(index, scrub_file(tasks[index], keep_phi))
    phi_by_file = {os.path.abspath(tasks[i][0]): by_index[i].pop("phi") for i in first if "phi" in by_index[i]}
    for index in last:
        done(index, scrub_file(tasks[index][:6] + (phi_by_file,)))
    return [by_index[i] for i in range(len(tasks))]


def is_named_dicomdir(path) -> bool:
    """A DICOMDIR's file name (PS3.10: "DICOMDIR"; on a mounted CD maybe in lower case, with ";1")."""
    return os.path.basename(str(path)).split(";")[0].upper() == "DICOMDIR"


@contextlib.contextmanager
def _removed_on_error(folders: list[Path]):
    """Remove ``folders`` (this run's new audit) when the block fails after they were made: two
    runs into one output without --overwrite, the later one's output is refused and its audit
    must not stay to describe it."""
    try:
        yield
    except BaseException:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _write_audit(audit: Path, uid_map, patient_map, records, summary, replace: bool = True) -> dict:
    from DeFacerLib.dicom.audit import write_audit

    log = [for_the_log(r) for r in records]
    return write_audit(audit, uid_map, patient_map, log, summary, replace=replace)


# what scrub_file's record carries for the run's summary and mappings, not for the actions log
RECORD_FOR_SUMMARY = ("uid_map", "patient", "sop_instance_uid_old", "issuer_old")


def for_the_log(record: dict) -> dict:
    """A file's record as the actions log keeps it (its mappings go to their own files)."""
    return {k: v for k, v in record.items() if k not in RECORD_FOR_SUMMARY}


def patient_ids_from_several_issuers(records: list[dict]) -> list[list[str]]:
    """For each Patient ID that comes with two or more Issuers of Patient ID, the first file of
    each issuer. Pseudonyms and date offsets are keyed on the ID alone (an issuer is often named
    by one modality and not another, and the same patient must not split in two), so two sites'
    patient 123 become one patient: the user is told, and can scrub each site with its own key."""
    first_file: dict[str, dict[str, str]] = {}
    for r in records:
        if r.get("patient") and r.get("issuer_old"):
            first_file.setdefault(r["patient"][0], {}).setdefault(r["issuer_old"], r["file"])
    return [sorted(files.values()) for files in first_file.values() if len(files) > 1]


def _summarize(records, source, target, audit, options, seconds):
    uid_map, patient_map, first_of_sop, duplicates = {}, {}, {}, []
    for r in records:
        uid_map.update(r.get("uid_map") or {})
        if r.get("patient"):
            patient_map[r["patient"][0]] = r["patient"][1]
        sop = r.get("sop_instance_uid_old")
        if sop:
            if sop in first_of_sop:
                duplicates.append({"file": r["file"], "same_sop_instance_uid_as": first_of_sop[sop]})
            else:
                first_of_sop[sop] = r["file"]
    by_status = {s: [r for r in records if r["status"] == s] for s in ("written", "skipped", "failed")}
    summary = {
        "input": str(source),
        "output": str(target),
        "files": len(records),
        "written": len(by_status["written"]),
        "skipped": len(by_status["skipped"]),
        "failed": len(by_status["failed"]),
        "skipped_files": [{"file": r["file"], "reason": r["reason"]} for r in by_status["skipped"]],
        "failed_files": [{"file": r["file"], "reason": r["reason"]} for r in by_status["failed"]],
        "duplicate_sop_instance_uids": duplicates,
        "patient_ids_from_several_issuers": patient_ids_from_several_issuers(records),
        "patients": len(patient_map),
        "uids_replaced": len(uid_map),
        "pixels_cleaned": sum(1 for r in records if "pixels_cleaned" in r),
        # --clean-pixel-data left these (primary or defaced CT/MR/PET/NM images: pixels_ocr.ocr_skip_reason)
        "pixels_not_cleaned": [r["file"] for r in records if r.get("pixels_not_cleaned") and r["status"] == "written"],
        "burned_in_annotation": [r["file"] for r in records if r.get("burned_in_annotation") and r["status"] == "written"],
        # --clean-recognizable-visual-features: files with faces filled, and those it left (CT/MR/PET/NM slices)
        "faces_filled": [{"file": r["file"], "faces": r["faces_filled"]["faces"]} for r in records
                         if r.get("faces_filled", {}).get("faces") and r["status"] == "written"],
        "faces_not_checked": [r["file"] for r in records if r.get("faces_not_checked") and r["status"] == "written"],
        # comments, EXIF and other text segments taken out of compressed frames (pixels_text_segments)
        "text_segments_removed": [{"file": r["file"], "segments": r["text_segments_removed"]} for r in records
                                  if r.get("text_segments_removed") and r["status"] == "written"],
        "paths_holding_phi": [{"file": r["file"], "holds": r["path_holds_phi"]} for r in records if "path_holds_phi" in r],
        "options": {k: v for k, v in vars(options).items()},
        "seconds": round(seconds, 3),
        "files_per_second": round(len(by_status["written"]) / seconds, 2) if seconds > 0 else None,
    }
    return summary, uid_map, patient_map
