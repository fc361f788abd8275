"""What a batch run has to do: every input file becomes part of exactly one item.

An item is the unit of work, of the manifest and of a Dask task: one volume file to
deface, one DICOM series (grouped by SeriesInstanceUID wherever its files lie), one file
to copy or whose JSON to scrub, or one file skipped with its reason. The listing and the
grouping rules live here; the DICOM headers are read by ``scan_dicom_headers``, which the
runner maps over the cluster in chunks (a PACS export has hundreds of thousands of files).
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from DeFacerLib.batch import bids
from DeFacerLib.errors import OutputError
from DeFacerLib.io.detached import header_data_names, is_detached, possible_data_files, read_header_text
from DeFacerLib.io.formats import DICOM_EXTENSIONS, has_dicom_magic
from DeFacerLib.io.walk import walk_folders
from DeFacerLib.io.modality import (
    BIDS_ANAT_IMAGE_SUFFIXES, BIDS_FIELDMAP_MAGNITUDE_SUFFIXES, BIDS_QUANTITATIVE_SUFFIXES,
)
from DeFacerLib.provenance import hash_file_into

BIDS = "bids"
DICOM = "dicom"
VOLUMES = "volumes"
LAYOUTS = (BIDS, DICOM, VOLUMES)

# Item kinds: what the worker does with it.
DEFACE_VOLUME = "volume"          # a NIfTI/MGZ/NRRD/MetaImage head: deface_file
FACE_CHECK = "volume, if a face"  # BIDS: any other 3D volume: defaced, copied only if it has no skin, or failed
DICOM_SERIES = "dicom-series"     # one series: deface (head volume) or scrub only, always scrubbed
DICOM_FILE = "dicom-file"         # a file whose header could not be grouped: scrub_file decides
COPY = "copy"                     # BIDS metadata and other files: copied unchanged
SIDECAR = "sidecar"               # BIDS JSON sidecar: PHI fields removed
DATED_TABLE = "dated table"       # BIDS scans/sessions table: acq_time under the dates policy
DESCRIPTION = "description"       # BIDS dataset_description.json: GeneratedBy added
PHOTO = "photo"                   # BIDS photo of the head (eeg/, meg/: *_photo.jpg): faces filled, pixels only
SKIP = "skip"                     # nothing written, reason recorded
MISSING = "missing"               # a broken link: nothing to read, the item fails (its file is not lost silently)

WRITABLE_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh", ".nrrd", ".mha")
DETACHED_VOLUME_SUFFIXES = (".nhdr", ".mhd")
# BIDS images that show the face: anatomical MRI, PET and CT, at the dataset's top level: every
# non-parametric anat suffix (BIDS_ANAT_IMAGE_SUFFIXES), and the quantitative maps, which show the
# head's surface as well (BIDS_QUANTITATIVE_SUFFIXES); both name MR images (io.modality).
# Segmentations are copied: label maps and masks of the brain hold no skin (a whole-head
# segmentation would: see docs/batch.md).
BIDS_SEGMENTATION_SUFFIXES = ("dseg", "mask", "probseg", "defacemask")
# EPI-type series (functional, diffusion, field maps, perfusion) are copied, 3D or 4D: their faces
# are low-resolution and distorted; docs/batch.md says so. But for a GRE field map's magnitude
# images (BIDS_FIELDMAP_MAGNITUDE_SUFFIXES), which are not EPI: at 3 x 3 x 3.5 mm, whole or in
# a 140 mm slab, YuNet and dlib find the face on every IXI head made into one
# (scripts/evaluate_fieldmap_like.py), so they go through the face check.
BIDS_EPI_FOLDERS = ("func", "dwi", "fmap", "perf")
BIDS_FACE_IMAGE = re.compile(
    r"^sub-[^/]+/(ses-[^/]+/)?("
    rf"anat/[^/]+_({'|'.join(BIDS_ANAT_IMAGE_SUFFIXES)})"
    r"|pet/[^/]+_pet"
    r"|ct/[^/]+"
    r"|anat/[^/]+_ct"
    r")\.nii(\.gz)?$"
)
# BIDS's photos of the electrodes, coils or landmarks on the head (eeg/, meg/, ieeg/, nirs/), which
# show the participant's face as often as not; other pictures (stimuli/, figures) are copied
BIDS_PHOTO = re.compile(r"_photo\.(jpe?g|png|tiff?)$", re.IGNORECASE)
DICOM_HEADER_TAGS = ("SeriesInstanceUID", "Modality", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel")
MANIFEST_FOLDER = ".defacer"


@dataclass(frozen=True)
class Item:
    """One unit of work. ``files`` are input paths relative to the input root, sorted (a detached
    header first, then its data files)."""

    id: str
    kind: str
    name: str                       # what reports show (never a UID or other header value)
    files: tuple[str, ...]
    series_uid: str | None = None   # DICOM series only; kept out of the manifest and reports
    reason: str = ""                # SKIP only


@dataclass
class Plan:
    layout: str
    root: Path
    items: list[Item] = field(default_factory=list)

    @property
    def file_count(self) -> int:
        return sum(len(item.files) for item in self.items)


def list_files(root: Path, avoid: tuple = ()) -> list[str]:
    """Every regular file under ``root`` (relative, POSIX, sorted), hidden folders of DeFacer excluded.

    Symlinked folders are followed (a dataset assembled from links must not lose subjects
    silently), but not into a folder that holds them, so a link loop ends, and a folder that
    cannot be read is an InputError (io.walk.walk_folders, as scrub walks); a second link to a
    folder listed already (sub-02 -> sub-01) is listed again, as the dataset shows it (it was
    dropped without a word, a subject lost). A link that reaches a folder of
    ``avoid`` (the output, the audit folder) is refused: the outputs were read as inputs and each
    rerun nested a copy of the output in itself; the audit's mappings would be published.
    """
    if root.is_file():
        return [root.name]
    found = []
    avoid = [os.path.realpath(folder) for folder in avoid]
    for folder, dirs, names in walk_folders(root):
        real = os.path.realpath(folder)
        reached = next((place for place in avoid if real == place or real.startswith(os.path.join(place, ""))), None)
        if reached is not None:
            raise OutputError(f"the input {root} reaches {reached} through a link ({Path(folder).relative_to(root)}); "
                              "remove the link or choose an output and audit folder outside what it reaches")
        dirs[:] = [d for d in dirs if d != MANIFEST_FOLDER]
        base = Path(folder).relative_to(root)
        for name in names:
            path = Path(folder) / name
            if path.is_file() or (path.is_symlink() and not path.exists()):  # a broken link is listed, to fail
                found.append((base / name).as_posix())
    return found


def looks_like_bids(root: Path, files: list[str]) -> bool:
    """Laid out as BIDS (a head image BIDS_FACE_IMAGE names: sub-XX/[ses-YY/]anat/sub-XX_T1w.nii.gz)
    but without the dataset_description.json that makes the layout BIDS: most likely a dataset
    whose description was not copied."""
    return not (root / "dataset_description.json").is_file() and any(BIDS_FACE_IMAGE.match(rel) for rel in files)


def detect_layout(root: Path, files: list[str]) -> str:
    if root.is_dir() and (root / "dataset_description.json").is_file():
        return BIDS
    if any(_looks_dicom(root / rel) for rel in files if not _volume_suffix(rel)):
        return DICOM
    return VOLUMES


def _volume_suffix(rel: str) -> str | None:
    lowered = rel.lower()
    for suffix in WRITABLE_VOLUME_SUFFIXES + DETACHED_VOLUME_SUFFIXES:
        if lowered.endswith(suffix):
            return suffix
    return None


def detached_data_files(root: Path, header_rel: str, files: list[str]) -> list[str]:
    """The files of ``files`` that hold the voxels of the detached NRRD/MetaImage header
    ``header_rel`` (io.detached reads its data file line): defaced with it, they must not also be
    copied as ordinary files. The line names one file (a Windows '\\' or an absolute path inside
    ``root`` too), a numbered pattern or a LIST of the lines after it; where none of them is in
    ``files`` or the header cannot be read, every file beside it with its stem counts (volumes,
    which are defaced, and JSON sidecars, which hold no voxels, aside)."""
    header = PurePosixPath(header_rel)
    names = header_data_names(read_header_text(root / header_rel))
    if names is None:  # the voxels follow the header in its own file
        return []
    listed = set(files)
    found = [rel for rel in (_data_file_rel(root, header, name) for name in names) if rel in listed]
    if found:
        return found
    stem = header.name[: -len(_volume_suffix(header_rel))]
    return [rel for rel in files if PurePosixPath(rel).parent == header.parent and PurePosixPath(rel).name.startswith(stem + ".")
            and _volume_suffix(rel) is None and not rel.lower().endswith(".json")]


def with_detached_data_outputs(rels) -> list[str]:
    """``rels`` and, for each detached header among them, the data files its output may have
    (io.detached.possible_data_files): mirrored outputs are named after their inputs, but a
    header's data file after the header, whatever the input's was called."""
    extra = [data.as_posix() for rel in rels if is_detached(rel) for data in possible_data_files(PurePosixPath(rel))]
    return list(rels) + [rel for rel in extra if rel not in rels]


def _data_file_rel(root: Path, header: PurePosixPath, name: str) -> str | None:
    """``name``, from a header's data file line, relative to ``root`` (None when outside it)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:/", name):
        try:
            return Path(name).resolve().relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            return None
    return posixpath.normpath((header.parent / name).as_posix())


# An unfetched file of a git-annex dataset in an unlocked clone (or on a file system without links,
# where git writes a link as a small file holding its target) or of a Git LFS repository is a small
# text file in the image's place; copied as data, it was published as the dataset's recording.
MAX_POINTER_BYTES = 8192
_POINTERS = ((re.compile(rb"^/annex/objects/|^(\.\./)*\.git/annex/objects/"), "git-annex"),
             (re.compile(rb"^version https://git-lfs\.github\.com/spec/v1\n"), "Git LFS"))


def unfetched_pointer(path: Path) -> str:
    """Which tool's pointer to content never fetched ``path`` is ("git-annex", "Git LFS"), or ''."""
    try:
        if path.stat().st_size > MAX_POINTER_BYTES:
            return ""
        with open(path, "rb") as stream:
            head = stream.read(64)
    except OSError:
        return ""
    return next((tool for pattern, tool in _POINTERS if pattern.match(head)), "")


def _looks_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS or has_dicom_magic(path)


def classify(root: Path, files: list[str], layout: str) -> tuple[list[Item], list[str]]:
    """Items for every file that needs no header read, and the files whose DICOM header decides."""
    items: list[Item] = []
    dicom_candidates: list[str] = []
    detached_data = {data: rel for rel in files if _volume_suffix(rel) in DETACHED_VOLUME_SUFFIXES
                     for data in detached_data_files(root, rel, files)}
    data_of: dict[str, list[str]] = {}  # a detached header's voxels, defaced with it (one header each)
    for data, header in detached_data.items():
        data_of.setdefault(header, []).append(data)
    for rel in files:
        suffix = _volume_suffix(rel)
        hidden = hidden_folder(rel)
        if hidden:
            items.append(Item(rel, SKIP, rel, (rel,), reason=f"in the hidden folder {hidden}/ (version control or "
                                                              "converter state, which may hold the original files): not copied"))
        elif (root / rel).is_symlink() and not (root / rel).exists():
            items.append(Item(rel, MISSING, rel, (rel,), reason="a broken link: its target is missing (git-annex or "
                                                                 "DataLad content not fetched?); fetch it and rerun"))
        elif pointer := unfetched_pointer(root / rel):
            items.append(Item(rel, MISSING, rel, (rel,), reason=f"a {pointer} pointer file, not its content (never "
                                                                 "fetched?); fetch it and rerun"))
        elif suffix in DETACHED_VOLUME_SUFFIXES and layout == BIDS:
            items.append(Item(rel, SKIP, rel, (rel,), reason="a detached-header volume, which BIDS does not hold: not "
                                                              "copied (convert it to .nii.gz, or deface it with `defacer "
                                                              "deface`)"))
        elif rel in detached_data and layout == BIDS:
            items.append(Item(rel, SKIP, rel, (rel,), reason=f"the voxel data of {detached_data[rel]}, a detached-header "
                                                              "volume, which BIDS does not hold: not copied"))
        elif rel in detached_data:
            continue  # in its header's item
        elif suffix in DETACHED_VOLUME_SUFFIXES:  # the header first, then its voxels
            items.append(Item(rel, DEFACE_VOLUME, rel, (rel, *sorted(data_of.get(rel, ())))))
        elif suffix is not None:
            if layout != BIDS or BIDS_FACE_IMAGE.match(rel):
                items.append(Item(rel, DEFACE_VOLUME, rel, (rel,)))
            else:
                items.append(Item(rel, bids_volume_kind(rel), rel, (rel,)))
        elif layout == BIDS and rel == "dataset_description.json":
            items.append(Item(rel, DESCRIPTION, rel, (rel,)))
        elif layout == BIDS and BIDS_PHOTO.search(rel):
            items.append(Item(rel, PHOTO, rel, (rel,)))
        elif layout == BIDS and rel.lower().endswith(".json"):
            items.append(Item(rel, SIDECAR, rel, (rel,)))
        elif layout == BIDS and bids.DATED_TABLE.search(rel):
            items.append(Item(rel, DATED_TABLE, rel, (rel,)))
        elif layout == BIDS and not _looks_dicom(root / rel):
            items.append(Item(rel, COPY, rel, (rel,)))
        elif layout == VOLUMES:
            items.append(Item(rel, SKIP, rel, (rel,), reason="not a volume DeFacer reads"))
        else:  # DICOM tree (any file), or a DICOM file inside a BIDS dataset (sourcedata/)
            dicom_candidates.append(rel)
    return items, dicom_candidates


def bids_volume_kind(rel: str) -> str:
    """COPY or FACE_CHECK for a BIDS volume the anatomical rule (BIDS_FACE_IMAGE) does not deface.

    Quantitative maps, derivatives/ (fmriprep's desc-preproc_T1w keeps the face), sourcedata/ and
    any other volume may show a face: the worker tries to deface it and copies it only when it
    proves to have no skin (tasks._face_check). Segmentations and EPI-type series are copied."""
    parts = rel.split("/")
    if any(part in BIDS_EPI_FOLDERS for part in parts[:-1]) and bids_suffix(rel) not in BIDS_FIELDMAP_MAGNITUDE_SUFFIXES:
        return COPY
    if bids_suffix(rel) in BIDS_SEGMENTATION_SUFFIXES:
        return COPY
    return FACE_CHECK


def bids_suffix(rel: str) -> str:
    """The BIDS suffix of a file name ("T1w" for sub-01_desc-preproc_T1w.nii.gz), or ''."""
    name = rel.rsplit("/", 1)[-1]
    stem = name[: -len(_volume_suffix(name) or "")] if _volume_suffix(name) else name.split(".", 1)[0]
    return stem.rsplit("_", 1)[-1] if "_" in stem else ""


def looks_anatomical(rel: str) -> bool:
    """Named as an anatomical image, a quantitative map or a field map's magnitude image (any
    entities, anywhere in the tree): an image of the whole head."""
    return bids_suffix(rel) in BIDS_ANAT_IMAGE_SUFFIXES + BIDS_QUANTITATIVE_SUFFIXES + BIDS_FIELDMAP_MAGNITUDE_SUFFIXES


def hidden_folder(rel: str) -> str:
    """The first hidden folder on a relative path ('.git', '.datalad', '.heudiconv'), or ''.

    Such folders are never published: git and git-annex objects are the original, un-defaced
    files, and converter folders (.heudiconv) hold DICOM header dumps with names."""
    for part in rel.split("/")[:-1]:
        if part.startswith("."):
            return part
    return ""


def scan_dicom_headers(root: str, rels: list[str]) -> list[tuple[str, dict | None]]:
    """(rel, header fields or None) for each file; None: no SeriesInstanceUID could be read.

    Runs on a worker: only the few tags the grouping needs are parsed, pixels never.
    """
    import pydicom

    out = []
    for rel in rels:
        try:
            with warnings.catch_warnings():  # pydicom's notes on invalid values ("1?" as IS): not the console's
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(Path(root) / rel, stop_before_pixels=True, specific_tags=list(DICOM_HEADER_TAGS))
                uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        except Exception:
            uid = ""
        if not uid:
            out.append((rel, None))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append((rel, {
                "series_uid": uid,
                "modality": str(ds.get("Modality", "") or ""),
                "rows": _as_int(ds.get("Rows"), 0),
                "columns": _as_int(ds.get("Columns"), 0),
                "frames": _as_int(ds.get("NumberOfFrames"), 1),
                "samples": _as_int(ds.get("SamplesPerPixel"), 1),
            }))
    return out


def _as_int(value, default: int) -> int:
    """A count from the header, or ``default`` when it is missing or invalid (an IS of "1?", two
    values): the file stays in its series, whose reading decides, rather than stopping the run."""
    try:
        return int(value) or default
    except (TypeError, ValueError):
        return default


def group_dicom(scanned: list[tuple[str, dict | None]], key: bytes) -> tuple[list[Item], dict[str, dict]]:
    """Series items (one per SeriesInstanceUID, wherever the files lie) and single-file items.

    Returns the items and, per series item id, the headers of its first file (what the
    worker uses to decide between defacing and scrubbing only).
    """
    from DeFacerLib.dicom import keyed_uid

    series: dict[str, list[str]] = {}
    first_header: dict[str, dict] = {}
    items: list[Item] = []
    for rel, header in scanned:
        if header is None:
            items.append(Item(rel, DICOM_FILE, rel, (rel,)))
            continue
        series.setdefault(header["series_uid"], []).append(rel)
        first_header.setdefault(header["series_uid"], header)
    info: dict[str, dict] = {}
    for uid, rels in series.items():
        rels = sorted(rels)
        token = keyed_uid(key, uid, namespace="batch-item")[5:21]
        item_id = f"series-{token}"
        folders = sorted({str(Path(rel).parent) for rel in rels})
        where = folders[0] if len(folders) == 1 else f"{folders[0]} (+{len(folders) - 1} folders)"
        name = f"{where} [series {token[:8]}, {len(rels)} files]"
        items.append(Item(item_id, DICOM_SERIES, name, tuple(rels), series_uid=uid))
        info[item_id] = dict(first_header[uid], files=len(rels))
    return items, info


def fingerprint(root: Path, rels: tuple[str, ...]) -> str:
    """Cheap change detector (size and mtime of each file): a rerun redoes an item whose inputs changed."""
    digest = hashlib.sha256()
    for rel in rels:
        try:
            stat = (root / rel).stat()
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            digest.update(f"{rel}\0missing\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def sha256_files(root: Path, rels) -> str:
    """SHA-256 of one file's contents (what sha256sum and the provenance record give for it:
    the reports' checksum of a one-file item must verify that file), or over several files'
    relative names and contents, in the given order."""
    rels = list(rels)
    digest = hashlib.sha256()
    for rel in rels:
        if len(rels) > 1:
            digest.update(str(rel).encode("utf-8", "surrogateescape") + b"\0")
        hash_file_into(digest, root / rel)
    return digest.hexdigest()
