"""Detached-header volumes (NRRD .nhdr + data file, MetaImage .mhd + .raw/.zraw) come out as they
went in: a header and its data file beside it, the same voxels as the attached format's output.

They were read but refused as outputs ("name it with .nrrd"), so a dataset kept that way could
not keep its format. Real head: IXI132's T1 (with its reference brain labels)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from DeFacerLib.errors import OutputError
from DeFacerLib.io import read_volume, write_volume
from ixi_layout import brain_labels_of
from test_cli_volume_edge_cases import defacer, one_line_error

IXI = "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def detached_head(data_dir: Path, folder: Path, name: str, compressed: bool) -> Path:
    """The IXI head written by ITK as a detached header and its data file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    header = folder / name
    sitk.WriteImage(sitk.ReadImage(str(data_dir / IXI)), str(header), compressed)
    return header


@pytest.mark.parametrize("name, data_name, attached", [("head.nhdr", "defaced.raw.gz", "defaced.nrrd"),
                                                       ("head.mhd", "defaced.zraw", "defaced.mha")])
def test_a_detached_head_is_defaced_into_a_header_and_its_data_file(data_dir, tmp_path, name, data_name, attached):
    source = detached_head(data_dir, tmp_path / "in", name, compressed=True)
    if name.endswith(".nhdr"):  # a field SimpleITK cannot carry, kept from the header text
        source.write_text(source.read_text() + "space units: \"mm\" \"mm\" \"mm\"\n")
    before = digests(source.parent)
    out = tmp_path / "out"
    out.mkdir()
    suffix = Path(name).suffix
    result = defacer("deface", source, out / f"defaced{suffix}")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([f"defaced{suffix}", data_name, "defaced.defacer.json"])
    header_text = (out / f"defaced{suffix}").read_text()
    assert (f"data file: {data_name}" if suffix == ".nhdr" else f"ElementDataFile = {data_name}") in header_text
    if suffix == ".nhdr":
        assert 'space units: "mm" "mm" "mm"' in header_text
    assert digests(source.parent) == before  # the input's header and voxels untouched

    defaced = read_volume(out / f"defaced{suffix}")
    original = read_volume(source)
    assert np.allclose(defaced.affine_lps, original.affine_lps)
    changed = defaced.array != original.array
    assert changed.sum() > 100_000  # the face went
    # the same cut as the attached format's
    assert defacer("deface", source, tmp_path / attached).returncode == 0
    assert np.array_equal(read_volume(tmp_path / attached).array, defaced.array)
    # and no voxel of the reference brain changed (the labels share the head's grid)
    brain = np.asarray(nib.load(brain_labels_of(data_dir / IXI, data_dir / "heads" / "ixi")).dataobj) > 0
    assert brain.shape == changed.shape and brain.sum() > 100_000
    assert not (changed & brain).any()


def test_an_uncompressed_header_gets_an_uncompressed_data_file(data_dir, tmp_path):
    source = detached_head(data_dir, tmp_path / "in", "head.nhdr", compressed=False)
    assert "encoding: raw" in source.read_text()
    result = defacer("deface", source, tmp_path / "defaced.nhdr")
    assert result.returncode == 0, result.stderr
    assert "encoding: raw" in (tmp_path / "defaced.nhdr").read_text()
    assert (tmp_path / "defaced.raw").stat().st_size == (tmp_path / "in" / "head.raw").stat().st_size


def test_an_output_whose_data_file_is_the_inputs_voxels_is_refused(data_dir, tmp_path):
    """x.nhdr naming voxels.raw, written to voxels.nhdr: its data file would be voxels.raw, the
    input's own voxels; --overwrite does not make that an output."""
    source = detached_head(data_dir, tmp_path, "x.nhdr", compressed=False)
    (tmp_path / "x.raw").rename(tmp_path / "voxels.raw")
    source.write_text(source.read_text().replace("data file: x.raw", "data file: voxels.raw"))
    before = digests(tmp_path)
    one_line_error(defacer("deface", source, tmp_path / "voxels.nhdr", "--overwrite"), 4, "voxels.raw",
                   "a file of the input")
    assert digests(tmp_path) == before


def test_an_existing_data_file_needs_overwrite_and_is_refused_before_the_work(data_dir, tmp_path):
    source = detached_head(data_dir, tmp_path / "in", "head.nhdr", compressed=True)
    stale = tmp_path / "defaced.raw.gz"
    stale.write_bytes(b"an earlier run's voxels")
    one_line_error(defacer("deface", source, tmp_path / "defaced.nhdr"), 4, "defaced.raw.gz", "--overwrite")
    assert stale.read_bytes() == b"an earlier run's voxels" and not (tmp_path / "defaced.nhdr").exists()
    result = defacer("deface", source, tmp_path / "defaced.nhdr", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert read_volume(tmp_path / "defaced.nhdr").array.shape == read_volume(source).array.shape


def test_a_failed_write_publishes_neither_file_and_keeps_an_earlier_output(data_dir, tmp_path):
    """The header names its voxels: a header without them, or new voxels under an old header,
    is a broken output. A check that fails after the writing publishes nothing, and an earlier
    output stays whole."""
    volume = read_volume(detached_head(data_dir, tmp_path / "in", "head.nhdr", compressed=True))
    out = tmp_path / "out"
    out.mkdir()
    write_volume(volume, out / "head.nhdr")
    before = digests(out)
    assert sorted(before) == ["head.nhdr", "head.raw.gz"]

    def refuse(path: Path) -> None:
        assert path.name == "head.nhdr" and (path.parent / "head.raw.gz").is_file()  # both written, not placed
        raise OutputError("refused by the check")

    volume.array[:] = 0
    with pytest.raises(OutputError, match="refused by the check"):
        write_volume(volume, out / "head.nhdr", overwrite=True, check=refuse)
    assert digests(out) == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_batch_defaces_detached_heads_with_their_voxels_and_a_rerun_keeps_them(data_dir, tmp_path):
    """In a folder of volumes, a detached header and the data file it names are one item: the
    header defaced with its voxels, the input's data file (here named otherwise) never copied. A
    rerun finds the item done and its outputs in place (their names are not the inputs'); a
    header whose voxels are missing fails alone."""
    from DeFacerLib.batch import run_batch

    site = tmp_path / "in" / "site"
    a = detached_head(data_dir, site, "a.nhdr", compressed=False)
    (site / "a.raw").rename(site / "voxels.dat")
    a.write_text(a.read_text().replace("data file: a.raw", "data file: voxels.dat"))
    detached_head(data_dir, site, "b.mhd", compressed=True)
    (site / "c.nhdr").write_text(a.read_text().replace("data file: voxels.dat", "data file: gone.raw"))
    out = tmp_path / "out"

    def published() -> dict:
        return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*")
                if p.is_file() and ".defacer" not in p.parts}

    summary = run_batch(tmp_path / "in", out, key_file=tmp_path / "key", workers=1)
    assert (summary["items_done"], summary["items_failed"], summary["files"], summary["written"]) == (2, 1, 5, 4)
    assert summary["accounted"]
    first = published()
    assert sorted(first) == ["site/a.nhdr", "site/a.raw", "site/b.mhd", "site/b.zraw"]
    original = read_volume(a).array
    defaced = read_volume(out / "site" / "a.nhdr").array
    assert (defaced != original).sum() > 100_000
    assert np.array_equal(read_volume(out / "site" / "b.mhd").array, defaced)  # the same head, the same cut

    again = run_batch(tmp_path / "in", out, key_file=tmp_path / "key", workers=1)
    assert (again["items_done"], again["defaced"]) == (2, 2)
    assert published() == first  # nothing removed, nothing written again


def test_taking_back_a_detached_output_takes_its_data_file_too(data_dir, tmp_path):
    """The Slicer batch takes an output back when its screenshots fail: the header alone went, and
    the head's voxels, defaced but named after no header, stayed in the output folder."""
    from DeFacerLib.deface.workflow import deface_file, take_back

    source = detached_head(data_dir, tmp_path / "in", "head.mhd", compressed=True)
    out = tmp_path / "out"
    out.mkdir()
    outcome = deface_file(source, out / "head.mhd")
    assert sorted(p.name for p in out.iterdir()) == ["head.defacer.json", "head.mhd", "head.zraw"]
    take_back(outcome)
    assert list(out.iterdir()) == []
