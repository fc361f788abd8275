"""Text that compressed pixel data carries beside the image, removed without decoding it.

A JPEG frame may hold comment (COM) and application (APP1-APP15) segments, a JPEG 2000
codestream comment (COM) segments: an encoder or a converter writes the patient's name, an ID,
a date, a camera's EXIF (owner, time, place, a thumbnail of the photo) there, and no attribute
of the header shows it, so neither the profile's table nor the leak check sees it. Every such
segment goes; what decoding needs stays (the frame header, tables, APP0's JFIF fields without
its thumbnail, APP2's ICC profile, APP14's Adobe colour transform), so the image's coded bytes
are the input's. Frames that are not JPEG or JPEG 2000 (RLE) are left as they are.
"""
from __future__ import annotations

import re

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames

SOI, SOS, EOI = 0xD8, 0xDA, 0xD9
COM = 0xFE
APP0, APP2, APP14 = 0xE0, 0xE2, 0xEE
KEPT_APP_SIGNATURES = {APP0: b"JFIF\x00", APP2: b"ICC_PROFILE\x00", APP14: b"Adobe"}
JFIF_WITHOUT_THUMBNAIL_BYTES = 14  # "JFIF\0", version, units, densities, thumbnail 0 x 0
J2K_SOC, J2K_SOT, J2K_COM = 0x4F, 0x90, 0x64
_ANY_TEXT_MARKER = re.compile(rb"\xff[\xe0-\xef\xfe]")  # coded data never holds one: 0xFF is followed by 0x00 there
STANDALONE = frozenset({SOI, EOI, 0x01, *range(0xD0, 0xD8)})  # markers without a length


def _jpeg_kept(marker: int, payload: bytes) -> bytes | None:
    """The segment's payload as written (None: removed)."""
    if marker == COM:
        return None
    if APP0 <= marker <= 0xEF:
        signature = KEPT_APP_SIGNATURES.get(marker)
        if signature is None or not payload.startswith(signature):
            return None
        if marker == APP0 and len(payload) > JFIF_WITHOUT_THUMBNAIL_BYTES:  # its thumbnail is the image, small
            return payload[:12] + b"\x00\x00"
    return payload


def strip_jpeg(frame: bytes) -> tuple[bytes, int]:
    """(the frame without its text segments, how many were removed); a frame that is not a
    well-formed JPEG (or JPEG-LS) stream is given back unchanged with 0."""
    if frame[:2] != b"\xff\xd8" or not _ANY_TEXT_MARKER.search(frame):  # most frames: no walk needed
        return frame, 0
    out, removed, at, end = [b"\xff\xd8"], 0, 2, len(frame)
    while at < end:
        if frame[at] != 0xFF:
            return frame, 0
        while at < end and frame[at] == 0xFF:  # fill bytes before a marker
            at += 1
        if at >= end:
            return frame, 0
        marker = frame[at]
        at += 1
        if marker < 0xC0 and marker != 0x01:  # no marker: not a stream this reads
            return frame, 0
        if marker in STANDALONE:
            out.append(bytes((0xFF, marker)))
            if marker == EOI:
                out.append(frame[at:])  # padding after the image, as it came
                break
            continue
        if at + 2 > end:
            return frame, 0
        length = int.from_bytes(frame[at:at + 2], "big")
        if length < 2 or at + length > end:
            return frame, 0
        payload = frame[at + 2:at + length]
        at += length
        kept = _jpeg_kept(marker, payload)
        if kept is None:
            removed += 1
        else:
            out.append(bytes((0xFF, marker)) + (len(kept) + 2).to_bytes(2, "big") + kept)
        if marker == SOS:  # the coded data runs to the next marker: 0xFF then 0xC0 or above, not RSTn or fill
            start = at
            while at < end:
                at = frame.find(b"\xff", at)
                if at < 0:
                    at = end
                    break
                following = frame[at + 1] if at + 1 < end else None
                if following is not None and following >= 0xC0 and following != 0xFF and not 0xD0 <= following <= 0xD7:
                    break
                at += 1
            out.append(frame[start:at])
    return (b"".join(out), removed) if removed else (frame, 0)


def strip_j2k(frame: bytes) -> tuple[bytes, int]:
    """(the codestream without its main header's comments, how many were removed); not a
    JPEG 2000 codestream, or malformed: unchanged, 0. A tile-part's own header is not rewritten
    (its length field counts it): comments there are rare, and left."""
    if frame[:2] != bytes((0xFF, J2K_SOC)):
        return frame, 0
    out, removed, at, end = [frame[:2]], 0, 2, len(frame)
    while at + 4 <= end and frame[at] == 0xFF:
        marker = frame[at + 1]
        if marker == J2K_SOT:
            out.append(frame[at:])
            return (b"".join(out), removed) if removed else (frame, 0)
        length = int.from_bytes(frame[at + 2:at + 4], "big")
        if length < 2 or at + 2 + length > end:
            return frame, 0
        if marker == J2K_COM:
            removed += 1
        else:
            out.append(frame[at:at + 2 + length])
        at += 2 + length
    return frame, 0


def strip_text_segments(ds: Dataset) -> int:
    """In place: every JPEG/JPEG 2000 text segment of ``ds``'s encapsulated frames removed;
    returns how many. Pixel data left byte for byte when there are none."""
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is None or not syntax.is_encapsulated or "PixelData" not in ds:
        return 0
    try:
        frames_count = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):  # "1?": a damaged count, read by the fragments alone
        frames_count = None
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=frames_count, extended_offsets=extended))
    except (ValueError, TypeError, KeyError, IndexError):  # fragments not laid out as the header says: left
        return 0
    removed, stripped = 0, []
    for frame in frames:
        frame, count = strip_jpeg(frame) if frame[:2] == b"\xff\xd8" else strip_j2k(frame)
        removed += count
        stripped.append(frame)
    if not removed:
        return 0
    if extended is not None:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(stripped)
    else:
        ds.PixelData = encapsulate(stripped, has_bot=_has_basic_offset_table(ds.PixelData))
    return removed


def _has_basic_offset_table(encapsulated: bytes) -> bool:
    """Whether the first item (the Basic Offset Table) holds offsets."""
    return len(encapsulated) >= 8 and int.from_bytes(encapsulated[4:8], "little") > 0
