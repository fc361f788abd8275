"""Static checks of the Slicer extension: CMake file lists, the .ui file, DeFacer.json, icon.

These need no Slicer: a file missing from a CMake list would be missing from the extension
package (and only Slicer's build farm would notice), a widget name the module uses but the
.ui lacks would fail only when a radiologist opens the module.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "DeFacer"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "DeFacer.ui"
LIB_RESOURCE_DIRS = ("Resources/Models", "Resources/DicomProfile", "Resources/QA")


def cmake_list(path: Path, variable: str) -> list[str]:
    """Entries of ``set(VARIABLE ...)`` in a CMake file, with ${MODULE_NAME} expanded."""
    text = path.read_text(encoding="utf-8")
    names = dict(re.findall(r"set\((\w+)\s+(\w+)\)", text))
    match = re.search(rf"set\({variable}\s*\n(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found in {path}"
    entries = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [re.sub(r"\$\{(\w+)\}", lambda m: names.get(m.group(1), m.group(0)), e) for e in entries if e]


def files_under(root: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in root.rglob(pattern)
                  if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith("."))


def test_defacerlib_scripts_list_matches_disk():
    listed = cmake_list(REPO / "CMakeLists.txt", "DEFACERLIB_PYTHON_SCRIPTS")
    on_disk = files_under(REPO / "DeFacerLib", "*.py")
    missing, stale = sorted(set(on_disk) - set(listed)), sorted(set(listed) - set(on_disk))
    assert not missing and not stale, (
        f"CMakeLists.txt DEFACERLIB_PYTHON_SCRIPTS: add {missing}, remove {stale}")
    assert len(listed) == len(set(listed)) and len(listed) >= 59


def test_defacerlib_resources_list_matches_disk():
    listed = cmake_list(REPO / "CMakeLists.txt", "DEFACERLIB_PYTHON_RESOURCES")
    on_disk = sorted(f for d in LIB_RESOURCE_DIRS for f in files_under(REPO / d, "*"))
    missing, stale = sorted(set(on_disk) - set(listed)), sorted(set(listed) - set(on_disk))
    assert not missing and not stale, f"CMakeLists.txt DEFACERLIB_PYTHON_RESOURCES: add {missing}, remove {stale}"
    assert "Resources/DicomProfile/confidentiality_profile.json" in listed


def test_module_lists_match_disk():
    cmake = MODULE_DIR / "CMakeLists.txt"
    scripts = cmake_list(cmake, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_list(cmake, "MODULE_PYTHON_RESOURCES")
    on_disk_py = sorted(str(Path(p).relative_to("DeFacer")) for p in files_under(MODULE_DIR, "*.py")
                        if not p.startswith("DeFacer/Testing/"))
    on_disk_res = sorted(str(Path(p).relative_to("DeFacer")) for p in files_under(MODULE_DIR / "Resources", "*"))
    assert sorted(scripts) == on_disk_py
    assert sorted(resources) == on_disk_res == ["Resources/Icons/DeFacer.png", "Resources/UI/DeFacer.ui"]
    text = cmake.read_text()
    assert "slicerMacroBuildScriptedModule(" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    testing = (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()
    for script in re.findall(r"SCRIPT\s+(\S+)\)", testing):
        assert (MODULE_DIR / "Testing" / "Python" / script).is_file(), script


def test_top_level_cmake_is_an_extension():
    text = (REPO / "CMakeLists.txt").read_text()
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf'set\({variable} "[^"]+"\)', text), variable
    assert "find_package(Slicer REQUIRED)" in text and "add_subdirectory(DeFacer)" in text
    assert "ctkMacroCompilePythonScript(" in text and "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR" in text
    # icon and screenshots point at files of this repository
    prefix = "https://raw.githubusercontent.com/DeFacer/SlicerDeFacer/main/"
    urls = re.findall(r'https://raw\.githubusercontent\.com/\S+?(?=[ "])', text)
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith(prefix) and (REPO / url[len(prefix):]).is_file(), url


def test_icons_are_128_pixel_pngs():
    for path in (REPO / "Resources" / "Icons" / "DeFacer.png", MODULE_DIR / "Resources" / "Icons" / "DeFacer.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128), path


# ---- DeFacer.json against the ExtensionsIndex catalog-entry schema (v1.0.2) -----------------
CATALOG_SCHEMA = {  # Slicer/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json, as rules
    "required": ("$schema", "category", "scm_url"),
    "types": {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
              "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str,
              "enabled": bool, "tier": int},
}


def test_catalog_entry_valid():
    raw = (REPO / "DeFacer.json").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n"), "the index wants LF line endings and a final newline"
    assert all(line == line.rstrip() for line in raw.decode().splitlines()), "no trailing whitespace"
    entry = json.loads(raw)
    for key in CATALOG_SCHEMA["required"]:
        assert key in entry, key
    extra = set(entry) - set(CATALOG_SCHEMA["types"])
    assert not extra, f"not allowed by the schema (additionalProperties: false): {extra}"
    for key, value in entry.items():
        assert isinstance(value, CATALOG_SCHEMA["types"][key]) and not (key != "enabled" and isinstance(value, bool)), key
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry.get("scm_type", "git") in ("git", "local") and 1 <= entry.get("tier", 1) <= 5
    assert all(isinstance(item, str) for item in entry.get("build_dependencies", []))
    assert entry["scm_url"].startswith("https://github.com/") and entry["category"] == "Utilities"
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert f'set(EXTENSION_CATEGORY "{entry["category"]}")' in cmake


# ---- the .ui file and the names DeFacer.py uses ---------------------------------------------------
def ui_widgets() -> dict[str, ET.Element]:
    tree = ET.parse(UI_FILE)  # raises on malformed XML
    root = tree.getroot()
    assert root.tag == "ui" and root.findtext("class") == "DeFacer"
    widgets = {w.get("name"): w for w in root.iter("widget")}
    assert len(widgets) == len(list(root.iter("widget"))), "widget names must be unique"
    return widgets


def names_used_by_module() -> set[str]:
    tree = ast.parse((MODULE_DIR / "DeFacer.py").read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui" \
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self":
            used.add(node.attr)
    source = (MODULE_DIR / "DeFacer.py").read_text()
    block = re.search(r"DICOM_OPTION_WIDGETS = \{(.*?)\}", source, re.S).group(1)
    used |= set(re.findall(r'"(\w+CheckBox)"', block))
    return used


def parameter_fields() -> dict[str, str]:
    tree = ast.parse((MODULE_DIR / "DeFacer.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DeFacerParameterNode")
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_ui_has_every_widget_the_module_uses():
    widgets = ui_widgets()
    used = names_used_by_module()
    assert len(used) >= 20
    missing = sorted(used - set(widgets))
    assert not missing, f"DeFacer.py uses widgets the .ui lacks: {missing}"


def test_ui_parameter_names_match_parameter_node():
    widgets = ui_widgets()
    bound = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = name
    fields = parameter_fields()
    assert set(bound) == set(fields), (sorted(set(fields) - set(bound)), sorted(set(bound) - set(fields)))
    kinds = {"QCheckBox": {"bool"}, "ctkSliderWidget": {"Annotated[float, WithinRange(0.0, 30.0)]",
                                                          "Annotated[float, WithinRange(5.0, 60.0)]"},
             "qMRMLNodeComboBox": {"vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode"},
             "ctkPathLineEdit": {"pathlib.Path"}}
    for parameter, widget_name in bound.items():
        assert fields[parameter] in kinds[widgets[widget_name].get("class")], (parameter, widget_name)


def test_ui_mrml_combos_get_the_scene_and_custom_widgets_declared():
    root = ET.parse(UI_FILE).getroot()
    combos = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    wired = {c.findtext("receiver") for c in root.iter("connection")
             if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert combos == wired == {"inputSelector", "labelsSelector", "outputSelector"}
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    qt_own = {"QCheckBox", "QLabel", "QPushButton", "QWidget", "QProgressBar", "QComboBox"}
    used = {w.get("class") for w in root.iter("widget")} - qt_own
    assert used <= declared
    output = next(w for w in root.iter("widget") if w.get("name") == "outputSelector")
    props = {p.get("name"): (p.findtext("bool") or p.findtext("string")) for p in output.findall("property")}
    assert props["noneEnabled"] == "true" and props["noneDisplay"] == "Create new volume"


# ---- imports: the module loads with Slicer's own Python only ------------------------------------------
ALLOWED_TOP_LEVEL = {"__future__", "logging", "os", "pathlib", "typing", "json", "shutil", "tempfile", "importlib",
                     "numpy", "vtk", "slicer", "DeFacerLogicLib", "DeFacerLib"}
LIGHT_DEFACERLIB = {"DeFacerLib.slicer_convert", "DeFacerLib.errors", "DeFacerLib.features", "DeFacerLib.volume"}


@pytest.mark.parametrize("path", ["DeFacer/DeFacer.py", "DeFacer/DeFacerLogicLib/logic.py",
                                  "DeFacer/DeFacerLogicLib/packages.py", "DeFacer/DeFacerLogicLib/__init__.py",
                                  "DeFacerLib/slicer_convert.py"])
def test_module_scope_imports_are_light(path):
    tree = ast.parse((REPO / path).read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module]
        else:
            continue
        for module in modules:
            assert module.split(".")[0] in ALLOWED_TOP_LEVEL, f"{path}: module-scope import of {module}"
            if module.startswith("DeFacerLib"):
                assert module == "DeFacerLib" or module in LIGHT_DEFACERLIB, f"{path}: heavy import {module}"
    if path.startswith("DeFacerLib/"):
        assert not re.search(r"^\s*(import|from)\s+(slicer|qt|ctk)\b", (REPO / path).read_text(), re.M)


def test_the_modules_pip_requirements_are_pyprojects():
    """DeFacerLogicLib/packages.py installs into Slicer's Python what pyproject.toml pins, each
    requirement as written there (its onnxruntime had no pin; the wheel needs >=1.17)."""
    text = (REPO / "pyproject.toml").read_text()
    pinned = set(re.findall(r'"([^"]+)"', text[text.index("\ndependencies = ["):text.index("[project.scripts]")]))
    spec = importlib.util.spec_from_file_location("packages", MODULE_DIR / "DeFacerLogicLib" / "packages.py")
    packages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(packages)
    for group, requirements in packages.REQUIREMENTS.items():
        for _module, requirement in requirements:
            assert requirement in pinned, f"packages.py {group}: {requirement!r} is not as pyproject.toml pins it"


def rewrite_defacerlib_lists() -> None:
    """Rewrite DEFACERLIB_PYTHON_SCRIPTS/RESOURCES in CMakeLists.txt from the files on disk."""
    path = REPO / "CMakeLists.txt"
    text = path.read_text(encoding="utf-8")
    lists = {"DEFACERLIB_PYTHON_SCRIPTS": files_under(REPO / "DeFacerLib", "*.py"),
             "DEFACERLIB_PYTHON_RESOURCES": sorted(f for d in LIB_RESOURCE_DIRS for f in files_under(REPO / d, "*"))}
    for variable, files in lists.items():
        body = "".join(f"  {name}\n" for name in files)
        text = re.sub(rf"set\({variable}\s*\n.*?\n  \)", f"set({variable}\n{body}  )", text, count=1, flags=re.S)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":  # python Testing/test_slicer_static.py  -> refresh the CMake lists
    rewrite_defacerlib_lists()
    print("CMakeLists.txt: DeFacerLib lists rewritten from the files on disk")
