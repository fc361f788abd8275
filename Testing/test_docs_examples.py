"""The documentation says what the code does: links resolve, documented options exist (and every
option of `defacer deface` is documented), stated defaults are the code's, the Python snippets
import, and the sidecar keys the README names are in a real run's sidecar."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "DeFacer" / "README.md", REPO_ROOT / "Resources" / "Models" / "MODEL_CARD.md",
        *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
OPTION = re.compile(r"`(--[a-z][a-z0-9-]*\*?)")


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", markdown.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _options(command: str) -> set[str]:
    from DeFacerLib.cli.main import build_parser

    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {flag for action in sub._actions for flag in action.option_strings if flag.startswith("--")}


def _documented(flag: str, options: set[str]) -> bool:
    """``--retain-*`` in a doc stands for every option with that prefix."""
    return any(o.startswith(flag[:-1]) for o in options) if flag.endswith("*") else flag in options


def _table_rows(text: str, header: str) -> list[str]:
    """The body rows of the first markdown table at or after the line starting with ``header``."""
    lines = text[text.index(header):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(doc):
    broken = []
    for link in LINK.findall(doc.read_text()):
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists() or (anchor and target.suffix == ".md" and anchor not in _anchors(target)):
            broken.append(link)
    assert not broken, f"{doc.name}: broken links {broken}"


def test_readme_deface_table_matches_the_command():
    """Both ways: a documented option that does not exist misleads, an undocumented one is lost."""
    rows = _table_rows((REPO_ROOT / "README.md").read_text(), "`deface` options:")
    documented = {flag for row in rows for flag in OPTION.findall(row.split("|")[1])}
    options = _options("deface") - {"--help"}
    assert {f for f in documented if not _documented(f, options)} == set()
    assert {o for o in options if not any(_documented(f, {o}) for f in documented)} == set()


def test_readme_defaults_are_the_engine_constants():
    from DeFacerLib.deface import removal

    rows = _table_rows((REPO_ROOT / "README.md").read_text(), "`deface` options:")
    default = {OPTION.findall(row)[0]: row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows}
    assert float(default["--margin-mm"]) == removal.DEFAULT_MARGIN_MM
    assert float(default["--max-depth-mm"]) == removal.DEFAULT_MAX_DEPTH_MM
    assert float(default["--protect-margin-mm"]) == removal.DEFAULT_PROTECT_MARGIN_MM
    assert default["--seal-mm"].startswith(f"{removal.DEFAULT_SEAL_MM:g} (at least {removal.SEAL_MIN_VOXELS} voxels")


@pytest.mark.parametrize("doc,command", [("docs/dicom.md", "scrub"), ("docs/batch.md", "batch"),
                                         ("docs/photo.md", "photo")])
def test_options_a_doc_names_exist(doc, command):
    text = (REPO_ROOT / doc).read_text()
    text = text.replace("--doc-figure", "")  # an option of scripts/evaluate_photo.py, not of the command
    flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", text))
    options = _options(command)
    assert {f for f in flags if not _documented(f + "*" if f.endswith("-") else f, options)} == set()


def test_photo_doc_methods_and_regions_are_the_commands_choices():
    from DeFacerLib.cli.main import build_parser

    sub = next(a for a in build_parser("photo")._actions if a.dest == "command").choices["photo"]
    choices = {a.dest: set(a.choices) for a in sub._actions if a.choices}
    text = (REPO_ROOT / "docs" / "photo.md").read_text()
    table = _table_rows(text, "| method (`--method`, `--region`, `--landmarks`) | label |")
    named = {word for row in table for word in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert choices["method"] <= named
    assert named <= choices["method"] | choices["region"] | choices["landmarks"]
    regions = set(re.findall(r"`(\w+)`", text[text.index("Regions:"):text.index("They are built")]))
    assert regions == choices["region"]
    assert {"5", "68", "auto"} == choices["landmarks"] == set(re.findall(r"`--landmarks (\w+)`", text))


@pytest.mark.parametrize("doc", ["README.md", "docs/batch.md", "docs/photo.md", "docs/qa.md"])
def test_python_snippets_import(doc):
    """Every `from DeFacerLib... import ...` line of the doc's Python blocks imports (a renamed API breaks it)."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / doc).read_text(), flags=re.S)
    imports = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
               if line.startswith("from DeFacerLib")]
    assert imports
    result = subprocess.run([sys.executable, "-c", "\n".join(imports)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_sidecar_has_the_keys_the_readme_names(data_dir, tmp_path):
    """A real IXI head through `defacer deface`: the sidecar's name and keys are those the README gives."""
    readme = (REPO_ROOT / "README.md").read_text()
    head = sorted((data_dir / "heads" / "ixi" / "t1").glob("IXI*_T1.nii.gz"))[0]
    out = tmp_path / "head_defaced.nii.gz"
    run = subprocess.run([sys.executable, "-m", "DeFacerLib.cli.main", "deface", str(head), str(out), "-q"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "`head_defaced.nii.gz` → `head_defaced.defacer.json`" in readme
    sidecar = json.loads((tmp_path / "head_defaced.defacer.json").read_text())
    report = sidecar["report"]
    for key in ("features", "protected_voxels_changed", "header_removed", "segmentation.landmarks_mm", "shield_voxels"):
        assert re.search(rf"[`.]{re.escape(key)}\b", readme), key
    assert report["protected_voxels_changed"] == 0
    assert report["header_removed"] == ["NIfTI extension 4 (afni)"]
    landmarks = report["segmentation"]["landmarks_mm"]
    assert set(landmarks) == {"eye_left", "eye_right", "nose_tip", "mouth", "ear_left", "ear_right"}
    assert {point["by"] for point in landmarks.values()} <= {"anatomy", "model"}
    assert {"version", "parameters", "input", "output"} <= set(sidecar)
    assert sidecar["input"]["sha256"] and sidecar["output"]["sha256"]
    assert sidecar["parameters"]["margin_mm"] == 10.0 and report["shield_voxels"] is None



def test_deface_help_shows_the_engine_defaults():
    """`deface --help` names the millimetre defaults the engine uses (they were only in README)."""
    from DeFacerLib.cli.main import build_parser
    from DeFacerLib.deface import removal

    parser = build_parser("deface")
    sub = next(a for a in parser._actions if a.dest == "command").choices["deface"]
    helps = {flag: action.help for action in sub._actions for flag in action.option_strings}
    assert f"(default: {removal.DEFAULT_MARGIN_MM:g})" in helps["--margin-mm"]
    assert f"(default: {removal.DEFAULT_MAX_DEPTH_MM:g}; the ears at most {removal.EARS_MAX_DEPTH_MM:g})" \
        in helps["--max-depth-mm"]
    assert f"(default: {removal.DEFAULT_PROTECT_MARGIN_MM:g};" in helps["--protect-margin-mm"]
    assert f"default: {removal.DEFAULT_SEAL_MM:g}, at least {removal.SEAL_MIN_VOXELS} voxels" in helps["--seal-mm"]
