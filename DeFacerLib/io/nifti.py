"""NIfTI (.nii, .nii.gz; NIfTI-1 and -2, 3D and 4D) and FreeSurfer MGH/MGZ, through nibabel.

Write-back is byte-exact: the reader keeps the file's raw header bytes (NIfTI: everything
before the voxel data, extensions included; MGH: the 284-byte header and the footer with
TR/flip/TE/TI/FoV and tags) and the writer emits them unchanged, patching only the fields
whose value really changed (shape, dtype, scaling, geometry, ``descrip``). nibabel's own
writer is not used for write-back because it resets ``scl_slope``/``vox_offset`` and may
rescale integer data.
"""
from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import math
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.freesurfer import mghformat

from DeFacerLib.errors import InputError, OutputError
from DeFacerLib.io.formats import MGZ, NIFTI
from DeFacerLib.volume import LPS_FROM_RAS, SourceInfo, Volume

GZIP_LEVEL = 1  # nibabel's default: fast, and the output is not meant to be smaller than the input
MGH_HEADER_BYTES = 284
MGH_DTYPES = {0: np.dtype(">u1"), 1: np.dtype(">i4"), 3: np.dtype(">f4"), 4: np.dtype(">i2")}
DESCRIP_BYTES = 80


# ---- shared helpers ---------------------------------------------------------------------
def read_file_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when its name says so; InputError when unreadable."""
    try:
        raw = path.read_bytes()
    except MemoryError:
        raise _too_large(path) from None
    except OSError as error:  # permission denied, an I/O error: not a corrupt file to re-export
        raise InputError(f"{path} cannot be read ({error.strerror or error})") from None
    try:
        if path.name.lower().endswith((".gz", ".mgz")):
            raw = gzip.decompress(raw)
    except MemoryError:
        raise _too_large(path) from None
    except EOFError:
        raise InputError(f"{path} is truncated (the compressed stream ends early); re-export or re-copy it") from None
    except (OSError, zlib.error) as error:
        raise InputError(f"{path} is corrupt or not gzip-compressed ({error}); re-export or re-copy it") from None
    return raw


def _too_large(path: Path) -> InputError:
    """Out of memory is not a corrupt file: say what it is, and how big the file is."""
    size_mb = path.stat().st_size / 1e6
    return InputError(f"{path} ({size_mb:,.0f} MB on disk) is too large to read in the memory available; "
                      "free memory or use a machine with more")


def write_file_bytes(target: Path, chunks, compress: bool) -> None:
    """Write chunks, gzipped when asked; the gzip header carries no name and no time."""
    with open(target, "wb") as handle:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=GZIP_LEVEL, mtime=0) as gz:
                for chunk in chunks:
                    gz.write(chunk)
        else:
            for chunk in chunks:
                handle.write(chunk)


def geometry_from_ras_affine(affine_ras: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing_mm, origin_mm, direction) in LPS from a nibabel RAS affine."""
    with np.errstate(all="ignore"):  # an inf pixdim: the check below says it in one line
        affine_lps = LPS_FROM_RAS @ np.asarray(affine_ras, dtype=float)
    linear = affine_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if not np.all(np.isfinite(affine_lps)) or np.any(spacing <= 0):
        raise InputError(f"{path} has an invalid voxel-to-world matrix (zero or non-finite voxel size)")
    return spacing, affine_lps[:3, 3].copy(), linear / spacing[None, :]


def check_3d(shape: tuple[int, ...], path: Path) -> None:
    dims = tuple(int(n) for n in shape)
    if not dims or min(dims) < 1:  # a dim of 0 or below (a 4th of 0 gave an internal error)
        raise InputError(f"{path} has a header with an empty or negative dimension (shape {dims}); it is corrupt")
    if len(shape) < 3 or any(int(n) <= 1 for n in shape[:3]):
        raise InputError(f"{path} is 2D (shape {tuple(int(n) for n in shape)}), DeFacer needs a 3D head volume")
    if len(shape) > 4:
        raise InputError(f"{path} has {len(shape)} dimensions {tuple(shape)}; DeFacer reads 3D or 4D volumes")


def native(array: np.ndarray) -> np.ndarray:
    """An owned, native-byte-order copy (memory maps and big-endian proxies let go)."""
    return np.array(array, dtype=array.dtype.newbyteorder("="), copy=True)


# ---- NIfTI ------------------------------------------------------------------------------
GZIP_MAGIC = b"\x1f\x8b"


def _nifti_class(raw: bytes, path: Path):
    if raw[:2] == GZIP_MAGIC and not path.name.lower().endswith(".gz"):  # read_file_bytes gunzips .gz names
        raise InputError(f"{path} is gzip-compressed but not named .nii.gz; rename it to end in .nii.gz")
    if len(raw) < 348:
        raise InputError(f"{path} is too short to be a NIfTI file ({len(raw)} bytes); it is truncated or not NIfTI")
    for endian in "<>":
        size = struct.unpack(endian + "i", raw[:4])[0]
        if size == 348:
            return nib.Nifti1Image
        if size == 540:
            return nib.Nifti2Image
    raise InputError(f"{path} is not a NIfTI file (header size field is not 348 or 540)")


def read_nifti(path: Path) -> Volume:
    raw = read_file_bytes(path)
    klass = _nifti_class(raw, path)
    try:
        with _quiet_nibabel(), np.errstate(all="ignore"):  # nibabel's affine of an inf pixdim warns
            img = klass.from_bytes(raw)
        shape = img.shape
        check_3d(shape, path)
        _check_data_size(img, max(0, len(raw) - int(img.dataobj.offset)), path)
        data = img.dataobj.get_unscaled()
    except InputError:
        raise
    except MemoryError:
        raise _too_large(path) from None
    except Exception as error:  # nibabel raises many types for bad headers and short data
        raise InputError(f"{path} cannot be read as NIfTI ({_first_line(error)}); the file is corrupt or truncated") from None
    if data.dtype.fields is not None or np.iscomplexobj(data):
        raise InputError(f"{path} holds {data.dtype} voxels (colour or complex); DeFacer needs scalar values")
    offset = int(img.dataobj.offset)
    header = klass.header_class(raw[: klass.header_class.sizeof_hdr], check=False)
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    voxel_mm = np.asarray(header["pixdim"][1:4], dtype=float)
    if sform_code == 0 and np.any(voxel_mm == 0):
        # nibabel takes 1 mm for it: every margin, depth and the model's grid would then rest on
        # a guessed scale (a negative size is taken as its magnitude, the NIfTI readers' rule)
        raise InputError(f"{path} has a voxel size of 0 mm (pixdim {voxel_mm.tolist()}) and no sform: its geometry "
                         "is unknown; set the voxel size in its header (e.g. nibabel, fslchpixdim)")
    spacing, origin, direction = geometry_from_ras_affine(img.affine, path)
    source = SourceInfo(
        format=NIFTI,
        path=str(path),
        header={"prefix": raw[:offset], "nifti_class": klass.__name__, "affine_ras": np.array(img.affine)},
        extra={
            "nifti_version": 2 if klass is nib.Nifti2Image else 1,
            "qform_code": qform_code,
            "sform_code": sform_code,
            "descrip": header["descrip"].item().decode("latin-1").rstrip("\x00"),
            "xyzt_units": tuple(str(u) for u in header.get_xyzt_units()),
            "intent_code": int(header["intent_code"]),
            "extensions": len(img.header.extensions),
            "disk_dtype": str(header.get_data_dtype()),
        },
    )
    return Volume(
        array=native(data),
        spacing_mm=spacing,
        origin_mm=origin,
        direction=direction,
        slope=float(img.dataobj.slope),
        intercept=float(img.dataobj.inter),
        source=source,
    )


def _check_data_size(img, held: int, path: Path) -> None:
    """A header whose shape needs more voxel bytes than the file holds (``held``, after the
    header) is truncated or corrupt, not too large for memory (32767^3 voxels claimed by a 1 MB
    file was 'too large to read')."""
    needed = math.prod(int(n) for n in img.shape) * img.header.get_data_dtype().itemsize
    if needed > held:
        raise InputError(f"{path} is corrupt or truncated: its header's shape {tuple(int(n) for n in img.shape)} "
                         f"needs {needed:,} bytes of voxels, the file holds {held:,}")


def _header_scaling(header) -> tuple[float, float]:
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if slope == 0 or not math.isfinite(slope):
        return 1.0, 0.0
    return slope, (inter if math.isfinite(inter) else 0.0)


def _truncated_description(description: str) -> bytes:
    encoded = description.encode("utf-8")[:DESCRIP_BYTES]
    return encoded.decode("utf-8", errors="ignore").encode("utf-8")


def write_nifti(volume: Volume, target: Path, description: str | None = None) -> None:
    """Write ``volume`` to ``target`` (.nii or .nii.gz), reusing the source's header bytes."""
    info = volume.source.header if volume.source and volume.source.format == NIFTI else None
    array = np.asarray(volume.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if info:
        klass = getattr(nib, info["nifti_class"])
        prefix = info["prefix"]
        header = klass.header_class(prefix[: klass.header_class.sizeof_hdr], check=False)
        # the geometry as read: nibabel repairs a header whose pixdim is 0 or negative before
        # taking its affine, and get_best_affine() on the raw bytes raises (or differs) there
        best_affine = info["affine_ras"]
    else:
        klass, prefix = nib.Nifti1Image, None
        header = nib.Nifti1Header()
        header.set_xyzt_units("mm", "sec")
        best_affine = None

    disk_dtype = header.get_data_dtype()
    if array.dtype != disk_dtype.newbyteorder("="):
        try:
            header.set_data_dtype(array.dtype)
        except Exception:
            raise OutputError(f"cannot write {array.dtype} voxels to NIfTI {target.name}") from None
        disk_dtype = header.get_data_dtype()
    if tuple(header.get_data_shape()) != array.shape:
        header.set_data_shape(array.shape)
    if not np.allclose(_header_scaling(header), (volume.slope, volume.intercept), rtol=1e-7, atol=0):
        header["scl_slope"], header["scl_inter"] = volume.slope, volume.intercept
    affine = volume.affine_ras
    if best_affine is None or not np.allclose(affine, best_affine, rtol=0, atol=1e-6):
        header.set_sform(affine, code=int(header["sform_code"]) or 1)
        header.set_qform(affine, code=int(header["qform_code"]) or 1)
    if description is not None:
        header["descrip"] = _truncated_description(description)

    block = header.binaryblock
    if prefix is None:
        header.set_data_offset(len(block) + 4)
        block = header.binaryblock
        prefix = block + b"\x00" * 4  # no extensions
    else:
        prefix = block + prefix[len(block):]
    write_file_bytes(target, itertools.chain([prefix], fortran_slabs(array, disk_dtype)),
                     compress=target.name.lower().endswith(".gz"))


def fortran_slabs(array: np.ndarray, dtype, slab_bytes: int = 1 << 24):
    """The voxel bytes as a file stores them (Fortran order, ``dtype``), a few slices of the last
    axis at a time (lazily): one ``tobytes`` of the whole array was a copy of it, and its gzip
    output another (together 0.7 GB of a 0.5 mm float32 head's peak)."""
    per_slice = max(1, array[..., 0].size * np.dtype(dtype).itemsize)
    step = max(1, slab_bytes // per_slice)
    for start in range(0, array.shape[-1], step):
        yield np.asarray(array[..., start:start + step], dtype=dtype).tobytes(order="F")


# Free text a converter or a user may fill with names or paths (db_name: NIfTI-1 only)
NIFTI_FREE_TEXT_FIELDS = ("db_name", "aux_file")


def nifti_header_without_identity(info: dict) -> tuple[dict, list[str]]:
    """(the source header with its extensions dropped and NIFTI_FREE_TEXT_FIELDS blanked, what
    went). Extensions carry whatever their writer put there: a whole DICOM header (code 2),
    free comments (6), XML with the subject (8, 4). ``descrip`` is the deface note already."""
    klass = getattr(nib, info["nifti_class"])
    size = klass.header_class.sizeof_hdr
    prefix = info["prefix"]
    header = klass.header_class(prefix[:size], check=False)
    codes = _extension_codes(prefix, size, header.endianness)
    removed = [f"NIfTI extension {code} ({nib.nifti1.extension_codes.label.get(code, 'unknown')})" for code in codes]
    for name in NIFTI_FREE_TEXT_FIELDS:
        if name in header and header[name].item().strip(b"\x00 "):
            removed.append(f"NIfTI {name}")
            header[name] = b""
    if not removed:
        return info, []
    if codes:
        header.set_data_offset(size + 4)
        rest = b"\x00" * 4
    else:
        rest = prefix[size:]
    return {**info, "prefix": header.binaryblock + rest}, removed


def copy_nifti_without_identity(source: Path, target: Path) -> list[str]:
    """Write ``source`` to ``target`` with nifti_header_without_identity applied to its header and
    return what went; [] (and nothing written) when there is nothing to clean. The voxel bytes
    are streamed through, never held whole: a 4D series costs one pass. InputError when
    ``source`` is no NIfTI file or ends early; a failed write stays an OSError (a full disk)."""
    compressed = source.name.lower().endswith(".gz")
    with _reading(source), (gzip.open(source, "rb") if compressed else open(source, "rb")) as stream:
        head = stream.read(540)
        klass = _nifti_class(head, source)
        size = klass.header_class.sizeof_hdr
        offset = int(klass.header_class(head[:size], check=False)["vox_offset"])
        if offset < size:
            raise InputError(f"{source} has a voxel offset ({offset}) inside its header; it is corrupt")
        prefix = head[:offset] + stream.read(max(0, offset - len(head)))
        if len(prefix) < offset:
            raise InputError(f"{source} ends before its voxels start; it is truncated")
        info, removed = nifti_header_without_identity({"prefix": prefix, "nifti_class": klass.__name__})
        if not removed:
            return []

        def voxels():
            yield head[offset:]
            while True:
                with _reading(source):
                    block = stream.read(1 << 22)
                if not block:
                    return
                yield block

        write_file_bytes(target, itertools.chain([info["prefix"]], voxels()), compress=compressed)
    return removed


@contextlib.contextmanager
def _reading(source: Path):
    """A source that cannot be read to its end is an InputError (writing errors pass as they are)."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise InputError(f"{source} is corrupt or truncated ({error}); re-export or re-copy it") from None


def _extension_codes(prefix: bytes, header_size: int, endian: str) -> list[int]:
    """Codes of the extensions between the header and the voxels (NIfTI's extender, then
    (size, code, data) records)."""
    if len(prefix) < header_size + 4 or prefix[header_size] == 0:
        return []
    codes, at = [], header_size + 4
    while at + 8 <= len(prefix):
        size, code = struct.unpack(endian + "ii", prefix[at:at + 8])
        if size < 8 or at + size > len(prefix):
            break
        codes.append(code)
        at += size
    return codes


# ---- MGH / MGZ --------------------------------------------------------------------------
MGH_SCAN_PARAMETER_BYTES = 20  # TR, flip angle, TE, TI, FoV: float32 each, before the tags
# FreeSurfer tags (utils/tags.h) that name people, machines and files: its command lines
# ("mri_convert /data/<subject>/... User: ... Machine: ..."), the transform's file name
MGH_IDENTITY_TAGS = {3: "command lines", 30: "transform file name", 31: "transform file name"}
MGH_TAGS_WITHOUT_LENGTH = (1, 2, 20)  # old tags whose size only their reader knows
MGH_OLD_XFORM_TAG = 30  # its length is an int32, every other tag's an int64


def mgh_footer_without_identity(footer: bytes) -> tuple[bytes, list[str]]:
    """(the footer without MGH_IDENTITY_TAGS, what went). Tags past one that cannot be measured
    (an old tag without a length, a length beyond the file) go too: kept, they could hold anything."""
    if len(footer) <= MGH_SCAN_PARAMETER_BYTES:
        return footer, []
    kept, removed, at = [footer[:MGH_SCAN_PARAMETER_BYTES]], [], MGH_SCAN_PARAMETER_BYTES
    while at + 4 <= len(footer):
        tag = struct.unpack(">i", footer[at:at + 4])[0]
        if tag == MGH_OLD_XFORM_TAG and at + 8 <= len(footer):
            start, length = at + 8, struct.unpack(">i", footer[at + 4:at + 8])[0]
        elif tag not in MGH_TAGS_WITHOUT_LENGTH and at + 12 <= len(footer):
            start, length = at + 12, struct.unpack(">q", footer[at + 4:at + 12])[0]
        else:
            start, length = at, -1
        if length < 0 or start + length > len(footer):
            removed.append("MGH tags that cannot be read")
            break
        if tag in MGH_IDENTITY_TAGS:
            removed.append(f"MGH {MGH_IDENTITY_TAGS[tag]}")
        else:
            kept.append(footer[at:start + length])
        at = start + length
    removed = list(dict.fromkeys(removed))
    return (b"".join(kept), removed) if removed else (footer, [])


def read_mgz(path: Path) -> Volume:
    raw = read_file_bytes(path)
    if raw[:2] == GZIP_MAGIC:  # read_file_bytes gunzips .mgz names only
        raise InputError(f"{path} is gzip-compressed but named .mgh; rename it to end in .mgz")
    if len(raw) >= 4 and 348 in (struct.unpack("<i", raw[:4])[0], struct.unpack(">i", raw[:4])[0]):
        raise InputError(f"{path} is a NIfTI file, not MGH/MGZ; rename it to end in .nii.gz (or .nii)")
    if len(raw) < MGH_HEADER_BYTES:
        raise InputError(f"{path} is too short to be an MGH/MGZ file ({len(raw)} bytes)")
    try:
        with _quiet_nibabel(), np.errstate(all="ignore"):  # nibabel's int32 byte count of 100000^3 overflows
            img = nib.MGHImage.from_bytes(raw)
        check_3d(img.shape, path)
        _check_data_size(img, len(raw) - MGH_HEADER_BYTES, path)  # "negative count" / "too large" for a short file
        data = np.asarray(img.dataobj)
    except InputError:
        raise
    except MemoryError:
        raise _too_large(path) from None
    except Exception as error:
        raise InputError(f"{path} cannot be read as MGH/MGZ ({_first_line(error)}); the file is corrupt or truncated") from None
    spacing, origin, direction = geometry_from_ras_affine(img.affine, path)
    hdr = img.header
    source = SourceInfo(
        format=MGZ,
        path=str(path),
        header={
            "prefix": raw[:MGH_HEADER_BYTES],
            "footer": raw[MGH_HEADER_BYTES + data.nbytes:],
            "affine_ras": np.array(img.affine),
        },
        extra={name: float(hdr[name]) for name in ("tr", "flip_angle", "te", "ti", "fov")},
    )
    return Volume(array=native(data), spacing_mm=spacing, origin_mm=origin, direction=direction, source=source)


def write_mgz(volume: Volume, target: Path, description: str | None = None) -> None:
    """Write ``volume`` as .mgz/.mgh; MGH has no free-text field, so ``description`` is ignored."""
    del description
    info = volume.source.header if volume.source and volume.source.format == MGZ else None
    array = np.asarray(volume.physical() if (volume.slope, volume.intercept) != (1.0, 0.0) else volume.array)
    array = _mgh_array(array, target)
    if not info:
        raw = nib.MGHImage(array, volume.affine_ras).to_bytes()
        write_file_bytes(target, [raw], compress=target.name.lower().endswith(".mgz"))
        return
    fields = np.frombuffer(info["prefix"], dtype=mghformat.header_dtype, count=1).copy()
    type_code = {v.newbyteorder("="): k for k, v in MGH_DTYPES.items()}[array.dtype]
    fields["type"] = type_code
    dims = list(array.shape) + [1] * (4 - array.ndim)
    fields["dims"] = dims
    affine = volume.affine_ras
    if not np.allclose(affine, info["affine_ras"], rtol=0, atol=1e-6):
        voxel_mm = np.linalg.norm(affine[:3, :3], axis=0)
        fields["delta"] = voxel_mm
        fields["Mdc"] = (affine[:3, :3] / voxel_mm).T
        fields["Pxyz_c"] = affine.dot(np.hstack((np.array(dims[:3]) / 2.0, [1])))[:3]
    prefix = fields.tobytes() + info["prefix"][fields.nbytes:]
    data = array.astype(MGH_DTYPES[type_code], copy=False).tobytes(order="F")
    write_file_bytes(target, [prefix, data, info["footer"]], compress=target.name.lower().endswith(".mgz"))


def _mgh_array(array: np.ndarray, target: Path) -> np.ndarray:
    """Values in one of MGH's four voxel types, without loss; OutputError otherwise."""
    supported = [v.newbyteorder("=") for v in MGH_DTYPES.values()]
    if array.dtype in supported:
        return array
    for candidate in (np.uint8, np.int16, np.int32, np.float32):
        converted = array.astype(candidate)
        if np.array_equal(converted, array):
            return converted
    raise OutputError(f"cannot store {array.dtype} voxels in MGH/MGZ {target.name} without loss; write NIfTI instead")


@contextlib.contextmanager
def _quiet_nibabel():
    """nibabel logs the header fixes it makes ('pixdim[1,2,3] should be positive') to stderr,
    around our one-line errors; the written header keeps the file's own bytes anyway."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
