"""The IXI heads as a BIDS dataset, defaced by the batch runner through the shipped U-Net
(the automatic path): every file accounted for, no voxel of the reference brain
(DLMUSE parcellation) changed, and with --qa no face found on the defaced fronts.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from DeFacerLib.batch import run_batch  # noqa: E402
from DeFacerLib.io import read_volume  # noqa: E402


def make_ixi_bids(pairs, root: Path) -> dict[str, Path]:
    """sub-<IXI id>/anat/sub-<id>_T1w.nii.gz symlinks + a sidecar with PHI; returns subject -> brain labels."""
    brains = {}
    for t1, labels in pairs:
        subject = "sub-" + t1.name.split("-")[0]
        anat = root / subject / "anat"
        anat.mkdir(parents=True)
        (anat / f"{subject}_T1w.nii.gz").symlink_to(t1)
        (anat / f"{subject}_T1w.json").write_text(json.dumps(
            {"MagneticFieldStrength": 1.5, "InstitutionName": "Hammersmith Hospital", "PatientName": "IXI"}))
        brains[subject] = labels
    (root / "dataset_description.json").write_text(json.dumps({"Name": "IXI T1 (subset)", "BIDSVersion": "1.9.0"}))
    (root / "participants.tsv").write_text("participant_id\n" + "".join(f"{s}\n" for s in sorted(brains)))
    return brains


def _check_run(pairs, tmp_path: Path, workers: int, qa: bool) -> dict:
    source = tmp_path / "bids"
    brains = make_ixi_bids(pairs, source)
    out = tmp_path / "out"
    summary = run_batch(source, out, key_file=tmp_path / "key", workers=workers, qa=qa)
    heads = len(pairs)
    assert summary["files"] == 2 * heads + 2
    assert summary["files"] == summary["written"] + summary["skipped"] + summary["failed"]
    assert summary["failed"] == 0, summary["failed_items"]
    assert summary["defaced"] == heads and summary["protected_voxels_changed"] == 0
    brain_changed = {}
    removed = {}
    for subject, labels in brains.items():
        rel = f"{subject}/anat/{subject}_T1w.nii.gz"
        before = read_volume(source / rel).array
        after = read_volume(out / rel).array
        brain = read_volume(labels).array > 0
        changed = before != after
        brain_changed[subject] = int((changed & brain).sum())
        removed[subject] = int(changed.sum())
        assert json.loads((out / rel.replace(".nii.gz", ".json")).read_text()) == {"MagneticFieldStrength": 1.5}
    assert brain_changed == {subject: 0 for subject in brains}
    assert min(removed.values()) > 1000, removed
    summary["voxels_removed_per_head"] = removed
    return summary


def test_three_ixi_heads_through_the_face_model(ixi_pairs, tmp_path):
    summary = _check_run(ixi_pairs[:3], tmp_path, workers=2, qa=False)
    assert summary["items_done"] == summary["items"] == 3 * 2 + 2


@pytest.mark.slow
def test_all_27_ixi_heads_with_qa(ixi_pairs, tmp_path):
    summary = _check_run(ixi_pairs, tmp_path, workers=2, qa=True)
    assert summary["items"] == 27 * 2 + 2
    html = (tmp_path / "out" / ".defacer" / "report.html").read_text()
    found = summary["qa_faces_found"]
    assert f"QA: faces found after defacing</th><td>{found}<" in html
    assert len(list((tmp_path / "out" / ".defacer" / "qa").glob("*.png"))) == 27
    # the issue-#5 target: a face on at most 5 % of the defaced front renders (1 of 27; measured 1, docs/reid_study.md)
    assert found <= 0.05 * 27, f"YuNet finds a face on {found}/27 defaced front renders"
