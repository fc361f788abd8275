"""The wheel a user installs (pip install defacer) holds every module and resource: built from
this checkout's files and run from outside it, it defaces a real head exactly as the checkout
does. The test suite runs an editable install, which reads the checkout and would not notice a
package left out of pyproject.toml's list or a model missing from the wheel's data."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_defaces_a_head_as_the_checkout_does(data_dir, tmp_path):
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside its sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for name in ("DeFacerLib", "Resources"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "wheel").glob("defacer-*.whl")
    from DeFacerLib import __version__  # the one place the version is written (pyproject reads it)

    assert wheel.name.startswith(f"defacer-{__version__}-"), wheel.name

    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(REPO)) for path in (REPO / "DeFacerLib").rglob("*.py")}
    resources = {"DeFacerLib/_resources/" + str(path.relative_to(REPO / "Resources"))
                 for path in (REPO / "Resources").rglob("*") if path.is_file()}
    assert not modules - names, f"left out of the wheel: {sorted(modules - names)}"
    assert not resources - names, f"left out of the wheel: {sorted(resources - names)}"

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                                str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    outside = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import DeFacerLib; print(DeFacerLib.__file__)"], cwd=tmp_path,
                           env=outside, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr

    head = next((data_dir / "heads" / "ixi" / "t1").glob("IXI162*_T1.nii.gz"))
    for runner, cwd, env in (("wheel", tmp_path, outside), ("checkout", REPO, None)):
        run = subprocess.run([sys.executable, "-m", "DeFacerLib", "deface", str(head), str(tmp_path / f"{runner}.nii.gz"),
                              "-q"], cwd=cwd, env=env, capture_output=True, text=True)
        assert run.returncode == 0, f"{runner}: {run.stderr}"
    from_wheel = np.asarray(nib.load(tmp_path / "wheel.nii.gz").dataobj)
    from_checkout = np.asarray(nib.load(tmp_path / "checkout.nii.gz").dataobj)
    original = np.asarray(nib.load(head).dataobj)
    assert (from_wheel != original).sum() > 50_000  # the face went
    np.testing.assert_array_equal(from_wheel, from_checkout)
