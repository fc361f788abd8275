"""Batch runs on a DICOM tree built from the shared series: the Siemens MPRAGE split over two
folders (one series wherever its files lie), the fake-PHI CT, the deid samples (ultrasound,
RGB), the enhanced multi-frame MR, a non-DICOM .nfo and a corrupt file.
"""
from __future__ import annotations

import csv
import json
import hashlib
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("distributed")

from DeFacerLib.batch import run_batch  # noqa: E402
from DeFacerLib.dicom import keyed_uid, load_or_create_key  # noqa: E402

TRIO_FILES = 176
TREE_FILES = TRIO_FILES + 1 + 2 + 9 + 1 + 1  # MPRAGE, .nfo, CT, samples, enhanced, corrupt


def make_dicom_tree(data_dir: Path, root: Path) -> Path:
    dicom = data_dir / "dicom"
    trio = sorted((dicom / "siemens_trio_mprage_1mm").iterdir())
    for index, path in enumerate(trio):  # one series in two folders of a PACS export
        folder = root / ("export_a/mprage" if index < 90 else "export_b/mprage_rest")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path)
    for name, target in (("fake_phi_ct", "ct"), ("deid_samples", "samples"),
                         ("siemens_xa30_enhanced_multiframe_t1", "enhanced")):
        (root / target).mkdir(parents=True)
        for path in sorted((dicom / name).iterdir()):
            (root / target / path.name).symlink_to(path)
    (root / "samples" / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 8)
    return root


@pytest.fixture(scope="module")
def dicom_tree(data_dir, tmp_path_factory):
    return make_dicom_tree(data_dir, tmp_path_factory.mktemp("dicom_tree") / "in")


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".defacer" not in p.parts}


def _report(out: Path) -> dict[str, dict]:
    with open(out / ".defacer" / "report.csv", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def test_scrub_only_tree_mirrors_groups_and_accounts(dicom_tree, tmp_path):
    key_file = tmp_path / "key"
    out = tmp_path / "out"
    summary = run_batch(dicom_tree, out, scrub_only=True, key_file=key_file, workers=2)
    assert summary["layout"] == "dicom"
    assert summary["files"] == TREE_FILES == 190
    assert (summary["written"], summary["skipped"], summary["failed"]) == (188, 1, 1)
    assert summary["files"] == summary["written"] + summary["skipped"] + summary["failed"]
    report = _report(out)
    mprage = [row for name, row in report.items() if name.startswith("export_a/mprage (+1 folders)")]
    assert len(mprage) == 1 and mprage[0]["files"] == str(TRIO_FILES) and mprage[0]["written"] == str(TRIO_FILES)
    assert report["export_a/mprage/00001.dcm.nfo"]["state"] == "skipped"
    assert report["samples/corrupt.dcm"]["state"] == "failed" and "transfer syntax" in report["samples/corrupt.dcm"]["reason"]
    # the output mirrors the input, file for file
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".defacer" not in p.parts}
    expected = {p.relative_to(dicom_tree).as_posix() for p in dicom_tree.rglob("*")
                if p.is_file() and p.name not in ("00001.dcm.nfo", "corrupt.dcm")}
    assert written == expected
    # one series in two folders keeps one (keyed) series UID; PHI is gone
    key, _, _ = load_or_create_key(key_file)
    original = pydicom.dcmread(dicom_tree / "export_a/mprage/00001.dcm", stop_before_pixels=True)
    series = {str(pydicom.dcmread(out / rel, stop_before_pixels=True).SeriesInstanceUID)
              for rel in written if "mprage" in rel}
    assert series == {keyed_uid(key, str(original.SeriesInstanceUID))}
    ct = pydicom.dcmread(out / "ct/ctbrain1.dcm", stop_before_pixels=True)
    assert "SIMPSON" not in str(ct.get("PatientName", "")) and ct.PatientIdentityRemoved == "YES"
    with open(tmp_path / "out.audit" / "uid_mapping.csv", newline="") as handle:
        mapping = {row["id_old"]: row["id_new"] for row in csv.DictReader(handle)}
    assert mapping[str(original.SeriesInstanceUID)] == keyed_uid(key, str(original.SeriesInstanceUID))
    assert not any(str(original.PatientName) in p.read_text(errors="ignore")
                   for p in (out / ".defacer").glob("report.*"))
    # the ultrasound sample shows a name, an MRN and a birth date in its pixels and says so
    # (BurnedInAnnotation YES): published with headers scrubbed, it is named, as `defacer scrub`
    # names it (the batch said nothing of it before)
    assert summary["burned_in_annotation"] == ["samples/GREYSCALE_IMAGE.dcm"]
    assert "1: samples/GREYSCALE_IMAGE.dcm" in (out / ".defacer" / "report.html").read_text()

    # same key -> byte-identical outputs (UIDs, pseudonyms); another key -> other UIDs
    again = tmp_path / "again"
    run_batch(dicom_tree, again, scrub_only=True, key_file=key_file, workers=1)
    assert _digest(again) == _digest(out)
    other = tmp_path / "other"
    run_batch(dicom_tree, other, scrub_only=True, key_file=tmp_path / "key2", workers=1)
    other_series = pydicom.dcmread(other / "export_a/mprage/00001.dcm", stop_before_pixels=True).SeriesInstanceUID
    assert str(other_series) not in series and str(other_series).startswith("2.25.")


@pytest.mark.slow
def test_head_series_are_defaced_and_the_rest_scrubbed(dicom_tree, tmp_path):
    out = tmp_path / "out"
    summary = run_batch(dicom_tree, out, key_file=tmp_path / "key", workers=2, qa=True)
    assert summary["files"] == summary["written"] + summary["skipped"] + summary["failed"] == TREE_FILES
    assert (summary["skipped"], summary["failed"]) == (1, 1)
    report = _report(out)
    mprage = next(row for name, row in report.items() if name.startswith("export_a/mprage (+1 folders)"))
    enhanced = next(row for name, row in report.items() if name.startswith("enhanced ["))
    for row in (mprage, enhanced):
        assert row["action"] == "defaced" and row["state"] == "done", row
        assert int(row["voxels_removed"]) > 1000 and row["protected_voxels_changed"] == "0"
        assert row["qa_face_found"] in ("yes", "no"), row  # QA ran on the defaced output
    ct = next(row for name, row in report.items() if name.startswith("ct ["))
    assert ct["action"] == "scrubbed" and "not defaced" in ct["reason"]
    first = pydicom.dcmread(out / "export_a/mprage/00001.dcm", stop_before_pixels=True)
    assert "113102" in str(first.DeidentificationMethodCodeSequence)
    assert summary["protected_voxels_changed"] == 0
    found = [row["name"] for row in (mprage, enhanced) if row["qa_face_found"] == "yes"]
    assert summary["qa_faces_found"] == len(found)
    assert len(list((out / ".defacer" / "qa").glob("*.front.png"))) == 2
    assert found == [], f"YuNet still finds a face on the defaced front render of {found}"  # issue #5
    # each defaced series' provenance in the audit points where its files are (it named the staging
    # folders under AUDIT/.work/, removed once the item ended)
    records = sorted((tmp_path / "out.audit" / "items").glob("*/defacer.json"))
    assert len(records) == 2
    for record in records:
        provenance = json.loads(record.read_text())
        paths = [value for value in _strings(provenance) if value.startswith("/")]
        assert len(paths) >= 4 and not [p for p in paths if not Path(p).exists() or ".work" in p], paths
        assert (dicom_tree / provenance["input"]["name"]).exists(), provenance["input"]


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def _small_tree(data_dir: Path, root: Path) -> Path:
    for name in ("fake_phi_ct", "deid_samples"):
        (root / name).mkdir(parents=True)
        for path in sorted((data_dir / "dicom" / name).iterdir()):
            (root / name / path.name).symlink_to(path)
    (root / "deid_samples" / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 500)
    return root


def test_existing_cluster_by_scheduler_address(data_dir, tmp_path):
    from distributed import LocalCluster

    source = _small_tree(data_dir, tmp_path / "in")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = run_batch(source, tmp_path / "out", scrub_only=True, key_file=tmp_path / "key",
                            scheduler=cluster.scheduler_address)
    assert (summary["files"], summary["written"], summary["skipped"], summary["failed"]) == (12, 11, 0, 1)


def test_cli_reports_failures_on_one_line_and_resumes(data_dir, tmp_path):
    import subprocess
    import sys

    source = _small_tree(data_dir, tmp_path / "in")
    command = [sys.executable, "-m", "DeFacerLib", "batch", str(source), str(tmp_path / "out"), "--scrub-only",
               "--workers", "1", "--key-file", str(tmp_path / "key")]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 3
    error_lines = [line for line in first.stderr.splitlines() if line.startswith("defacer: error:")]
    assert len(error_lines) == 1 and "1 of 12 file(s) failed" in error_lines[0] and "corrupt.dcm" in error_lines[0]
    assert "12 input files = 11 written + 0 skipped + 1 failed" in first.stdout
    (source / "deid_samples" / "corrupt.dcm").unlink()  # the user removes the bad file and reruns
    second = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    import json

    summary = json.loads(second.stdout)
    assert (summary["files"], summary["written"], summary["failed"], summary["items_done"]) == (11, 11, 0, 10)  # CT: 1 series


def test_plan_for_volumes_and_head_series_rules(tmp_path):
    from DeFacerLib.batch.discover import DEFACE_VOLUME, SKIP, VOLUMES, classify, detect_layout
    from DeFacerLib.batch.tasks import _not_a_head_volume

    for name in ("a.nii.gz", "b.mgz", "c.nhdr", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    files = ["a.nii.gz", "b.mgz", "c.nhdr", "notes.txt"]
    assert detect_layout(tmp_path, files) == VOLUMES
    items, dicom = classify(tmp_path, files, VOLUMES)
    assert dicom == [] and [(i.files[0], i.kind) for i in items] == [
        ("a.nii.gz", DEFACE_VOLUME), ("b.mgz", DEFACE_VOLUME), ("c.nhdr", DEFACE_VOLUME), ("notes.txt", SKIP)]
    mprage = {"modality": "MR", "samples": 1, "frames": 1, "files": 176}
    assert _not_a_head_volume(mprage) == ""
    assert _not_a_head_volume({**mprage, "files": 1, "frames": 96}) == ""  # enhanced multi-frame
    assert "2 slice(s)" in _not_a_head_volume({**mprage, "files": 2})
    assert "RGB" in _not_a_head_volume({**mprage, "samples": 3})
    assert "US" in _not_a_head_volume({**mprage, "modality": "US"})


def test_a_path_that_holds_its_own_phi_is_counted_not_named_in_the_shared_report(data_dir, tmp_path):
    source = tmp_path / "in" / "SIMPSON_HOMER"
    source.mkdir(parents=True)
    (source / "ct.dcm").symlink_to(data_dir / "dicom/fake_phi_ct/ctbrain1.dcm")
    (tmp_path / "in" / "image1.dcm").symlink_to(data_dir / "dicom/deid_samples/image1.dcm")
    summary = run_batch(tmp_path / "in", tmp_path / "out", scrub_only=True, key_file=tmp_path / "key", workers=1)
    assert summary["written"] == 2 and summary["paths_holding_phi_count"] == 1
    html = (tmp_path / "out" / ".defacer" / "report.html").read_text()
    assert "path holds PHI" in html and "from PatientName" not in html
    logs = "".join(p.read_text() for p in (tmp_path / "out.audit").rglob("actions.jsonl"))
    assert "'SIMPSON' from PatientName" in logs  # the private audit says which


def test_a_defaced_series_under_a_path_holding_its_phi_is_counted_too(data_dir, tmp_path):
    """A head series published under a folder named after its patient: defaced (not only
    scrubbed) files are mirrored as is as well, so they are counted the same way; the private
    audit says which file and what, the shared report only how many."""
    folder = tmp_path / "in" / "XAtest_sub-July11"  # the enhanced T1's own PatientName
    folder.mkdir(parents=True)
    for path in sorted((data_dir / "dicom/siemens_xa30_enhanced_multiframe_t1").iterdir()):
        (folder / path.name).symlink_to(path)
    summary = run_batch(tmp_path / "in", tmp_path / "out", key_file=tmp_path / "key", workers=1)
    report = _report(tmp_path / "out")
    assert [row["action"] for row in report.values()] == ["defaced"]
    assert summary["written"] == 1 and summary["paths_holding_phi_count"] == 1
    found = [json.loads(p.read_text()) for p in (tmp_path / "out.audit").rglob("paths_holding_phi.json")]
    assert found == [[{"file": "XAtest_sub-July11/0001.dcm", "holds": "'XAtest_sub-July11' from PatientName"}]]
    html = (tmp_path / "out" / ".defacer" / "report.html").read_text()
    assert "path holds PHI" in html and "from PatientName" not in html


def test_a_leak_check_failure_names_no_phi_in_the_shared_reports(data_dir, tmp_path):
    """A kept attribute holding the patient's name (Manufacturer) fails the leak check, scrubbed
    or defaced; the failed item's reason went to report.csv, report.html, summary.json and the
    manifest, all shared with the data, holding the name itself. They say which attribute holds
    which one's value; the private audit keeps the value."""
    source = tmp_path / "in"
    for folder, original in (("scrubbed", data_dir / "dicom/deid_samples/image1.dcm"),
                             ("defaced", data_dir / "dicom/siemens_xa30_enhanced_multiframe_t1/0001.dcm")):
        ds = pydicom.dcmread(original)
        ds.Manufacturer = str(ds.PatientName).replace("^", " ")
        (source / folder).mkdir(parents=True)
        ds.save_as(source / folder / "0001.dcm")
    names = [str(pydicom.dcmread(source / folder / "0001.dcm").Manufacturer) for folder in ("scrubbed", "defaced")]
    summary = run_batch(source, tmp_path / "out", key_file=tmp_path / "key", workers=1)
    assert summary["failed"] == 2 and summary["written"] == 0
    reasons = [item["reason"] for item in summary["failed_items"]]
    assert all("(Manufacturer) still holds a value from PatientName" in reason for reason in reasons), reasons
    shared = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert {p.name for p in shared} >= {"report.csv", "report.html", "summary.json", "manifest.sqlite"}
    for path in shared:
        data = path.read_bytes()
        assert not any(name.encode() in data for name in names), f"{path.name} holds the patient's name"
    audit = "".join(p.read_text() for p in (tmp_path / "out.audit").rglob("actions.jsonl"))
    assert f"'{names[0]}' from PatientName" in audit  # the private audit says what was found


def test_files_whose_names_take_most_of_the_255_bytes_are_scrubbed(data_dir, tmp_path):
    """Two files named with 249 bytes that differ only at their end: batch wrote each through
    '.NAME.partial', 9 bytes longer than a name may be, and failed them ("File name too long")
    where `defacer scrub` writes them; cut short, the temporaries must stay apart."""
    source = tmp_path / "in" / "us"
    source.mkdir(parents=True)
    originals = {"c" * 243 + f"_{index}.dcm": data_dir / "dicom/deid_samples" / f"image{index}.dcm" for index in (1, 2)}
    for name, original in originals.items():
        (source / name).symlink_to(original)
    summary = run_batch(tmp_path / "in", tmp_path / "out", scrub_only=True, key_file=tmp_path / "key", workers=1)
    assert summary["failed"] == 0 and summary["written"] == 2, summary
    for name, original in originals.items():  # each file's own pixels (headers only are scrubbed)
        assert pydicom.dcmread(tmp_path / "out" / "us" / name).PixelData == pydicom.dcmread(original).PixelData
    assert sorted(p.name for p in (tmp_path / "out" / "us").iterdir()) == sorted(originals)  # no temporary left


def test_a_key_others_can_read_is_said_on_the_console_not_in_the_shared_summary(data_dir, tmp_path):
    """The warning to chmod 600 the key is for whoever runs the batch; summary.json is shared
    with the data, and told its recipients where a key to the pseudonyms lay open."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "image1.dcm").symlink_to(data_dir / "dicom/deid_samples/image1.dcm")
    key = tmp_path / "key"
    load_or_create_key(key)
    key.chmod(0o644)
    summary = run_batch(tmp_path / "in", tmp_path / "out", scrub_only=True, key_file=key, workers=1)
    assert summary["written"] == 1 and summary["key_readable_by_others"] is True
    shared = json.loads((tmp_path / "out" / ".defacer" / "summary.json").read_text())
    assert shared["written"] == 1 and "key_readable_by_others" not in shared
