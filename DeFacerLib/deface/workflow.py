"""Deface one input path into one output path: read, deface, write, provenance, QA.

The CLI, the demo and the batch runner call this; it checks every output path before any
heavy work so that a refused output costs nothing, and it never leaves a partial output.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from DeFacerLib.deface.header_identity import without_identifying_header
from DeFacerLib.deface.pipeline import (
    FACE_FEATURES,
    DefaceParameters,
    Progress,
    _no_progress,
    deface_volume,
    find_features,
    masks_from_labels,
    nonzero_mask,
    protect_unlabelled_brain,
    require_face,
    segmentation_report,
)
from DeFacerLib.errors import FaceNotFound, GuaranteeError, InputError, OutputError, UsageError, require_extra

CENTRAL_FEATURES = FACE_FEATURES  # with a label map: without both of these, no output is written


def deface_file(
    input_path,
    output_path,
    *,
    parameters: DefaceParameters = DefaceParameters(),
    labels_path=None,
    protect_path=None,
    series_uid: str | None = None,
    modality: str | None = None,
    qa_dir=None,
    overwrite: bool = False,
    dicom_options=None,
    key_file=None,
    progress: Progress = _no_progress,
) -> dict:
    """Deface ``input_path`` into ``output_path`` (same format) and write the provenance record.

    A DICOM output is always a NEW, de-identified series: PS3.15 Basic profile unless
    ``dicom_options`` (a ``dicom.ProfileOptions``) says more, keyed UIDs from ``key_file``,
    and 113102 Clean Recognizable Visual Features recorded. Its provenance record and the
    audit trail go to ``OUTPUT.audit/`` (they name the input, which may carry PHI).
    ``modality`` (MR, CT or PT): the input's, stated; None: ``io.guess_modality``'s.
    """
    from DeFacerLib import provenance
    from DeFacerLib.io import read_volume
    from DeFacerLib.io.atomic import check_name_fits, check_output_path
    from DeFacerLib.io.modality import state_modality

    if not Path(input_path).exists():
        raise InputError(f"{input_path} does not exist")
    if dicom_options is not None and dicom_options.clean_pixel_data:
        # OCR over a head series finds "words" in the anatomy and blacks them out: the read-back
        # check then refused the series after minutes of work, blaming the DICOM writer (and
        # `defacer scrub --clean-pixel-data` of the defaced series blacks out the brain itself)
        raise UsageError("--clean-pixel-data (OCR of text burned into the pixels) is for `defacer scrub` of images "
                         "that are not head slices (ultrasound, screen captures): over a head series it blacks out "
                         "what it reads as words in the anatomy, the brain too; deface without it and look at the images")
    _check_outputs_before_work(input_path, output_path, labels_path, protect_path, qa_dir)
    check_output_path(input_path, output_path, overwrite)
    _check_data_file_before_work(input_path, output_path, overwrite)
    audit_dir = _audit_dir(input_path, output_path, overwrite)
    if audit_dir is not None:  # a DICOM input: its new series is keyed
        from DeFacerLib.dicom.uids import refuse_key_inside

        refuse_key_inside(key_file, input_path, output_path)
    sidecar = provenance.sidecar_path(output_path)
    check_name_fits(sidecar, "provenance file")
    if audit_dir is None and sidecar.exists() and not overwrite:
        raise OutputError(f"provenance file {sidecar} exists; pass --overwrite to replace it")
    if audit_dir is None and sidecar.is_dir():  # found after --overwrite had replaced the output, taking both
        raise OutputError(f"provenance file {sidecar} is a folder; move it away (--overwrite replaces files only)")
    if qa_dir is not None:
        require_extra("vtk", "qa", "--qa")
    progress("reading", 0.02)
    volume = read_volume(input_path, series_uid=series_uid)
    if modality is not None:
        state_modality(volume, modality)
    input_sha256 = _checksum_as_read(input_path)
    require_orientation(volume, input_path)
    protected = None
    if protect_path is not None:
        protected = nonzero_mask(read_volume(protect_path), volume, label_name=str(protect_path))
    masks, found, head, guard, brain_report = _features_of(volume, labels_path, Path(input_path).name, progress)
    result = deface_volume(
        volume,
        masks,
        parameters=parameters,
        protected=protected,
        guard=guard,
        head=head,
        landmarks=found.landmarks if found is not None else None,
        progress=lambda message, fraction: progress(message, 0.35 + 0.5 * fraction),
    )
    central = [name for name in CENTRAL_FEATURES if name in parameters.features]
    face_missing = bool(central) and all(name in result.features_missing for name in central)
    if not result.features_removed or face_missing:
        # Never hand back a "defaced" head with its face: without the eyes and the nose the
        # input is most likely defaced already, or not a head. A mouth or ears merely out of
        # view are skipped and reported instead.
        missing = ", ".join(result.features_missing)
        if labels_path is not None:  # the map says so, not the head: "already defaced?" misled
            raise FaceNotFound(f"{labels_path} labels none of {missing} (1 eyes, 2 nose, 3 mouth, 4 ears): is "
                               f"{Path(input_path).name} already defaced, or the map not made for it? nothing written")
        raise FaceNotFound(
            f"{Path(input_path).name}: the face was not found (missing: {missing}); is it already defaced, "
            "or not a head? nothing written"
        )
    # what the air value, the brain (PET: its uptake too) and QA's skin followed, and from what
    # evidence (io.modality): a PET read as MR keeps less of its brain, so the record says which
    result.report["modality"] = volume.modality
    result.report["modality_from"] = volume.source.extra.get("modality_from", "") if volume.source is not None else ""
    if found is not None:
        result.report["segmentation"] = segmentation_report(found)
    if brain_report is not None:  # a label map without a brain: what protected it
        result.report["brain_from_model"] = brain_report

    figure = None
    if qa_dir is not None:  # before the output is written: a picture that cannot be made or saved
        # leaves nothing, and an output --overwrite would replace stays as it was
        progress("rendering QA pictures", 0.8)
        from DeFacerLib.qa import render_before_after

        figure = write_qa_figure(render_before_after(volume, result.volume), qa_dir, Path(output_path).name)
    try:
        progress("writing", 0.85)
        defaced, result.report["header_removed"] = without_identifying_header(result.volume)
        hook = _dicom_hook(volume, dicom_options, key_file)

        def check_dicom(path: Path) -> None:  # before it is published: an earlier output stays if it fails
            progress("checking the written series", 0.9)
            verify_dicom_written(path, volume, defaced, name=Path(output_path).name)

        try:
            written = _write_output(
                defaced,
                input_path,
                output_path,
                overwrite=overwrite,
                description=provenance.short_description(result.features_removed),
                dicom_hook=hook,
                check=check_dicom if hook is not None else None,
            )
        except BaseException:
            _forget_new_key(hook)
            raise
        used = result.report.get("parameters", {})  # the engine's values, defaults resolved
        record = provenance.build_record(
            input_path=input_path,
            output_path=written,
            parameters={
                "features": list(parameters.features),
                **{name: used.get(name, chosen) for name, chosen in (
                    ("margin_mm", parameters.margin_mm), ("max_depth_mm", parameters.max_depth_mm),
                    ("protect_margin_mm", parameters.protect_margin_mm), ("whole_face", parameters.whole_face),
                    ("seal_mm", parameters.seal_mm), ("shield", parameters.shield))},
                "features_from": "face model" if labels_path is None else Path(labels_path).name,
                "protect_from": None if protect_path is None else Path(protect_path).name,
            },
            report=result.report,
            input_sha256=input_sha256,
        )
        if audit_dir is None:  # the sidecar travels with the output: nothing of where the input or the
            # output lay (folders may name a patient, a site or a user; dcm2niix names files by the
            # folder, protocol and acquisition time) but the output's own name; the input is its checksum
            record["output"]["path"] = Path(written).name
            del record["input"]["name"]
        try:
            if hook is not None:
                record["dicom"] = {"key_file": str(hook.key_path), "audit": hook.write_audit(audit_dir),
                                   # the folder's other files (notes, a DICOMDIR, other series): not copied
                                   "files_not_copied": list(volume.source.extra.get("skipped_files", []))}
            sidecar = provenance.write_sidecar(record, written, overwrite=overwrite, path=audit_dir and audit_dir / "defacer.json")
        except BaseException:
            _unpublish(written, audit_dir, hook)
            raise

        outcome = {
            "input": str(input_path),
            "output": str(written),
            "sidecar": str(sidecar),
            "features_removed": result.features_removed,
            "features_missing": result.features_missing,
            "report": result.report,
        }
        if hook is not None:
            from DeFacerLib.dicom.uids import key_readable_by_others

            outcome["files_not_copied"] = len(record["dicom"]["files_not_copied"])
            outcome.update(key_file=str(hook.key_path), key_created=hook.key_created,
                           key_readable_by_others=key_readable_by_others(hook.key_path),
                           burned_in_annotation=hook.burned_in_annotation)
    except BaseException:  # all that was asked for, or nothing
        if figure is not None:
            _remove(figure)
        raise
    if figure is not None:
        outcome["qa_figure"] = str(figure)
    progress("done", 1.0)
    return outcome


def verify_dicom_written(written, original, defaced, name: str | None = None) -> None:
    """Read the written DICOM output back (``name``: what it is published as): every voxel the
    defacing kept (the brain among them) must come back exactly as it was read. The DICOM
    writers are this project's own code (byte order, per-file rescaling, frames); an Explicit VR
    Big Endian series once came back with 11.3 M of 11.5 M voxels byte-swapped behind exit 0.
    A writer fault is refused, not shipped."""
    from DeFacerLib.io import read_volume

    name = name or Path(written).name
    back = read_volume(written)
    kept = np.asarray(defaced.array) == np.asarray(original.array)
    if back.array.shape != original.array.shape:
        raise GuaranteeError(f"{name} reads back with shape {back.array.shape}, not "
                             f"{original.array.shape}: not published (a fault of DeFacer's DICOM writer; please report it)")
    differ = int(np.count_nonzero(back.array[kept] != np.asarray(original.array)[kept]))
    if differ:
        raise GuaranteeError(f"{name} reads back with {differ:,} of the voxels the defacing kept changed: "
                             "not published (a fault of DeFacer's DICOM writer; please report it)")


def require_orientation(volume, input_path) -> None:
    """Refuse a head without an orientation: "in front of the eyes", "above them" and the brain
    guard are taken along axes it does not have (IXI132 with both codes set to 0: 258 brain voxels
    cut, exit 0; IXI162 189, IXI206 87, IXI335 1061)."""
    from DeFacerLib.io import has_no_orientation

    if has_no_orientation(volume):
        raise InputError(f"{input_path} has no orientation in its header (qform_code and sform_code are both 0), so "
                         "where the face is cannot be known; set its orientation (e.g. fslorient -setqformcode 1, "
                         "or nibabel's set_qform/set_sform with code 1) and deface the fixed file; nothing written")


def _checksum_as_read(input_path) -> str:
    """The input's checksum, just after it was read: the provenance names what was defaced. Taken
    after the work, an input deleted meanwhile (a data manager's cleanup, a cron job) was an
    internal error with the output published and no sidecar; one replaced was recorded as the new."""
    from DeFacerLib import provenance
    from DeFacerLib.io.atomic import os_error_reason

    try:
        return provenance.sha256_of(input_path)
    except OSError as error:
        raise InputError(f"cannot read {input_path} again ({os_error_reason(error)}): was it moved or changed while "
                         "it was read? nothing written") from None


def _write_output(volume, input_path, output_path, **options) -> Path:
    """write_volume, but an enhanced (multi-frame) DICOM file read from a folder goes into a folder
    unless the output names a file (.dcm): DICOM in gives DICOM out, a folder for a folder, the
    file's name kept, as a classic series' folder keeps its files' names."""
    from DeFacerLib.io import formats, write_volume
    from DeFacerLib.io.atomic import atomic_path

    output = Path(output_path)
    names_a_file = formats.format_from_extension(output.name) is not None or output.suffix.lower() in formats.DICOM_EXTENSIONS
    if volume.source.format != formats.DICOM_ENHANCED or not Path(input_path).is_dir() or names_a_file:
        return write_volume(volume, output, **options)
    with atomic_path(output, directory=True, replace=options.get("overwrite", False)) as folder:
        write_volume(volume, folder / Path(volume.source.path).name, **options)
    return output


def _check_data_file_before_work(input_path, output_path, overwrite: bool) -> None:
    """A detached output's data file (io.detached), refused before the work as write_volume
    would after it: as compressed as the input's, so named as it will be."""
    from DeFacerLib.io import formats
    from DeFacerLib.io.detached import check_data_file, is_detached
    from DeFacerLib.io.itk_formats import file_is_compressed

    fmt = formats.detect_format(input_path)
    if is_detached(output_path) and fmt in (formats.NRRD, formats.METAIMAGE):
        check_data_file(input_path, output_path, fmt, file_is_compressed(Path(input_path)), overwrite)


def _check_outputs_before_work(input_path, output_path, labels_path, protect_path, qa_dir) -> None:
    """Refuse, before the defacing, an output that is another input (with --overwrite it
    replaced the label map), an output whose name does not fit the input's format (found after
    the run, it cost the whole run) and a QA folder that cannot be made (found after the
    output was written, an internal error)."""
    from DeFacerLib.io import formats
    from DeFacerLib.io.atomic import check_name_fits, check_output_folder, is_within

    check_name_fits(output_path, "output")
    for option, given in (("--features-from", labels_path), ("--protect-from", protect_path)):
        if given is not None and is_within(given, output_path):
            raise OutputError(f"output {output_path} is the {option} input {given}; choose another path "
                              "(inputs are never modified)")
    fmt = formats.detect_format(input_path)
    if fmt not in formats.DICOM_FORMATS:  # DICOM: a folder may hold one enhanced file, a file be one
        formats.check_output_format(fmt, output_path)  # 2D slice (refused on reading): known once read
    elif formats.format_from_extension(Path(output_path).name) is not None:  # refused after the model ran (6-8 s)
        raise OutputError(f"output {output_path} is named for another format; DICOM in gives DICOM out: give a folder "
                          "(a series) or a .dcm file (an enhanced file)")
    if qa_dir is not None:
        check_output_folder(qa_dir, "QA folder")
        check_name_fits(qa_figure_path(qa_dir, Path(output_path).name), "QA picture")  # it was found after the work
        for what, folder in (("the output", Path(output_path)), ("the input", Path(input_path))):
            # in the output it would ship the ORIGINAL face's render with the data to be shared
            if (folder.is_dir() or what == "the output") and is_within(qa_dir, folder):
                raise OutputError(f"QA folder {qa_dir} is inside {what} {folder.resolve().name}; choose a folder "
                                  "outside both (its picture shows the original face)")


def _features_of(volume, labels_path, input_name: str, progress: Progress):
    """(feature masks, FoundFeatures or None, head mask or None, guard or None, brain report or
    None): from the label map the user gave (without a brain label, the U-Net's brain protects
    it: protect_unlabelled_brain), else found by the U-Net (which refuses a volume with no
    face: require_face)."""
    from DeFacerLib.io import read_volume

    if labels_path is not None:
        masks = masks_from_labels(read_volume(labels_path), volume, label_name=str(labels_path))
        head, guard, brain_report = protect_unlabelled_brain(volume, masks, progress=lambda m, f: progress(m, 0.35 * f))
        return masks, None, head, guard, brain_report
    from DeFacerLib.deface import head_mask

    progress("finding the head", 0.05)
    head = head_mask(volume)
    found = find_features(volume, head=head, progress=lambda message, fraction: progress(message, 0.05 + 0.3 * fraction))
    require_face(found, input_name)
    return found.masks, found, head, found.guard, None


def _audit_dir(input_path, output_path, overwrite: bool) -> Path | None:
    """OUTPUT.audit/ for DICOM outputs (checked before any work), None for other formats."""
    from DeFacerLib.io.formats import DICOM_FORMATS, detect_format

    if detect_format(input_path) not in DICOM_FORMATS:
        return None
    from DeFacerLib.dicom.tree import default_audit_dir
    from DeFacerLib.io.atomic import check_name_fits

    audit = default_audit_dir(Path(output_path))
    check_name_fits(audit, "audit folder")
    if audit.exists() and not overwrite:
        raise OutputError(f"audit folder {audit} exists; pass --overwrite to replace it")
    if audit.exists() and not audit.is_dir():  # found after --overwrite had replaced the output, taking both
        raise OutputError(f"audit folder {audit} is a file; move it away (--overwrite replaces folders only)")
    return audit


def _dicom_hook(volume, dicom_options, key_file):
    """The de-identification applied to every DICOM file written, or None for other formats."""
    from DeFacerLib.io.formats import DICOM_FORMATS

    if volume.source is None or volume.source.format not in DICOM_FORMATS:
        return None
    from DeFacerLib.dicom import ProfileOptions, deidentify_dataset_hook, load_or_create_key
    from DeFacerLib.dicom.tree import says_burned_in

    key, key_path, created = load_or_create_key(key_file)
    header = volume.source.header or {}
    datasets = header.get("datasets") or ([header["dataset"]] if header.get("dataset") is not None else [])
    hook = deidentify_dataset_hook(dicom_options or ProfileOptions(), key, defaced=True, series_datasets=datasets)
    hook.key_path = key_path
    hook.key_created = created
    # the face is defaced, but text the source says is burned into its pixels stays there
    hook.burned_in_annotation = any(says_burned_in(ds) for ds in datasets)
    return hook


def _forget_new_key(hook) -> None:
    """A key made for a write that failed goes with it (dicom.uids.forget_new_key)."""
    if hook is not None:
        from DeFacerLib.dicom.uids import forget_new_key

        forget_new_key(hook.key_path, hook.key_created)


def write_qa_figure(views: tuple[dict, dict], qa_dir, name: str) -> Path:
    """The before/after renders (qa.render_before_after) as one PNG in ``qa_dir``, named for ``name``."""
    from DeFacerLib.qa import before_after_figure

    qa_dir = Path(qa_dir)
    try:
        qa_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # root passes the os.access check before the work on /proc, read-only mounts
        raise OutputError(f"cannot make the QA folder {qa_dir}: {error.strerror or error}; nothing written") from None
    figure = qa_figure_path(qa_dir, name)
    stem = figure.name.removesuffix(QA_FIGURE_SUFFIX)
    before_after_figure(*views, figure, title=f"{stem}: before (top) and after (bottom)")
    return figure


QA_FIGURE_SUFFIX = "_before_after.png"


def qa_figure_path(qa_dir, name: str) -> Path:
    """Where write_qa_figure puts the picture of the output ``name``: ``STEM_before_after.png``
    (split(".")[0] gave sub-01.run-1.nii.gz and sub-01.run-2.nii.gz one picture, the second
    replacing the first)."""
    from DeFacerLib.io.formats import volume_stem

    return Path(qa_dir) / f"{volume_stem(name)}{QA_FIGURE_SUFFIX}"


def take_back(outcome: dict) -> None:
    """Remove what deface_file published (its ``outcome``): the output and its provenance, e.g.
    when a step the caller asked for after it (the Slicer batch's screenshots) fails."""
    from DeFacerLib.dicom.tree import default_audit_dir

    sidecar = Path(outcome["sidecar"])
    # a DICOM output's audit folder (a series' folder, or an enhanced image written as one .dcm file)
    audit = sidecar.parent if sidecar.parent.resolve() == default_audit_dir(Path(outcome["output"])).resolve() else None
    _unpublish(outcome["output"], audit or sidecar, None)


def _unpublish(written, provenance_path, hook) -> None:
    """Take back a published output (a file, a detached header with its data file, or a DICOM
    folder) and its provenance (the sidecar, or the DICOM output's audit folder), and forget a
    key made for it."""
    from DeFacerLib.io.detached import data_files_of, is_detached

    if is_detached(written) and Path(written).is_file():  # its data file, as it names it
        for data in data_files_of(Path(written)):
            _remove(data)
    _remove(written)
    if provenance_path is not None:
        _remove(provenance_path)
    _forget_new_key(hook)


def _remove(path) -> None:
    import shutil

    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
