"""What a DICOM write-back hands on must be what the defacer made, in any valid encoding of the
input: the pixels in the transfer syntax's own byte order, pixel-range attributes true of the new
pixels, and what a header-only scrub of a defaced series says of its pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian

from DeFacerLib.dicom import ProfileOptions, Scrubber
from DeFacerLib.io import read_volume, write_volume

KEY = bytes(range(32))


def _as_big_endian(source: Path, target: Path) -> Path:
    """A copy of a DICOM folder in Explicit VR Big Endian (a valid, if retired, transfer
    syntax; pydicom writes it, and older archives hold it), pixel for pixel the same."""
    target.mkdir(parents=True)
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:  # the series' notes (.nfo)
            continue
        pixels = ds.pixel_array
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
        pydicom.dcmwrite(target / path.name, ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
        assert np.array_equal(pydicom.dcmread(target / path.name).pixel_array, pixels)
    return target


@pytest.mark.parametrize("series", ["siemens_trio_mprage_1mm", "siemens_xa30_enhanced_multiframe_t1"])
@pytest.mark.parametrize("big_endian", [False, True])
def test_written_pixels_read_back_as_made(series, big_endian, data_dir, tmp_path):
    """A block of the head set to the background, written back and read again, is that block and
    nothing else, little- or big-endian. Before, the writers stored the new pixels little-endian
    whatever the file said: a big-endian series came back with 11.3 M of its 11.5 M voxels wrong,
    the brain's among them, with exit 0."""
    source = data_dir / "dicom" / series
    if big_endian:
        source = _as_big_endian(source, tmp_path / "big_endian")
    head = read_volume(source)
    values = np.array(head.array)
    block = tuple(slice(n // 4, n // 2) for n in head.shape3)
    values[block] = values.min()
    assert (values != head.array).sum() > 10_000
    written = Path(write_volume(head.with_array(values), tmp_path / ("out" if head.shape3[2] > 100 else "out.dcm")))
    back = read_volume(written)
    assert np.array_equal(back.array, values)
    assert np.allclose(back.affine_lps, head.affine_lps, atol=1e-4)
    # the pixel range each file states is that of its new pixels; the series' range is gone
    stale = 0
    syntax = pydicom.dcmread(sorted(source.glob("*.dcm"))[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    for path in sorted(written.iterdir()) if written.is_dir() else [written]:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == syntax
        pixels = ds.pixel_array
        for name, value in (("SmallestImagePixelValue", pixels.min()), ("LargestImagePixelValue", pixels.max())):
            if name in ds:
                stale += int(ds[name].value != value)
        assert "SmallestPixelValueInSeries" not in ds and "LargestPixelValueInSeries" not in ds
    assert stale == 0


def test_trio_series_states_its_new_pixel_range(data_dir, tmp_path):
    """The MPRAGE's files state their largest pixel; where the new pixels no longer reach it (35
    of 176 files once defaced: the face held their brightest voxels), the written file kept the
    old value ("423" over pixels that top out at 175)."""
    source = data_dir / "dicom" / "siemens_trio_mprage_1mm"
    head = read_volume(source)
    values = np.array(head.array)
    values[values > np.percentile(values, 99.5)] = 0  # the brightest voxels, as the face's often are
    written = write_volume(head.with_array(values), tmp_path / "out")
    lowered = 0
    for path in sorted(Path(written).iterdir()):
        before, after = pydicom.dcmread(source / path.name), pydicom.dcmread(path)
        assert after.LargestImagePixelValue == after.pixel_array.max()
        lowered += int(after.LargestImagePixelValue < before.LargestImagePixelValue)
    assert lowered > 10


def test_scrub_of_a_defaced_series_keeps_what_its_pixels_are(data_dir, tmp_path):
    """A header-only scrub passes the pixels on unchanged, so what the defaced input said of them
    (113102, Clean Recognizable Visual Features) stays true and stays said; before, a scrub of a
    defaced series dropped it. A code the input merely claims without PatientIdentityRemoved is
    not taken over, nor any other code."""
    source = data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1" / "0001.dcm"

    def codes(ds):
        return sorted(str(item.CodeValue) for item in ds.DeidentificationMethodCodeSequence)

    defaced = pydicom.dcmread(source)
    Scrubber(ProfileOptions(), KEY).scrub(defaced, defaced=True)
    assert "113102" in codes(defaced)
    Scrubber(ProfileOptions(), KEY).scrub(defaced)  # scrubbed again, header only
    assert "113102" in codes(defaced)
    plain = pydicom.dcmread(source)
    Scrubber(ProfileOptions(), KEY).scrub(plain)
    assert "113102" not in codes(plain)
    claimed = pydicom.dcmread(source)  # a code without PatientIdentityRemoved = YES is not believed
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113102", "DCM", "Clean Recognizable Visual Features"
    claimed.DeidentificationMethodCodeSequence = pydicom.Sequence([item])
    claimed.PatientIdentityRemoved = "NO"
    Scrubber(ProfileOptions(), KEY).scrub(claimed)
    assert "113102" not in codes(claimed)


def test_a_series_that_does_not_read_back_as_written_is_not_published(data_dir, tmp_path, monkeypatch):
    """The DICOM writers are DeFacer's own code, so `deface` reads the written series back and
    refuses (exit 5, nothing left) unless every voxel the defacing kept, the brain's among them,
    comes back as it was. Checked here with the byte-order fault above put back: a big-endian
    series whose new pixels are stored little-endian."""
    import DeFacerLib.io._dicom_common as common
    from DeFacerLib.deface.pipeline import DefaceParameters
    from DeFacerLib.deface.workflow import deface_file
    from DeFacerLib.errors import GuaranteeError

    source = _as_big_endian(data_dir / "dicom" / "siemens_xa30_enhanced_multiframe_t1", tmp_path / "big_endian")
    key_file, out = tmp_path / "new.key", tmp_path / "defaced"
    earlier = tmp_path / "earlier"  # an output made before, which --overwrite would replace
    deface_file(source, earlier, parameters=DefaceParameters(), key_file=tmp_path / "earlier.key")
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and p.relative_to(tmp_path).parts[0].startswith("earlier")}
    assert len(before) == 7  # the image, the key, and the audit folder's sidecar, mappings, actions and summary
    monkeypatch.setattr(common, "pixel_bytes", lambda values, dtype, ds: values.astype(dtype.newbyteorder("<")).tobytes())
    with pytest.raises(GuaranteeError, match="defaced reads back with [0-9,]+ of the voxels the defacing kept changed"):
        deface_file(source, out, parameters=DefaceParameters(), key_file=key_file)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big_endian", "earlier", "earlier.audit", "earlier.key"]
    # checked before it is published: the earlier output and its audit stay as they were
    with pytest.raises(GuaranteeError):
        deface_file(source, earlier, parameters=DefaceParameters(), key_file=tmp_path / "earlier.key", overwrite=True)
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and p.relative_to(tmp_path).parts[0].startswith("earlier")} == before
