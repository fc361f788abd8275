"""What a user must act on before sharing an output, from each command's result: PHI in a
path, text burned into pixels, a face still found, identifying table columns, a cosmetic photo
method, an image written unchanged because no face was found in it, files left out.

One wording for every front end: the CLI prints them as `defacer: warning:` lines on stderr
(under -q too), the Slicer module shows them under its result.
"""
from __future__ import annotations

COSMETIC = "cosmetic: not de-identifying"


def burned_in(names: list[str]) -> str:
    """Written DICOM files that say their pixels carry text (scrub and batch)."""
    return (f"{len(names)} written file(s) say their pixels carry burned-in text (Burned In Annotation YES; first: "
            f"{names[0]}); headers only were scrubbed: check those images before sharing, and rerun with "
            "--clean-pixel-data only those that are not head slices (its OCR blacks out what it reads as words in "
            "the anatomy)")


def not_ocr_cleaned(names: list[str]) -> str:
    """Written DICOM files whose pixels --clean-pixel-data left (scrub and batch)."""
    return (f"{len(names)} primary or defaced CT/MR/PET/NM image(s) were not OCR-cleaned, their pixels as they were "
            f"(first: {names[0]}): OCR reads words into anatomy and blacks them out, and they do not say Burned In "
            "Annotation YES; look at them if they may show text")


def key_readable(result: dict) -> list[str]:
    """A key file others can read (scrub, batch, DICOM deface: dicom.uids.key_readable_by_others)."""
    if not result.get("key_readable_by_others"):
        return []
    return [f"the key file {result['key_file']} can be read by other users of this machine; whoever reads it can "
            "undo the pseudonyms and date shifts: chmod 600 it"]


def for_scrub(summary: dict) -> list[str]:
    """A scrubbed tree (dicom.scrub_tree's summary)."""
    lines = key_readable(summary)
    lines += [f"{entry['file']} has the same SOP Instance UID as {entry['same_sop_instance_uid_as']}"
              for entry in summary["duplicate_sop_instance_uids"][:10]]
    lines += [f"{' and '.join(files)} name one Patient ID with different Issuers of Patient ID: they got one pseudonym "
              "and one date offset, as one patient; if they are different patients, scrub each issuer's files with "
              "its own --key-file" for files in summary.get("patient_ids_from_several_issuers", [])[:10]]
    if summary.get("burned_in_annotation"):
        lines.append(burned_in(summary["burned_in_annotation"]))
    if summary.get("pixels_not_cleaned"):
        lines.append(not_ocr_cleaned(summary["pixels_not_cleaned"]))
    in_paths = summary["paths_holding_phi"]
    if in_paths:
        lines.append(f"{len(in_paths)} output path(s) hold PHI of their own file (first: {in_paths[0]['file']} holds "
                     f"{in_paths[0]['holds']}); the tree is mirrored as it is: rename those folders or files before sharing")
    return lines


def for_batch(summary: dict) -> list[str]:
    """A batch's output (batch.run_batch's summary)."""
    lines = key_readable(summary)
    if summary.get("paths_holding_phi_count"):
        lines.append(f"{summary['paths_holding_phi_count']} DICOM file path(s) hold PHI of their own header (which, in "
                     f"{summary['audit_folder']}); the tree is mirrored as it is: rename them before sharing")
    if summary.get("burned_in_annotation"):
        lines.append(burned_in(summary["burned_in_annotation"]))
    if summary.get("pixels_not_cleaned"):
        lines.append(not_ocr_cleaned(summary["pixels_not_cleaned"]))
    if summary.get("bids_without_description"):
        lines.append("the input is laid out as BIDS (sub-*/anat/sub-*_*.nii.gz) but has no dataset_description.json: "
                     "it was read as a folder of volumes, so only the images were written (no JSON sidecars, no "
                     "participants.tsv); add the description, or rerun with --layout bids")
    photos = summary.get("photos_without_faces", [])
    if photos:
        lines.append(f"{len(photos)} BIDS photo(s) were published with no face found in them (first: {photos[0]}), "
                     "their pixels as they were, metadata removed: look at them before sharing (a face turned away or "
                     "under a cap may be missed)")
    lines += [f"{table['name']} was copied as it is, but its column(s) {', '.join(table['columns'])} may name or date "
              "a person: check them before sharing" for table in summary.get("identifying_columns", [])]
    if summary["qa_faces_found"]:
        lines.append(f"QA: a face was still found on {summary['qa_faces_found']} defaced output(s); see "
                     f"{summary['reports']['html']}")
    return lines


def for_deface(outcome: dict) -> list[str]:
    """A defaced volume (deface.workflow.deface_file's outcome)."""
    lines = key_readable(outcome)
    if outcome.get("burned_in_annotation"):
        # not `scrub --clean-pixel-data`: its OCR over the head's slices blacks out "words" in
        # the anatomy (104,235 voxels of the brain of a defaced Trio MPRAGE series, exit 0)
        lines.append(f"the input series says its pixels carry burned-in text (Burned In Annotation YES): only the face "
                     f"was removed from {outcome['output']}; look at its images before sharing (OCR cleaning, `defacer "
                     "scrub --clean-pixel-data`, blacks out what it reads as words in the anatomy, the brain too: keep "
                     "it for images that are not head slices, such as screen captures)")
    return lines


def for_qa(result: dict) -> list[str]:
    """Views that PASS by the threshold but still show a face (the qa command's result)."""
    return list(result["warnings"])


def for_photo(result: dict) -> list[str]:
    """Photos, a video or a camera run (photo.summarize's result with ``left_out``, or the
    camera's): a cosmetic method; images, DICOM photos (header too), videos and recordings
    written unchanged because no face was found in them (a missed face is published); files
    of the input folder left out."""
    outputs = result.get("outputs", [result])
    lines = []
    cosmetic = sorted({output["method"] for output in outputs if not output.get("de_identifying", True)})
    if cosmetic:
        lines.append(f"{', '.join(cosmetic)} ({COSMETIC}): faces stay recognisable to face recognition "
                     "(docs/photo.md); use --method fill or ksame with --region head to de-identify")
    unchanged = [output["input"] for output in outputs if output.get("kind") == "image" and not output["faces"]]
    if unchanged:
        lines.append(f"{len(unchanged)} image(s) had no face found and were written with their pixels unchanged "
                     f"(first: {unchanged[0]}): look at them before sharing")
    copied = [output["input"] for output in outputs if output.get("kind") == "dicom" and not output["faces"]]
    if copied:  # the file as it was: its header (name, birth date, IDs) too
        lines.append(f"{len(copied)} DICOM file(s) had no face found and were copied as they were, header included "
                     f"(first: {copied[0]}): look at them, and scrub their headers with `defacer scrub`, before sharing")
    videos = [output["input"] for output in outputs if output.get("kind") == "video" and not output["faces"]]
    if videos:
        lines.append(f"{len(videos)} video(s) had no face found in any frame and were written with their frames "
                     f"unchanged (first: {videos[0]}): look at them before sharing")
    if "camera" in result and result.get("output") and not result["faces"]:
        lines.append(f"no face was found in any frame of the recording {result['output']}: its frames are unchanged; "
                     "look at it before sharing")
    left_out = result.get("left_out", [])
    if left_out:
        lines.append(f"left out, not photos this command reads from a folder: {', '.join(left_out[:10])}"
                     + (f" and {len(left_out) - 10} more" if len(left_out) > 10 else "") + " (give a video as its own INPUT)")
    return lines
