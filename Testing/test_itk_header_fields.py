"""NRRD and MetaImage header fields that SimpleITK cannot carry come through defacing as they were.

SimpleITK shows the measurement frame, the thicknesses and "old min"/"old max" only as a
placeholder text, and the space units not at all: written back, the measurement frame became
(666666,666666,666666) three times (a DWI's gradients then point nowhere), the thicknesses 0,
and the rest was dropped. ITK's MetaImage writer ignores the Modality it read. Heads crafted in tmp_path from a real IXI head.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DeFacerLib.deface.workflow import deface_file
from DeFacerLib.io import read_volume, write_volume

IXI_NAME = "IXI255-HH-1882_T1.nii.gz"
FIELDS = [
    "measurement frame: (0,1,0) (-1,0,0) (0,0,1)",
    'space units: "mm" "mm" "mm"',
    "thicknesses: nan nan 1.2",
    "old min: 0",
    "old max: 255",
]


def header_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    return raw[:raw.find(b"\n\n")].decode("latin-1").splitlines()


def write_nrrd(data_dir: Path, path: Path, space: str, fields: list[str]) -> np.ndarray:
    """The IXI head as an attached raw NRRD in ``space`` (LPS, or RAS with its axes flipped)."""
    image = sitk.ReadImage(str(data_dir / "heads" / "ixi" / "t1" / IXI_NAME))
    voxels = sitk.GetArrayFromImage(image).astype(np.uint8)  # (k, j, i)
    flips = np.diag([1.0, 1.0, 1.0] if space == "left-posterior-superior" else [-1.0, -1.0, 1.0])
    axes = flips @ np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    origin = flips @ np.array(image.GetOrigin())
    vector = lambda v: "(" + ",".join(repr(float(x)) for x in v) + ")"  # noqa: E731
    header = ["NRRD0005", "type: uint8", "dimension: 3", f"space: {space}",
              "sizes: " + " ".join(str(n) for n in voxels.shape[::-1]),
              "space directions: " + " ".join(vector(axes[:, c]) for c in range(3)),
              "kinds: domain domain domain", "endian: little", "encoding: raw",
              f"space origin: {vector(origin)}"] + fields
    path.write_bytes(("\n".join(header) + "\n\n").encode() + voxels.tobytes())
    return voxels


def test_defaced_nrrd_keeps_fields_simpleitk_cannot_carry(data_dir, tmp_path):
    source, output = tmp_path / "head.nrrd", tmp_path / "defaced.nrrd"
    write_nrrd(data_dir, source, "left-posterior-superior", FIELDS)
    outcome = deface_file(source, output)
    assert outcome["features_removed"]
    written = header_lines(output)
    for field in FIELDS:
        assert field in written, f"{field!r} not in the defaced header: {written}"
    assert not any("666666" in line for line in written)
    before, after = sitk.ReadImage(str(source)), sitk.ReadImage(str(output))
    assert (after.GetSpacing(), after.GetOrigin(), after.GetDirection()) == \
        (before.GetSpacing(), before.GetOrigin(), before.GetDirection())
    assert after.GetPixelIDValue() == before.GetPixelIDValue()


def test_measurement_frame_follows_the_space_itk_writes(data_dir, tmp_path):
    """ITK writes a right-anterior-superior NRRD in LPS: the frame's world components flip with it."""
    source, output = tmp_path / "ras.nrrd", tmp_path / "out.nrrd"
    write_nrrd(data_dir, source, "right-anterior-superior", [FIELDS[0]])
    write_volume(read_volume(source), output)
    written = header_lines(output)
    assert "space: left-posterior-superior" in written
    assert "measurement frame: (0,-1,0) (1,0,0) (0,0,1)" in written


@pytest.mark.parametrize("space", ["scanner-xyz"])
def test_measurement_frame_in_a_space_without_lps_is_dropped(data_dir, tmp_path, space):
    source, output = tmp_path / "scanner.nrrd", tmp_path / "out.nrrd"
    write_nrrd(data_dir, source, "left-posterior-superior", [FIELDS[0]])
    text = source.read_bytes().replace(b"space: left-posterior-superior", f"space: {space}".encode())
    source.write_bytes(text)
    write_volume(read_volume(source), output)
    assert not any(line.startswith("measurement frame") for line in header_lines(output))


def test_metaimage_keeps_its_modality(data_dir, tmp_path):
    image = sitk.ReadImage(str(data_dir / "heads" / "ixi" / "t1" / IXI_NAME))
    voxels = sitk.GetArrayFromImage(image).astype(np.uint8)
    number = lambda values: " ".join(repr(float(x)) for x in values)  # noqa: E731
    header = ["ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
              "CompressedData = False",
              f"TransformMatrix = {number(np.array(image.GetDirection()).reshape(3, 3).T.ravel())}",
              f"Offset = {number(image.GetOrigin())}", f"ElementSpacing = {number(image.GetSpacing())}",
              "DimSize = " + " ".join(str(n) for n in voxels.shape[::-1]), "Modality = MET_MOD_MR",
              "ElementType = MET_UCHAR", "ElementDataFile = LOCAL"]
    source, output = tmp_path / "head.mha", tmp_path / "out.mha"
    source.write_bytes(("\n".join(header) + "\n").encode() + voxels.tobytes())
    write_volume(read_volume(source), output, description="defaced")
    written = sitk.ReadImage(str(output))
    assert written.GetMetaData("Modality") == "MET_MOD_MR"
    assert np.array_equal(sitk.GetArrayFromImage(written), voxels)
    assert written.GetMetaData("DeFacer") == "defaced"


def test_a_4d_frame_stays_in_the_space_itk_keeps(data_dir, tmp_path):
    """ITK writes a right-anterior-superior-time NRRD back in that space: its frame was flipped to
    LPS all the same (x and y negated). A 3D volume taken from it (the Python API's with_array)
    got the 4D per-axis thicknesses: an output no reader opens."""
    image = sitk.ReadImage(str(data_dir / "heads" / "ixi" / "t1" / IXI_NAME))
    voxels = sitk.GetArrayFromImage(image).astype(np.uint8)
    frames = np.stack([voxels, voxels])  # (t, k, j, i)
    frame = "measurement frame: (0,1,0,0) (-1,0,0,0) (0,0,1,0) (0,0,0,1)"
    header = ["NRRD0004", "type: uint8", "dimension: 4", "space: right-anterior-superior-time",
              "sizes: " + " ".join(str(n) for n in frames.shape[::-1]),
              "space directions: (2,0,0,0) (0,2,0,0) (0,0,2,0) (0,0,0,3)",
              "kinds: domain domain domain domain", "endian: little", "encoding: raw",
              "space origin: (0,0,0,0)", "thicknesses: nan nan 1.2 nan", frame]
    source = tmp_path / "dynamic.nrrd"
    source.write_bytes(("\n".join(header) + "\n\n").encode() + frames.tobytes())
    volume = read_volume(source)
    write_volume(volume, tmp_path / "out4d.nrrd")
    written = header_lines(tmp_path / "out4d.nrrd")
    assert "space: right-anterior-superior-time" in written and frame in written
    write_volume(volume.with_array(volume.array[..., 0]), tmp_path / "out3d.nrrd")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out3d.nrrd"))), voxels)
    assert not any(line.startswith("thicknesses") for line in header_lines(tmp_path / "out3d.nrrd"))


def test_a_field_cut_by_the_header_read_limit_is_not_copied(data_dir, tmp_path):
    """The input's header is read up to 64 KiB: a kept field across that limit was copied cut
    ("space units: "mm" "m"), and the defaced output no reader opened, without an error."""
    from DeFacerLib.io.itk_formats import NRRD_HEADER_BYTES

    source, output = tmp_path / "long.nrrd", tmp_path / "out.nrrd"
    write_nrrd(data_dir, source, "left-posterior-superior", [])
    raw = source.read_bytes()
    end = raw.find(b"\n\n")
    units = b'space units: "mm" "mm" "mm"'
    padding = NRRD_HEADER_BYTES - (end + 1) - len(b"pad:=\n") - 20  # the limit cuts the units line after "mm" "m
    source.write_bytes(raw[:end + 1] + b"pad:=" + b"x" * padding + b"\n" + units + raw[end:])
    write_volume(read_volume(source), output)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(output))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(source))))
