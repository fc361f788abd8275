"""`pip install defacer` (the core, no extras), then `defacer qa`, `photo`, `batch`, `demo` or
`deface --qa`: one line naming the extra to install, exit 2, nothing written. They said "internal
error (ModuleNotFoundError: No module named 'cv2'); ... report it" (exit 1), as for a bug, and
batch left its output and audit folders behind.

The extra's modules are blocked in the CLI's own process (None in sys.modules: Python's way to
make an import fail), which is what a core-only install gives it; the inputs are real."""
from __future__ import annotations

import subprocess
import sys
import shutil
from pathlib import Path

import pytest

from DeFacerLib.errors import EXTRA_MODULES

REPO = Path(__file__).resolve().parents[1]
HEAD = "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"
PHOTO = "photos/known_people/obama.jpg"


def defacer_without(modules: tuple[str, ...], *args) -> subprocess.CompletedProcess:
    """``defacer ARGS`` in a process where importing any of ``modules`` fails."""
    code = ("import sys\n"
            f"sys.modules.update(dict.fromkeys({list(modules)!r}))\n"
            "from DeFacerLib.cli.main import main\n"
            f"sys.exit(main({list(map(str, args))!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("command, extra", [("qa", "qa"), ("photo", "photo"), ("batch", "batch"), ("deface", "qa"),
                                            ("demo", "qa")])
def test_a_command_without_its_extra_names_the_extra(command, extra, data_dir, tmp_path):
    head = data_dir / HEAD
    args = {"qa": ["qa", head, head, "--out", tmp_path / "out"],
            "photo": ["photo", data_dir / PHOTO, "-o", tmp_path / "out.jpg"],
            "batch": ["batch", tmp_path / "in", tmp_path / "out", "--workers", "1"],
            "deface": ["deface", head, tmp_path / "out.nii.gz", "--qa", tmp_path / "qa"],
            "demo": ["demo", "--out", tmp_path / "out"]}[command]
    (tmp_path / "in").mkdir()
    shutil.copy2(head, tmp_path / "in" / head.name)
    result = defacer_without(EXTRA_MODULES[extra], *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert f"pip install 'defacer[{extra}]'" in result.stderr, result.stderr
    assert "internal error" not in result.stderr
    assert command != "demo" or "--no-qa" in result.stderr, result.stderr  # the demo without renders
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in"], "nothing is written"


def test_a_video_without_ffmpeg_names_the_photo_extra(data_dir, tmp_path):
    """imageio-ffmpeg alone missing (photos work, a video cannot): the same one line as the rest,
    not an exit 3 "input cannot be read" with a pip name of its own."""
    result = defacer_without(("imageio_ffmpeg",), "photo", data_dir / "photos/known_people/short_hamilton_clip.mp4",
                             "-o", tmp_path / "out.mp4")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("defacer: error: video needs the photo extra (imageio_ffmpeg is not installed): "
                                     "pip install 'defacer[photo]'"), result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written"


def test_the_extras_named_are_pyprojects():
    optional = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    for extra in EXTRA_MODULES:
        assert f"\n{extra} = [" in optional, f"pyproject.toml has no [{extra}] extra"
