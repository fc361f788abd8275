"""The IXI heads as a BIDS dataset, defaced by the batch runner through the shipped U-Net
(the automatic path): every file accounted for, no voxel of the reference brain
(DLMUSE parcellation) changed, and with --qa no face found on the defaced fronts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from DeFacerLib.batch import run_batch  # noqa: E402
from DeFacerLib.face.labels import landmark_ellipsoid, load_landmarks  # noqa: E402
from DeFacerLib.io import read_volume  # noqa: E402

LANDMARKS = load_landmarks(Path(__file__).resolve().parents[1] / "scripts" / "training" / "landmarks.json")
# Share of the tissue in each landmark's ellipsoid (face.labels.SHAPES, unclipped, so the ears'
# reaches deep under the pinna) that the batch changed. Measured on the 27 heads: eyes
# 0.934-0.990, nose 0.739 (IXI274) to 1.0, mouth 1.0, ears 0.467-0.983. A batch that removed
# the nose alone, or left the ears, changed more than 1000 voxels and passed before this check.
MIN_CHANGED_NEAR = {"eye_left": 0.9, "eye_right": 0.9, "nose_tip": 0.7, "mouth": 0.95,
                    "ear_left": 0.4, "ear_right": 0.4}


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
        head = read_volume(source / rel)
        before = head.array
        after = read_volume(out / rel).array
        brain = read_volume(labels).array > 0
        changed = before != after
        brain_changed[subject] = int((changed & brain).sum())
        removed[subject] = int(changed.sum())
        tissue = before > 0.1 * np.percentile(before, 99)
        landmarks = LANDMARKS[f"heads/ixi/t1/{(source / rel).resolve().name}"]["landmarks"]  # the link's IXI file
        near = {name: float(changed[landmark_ellipsoid(head, name, point) & tissue].mean())
                for name, point in landmarks.items()}
        assert set(near) == set(MIN_CHANGED_NEAR), (subject, sorted(near))
        assert all(near[name] >= least for name, least in MIN_CHANGED_NEAR.items()), (subject, near)
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


def test_batch_qa_flags_a_face_left_on_the_output(ixi_pairs, tmp_path):
    """The batch's QA (batch.tasks._qa: the output's front render, YuNet) was only ever run on
    defaced heads, where it must find nothing: a QA that never flagged a face passed every test.
    Given an output that kept its face (IXI132 as scanned; YuNet measured 0.927), it says so, in
    the outcome, the report row and the run's closing warning."""
    from DeFacerLib import sharing_warnings
    from DeFacerLib.batch.report import _row
    from DeFacerLib.batch.tasks import BatchConfig, _qa
    from DeFacerLib.qa.recognize import FACE_PRESENT_SCORE

    intact = ixi_pairs[0][0]
    config = BatchConfig(input_root=str(intact.parent), output_root=str(tmp_path / "out"),
                         audit_root=str(tmp_path / "out.audit"), key_file=str(tmp_path / "key"), qa=True)
    outcome = {"id": "sub-01/anat/sub-01_T1w.nii.gz"}
    _qa(config, intact, outcome["id"], outcome)
    assert outcome["qa_face_found"] and outcome["qa_face_score"] >= FACE_PRESENT_SCORE, outcome
    assert (config.meta_root / outcome["qa_picture"]).is_file()
    assert _row(outcome)["qa_face_found"] == "yes"
    summary = {"qa_faces_found": 1, "reports": {"html": "out/.defacer/report.html"}}
    warning = "QA: a face was still found on 1 defaced output(s); see out/.defacer/report.html"
    assert warning in sharing_warnings.for_batch(summary)
