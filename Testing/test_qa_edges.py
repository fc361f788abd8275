"""The QA verdict and its report under hostile and odd inputs, on a real IXI head.

An intact face must never PASS, however it hides (moved by a flipped array, left in a later
frame); the report must say which pair it judged and show odd names as text; the CLI keeps its
contract (one-line errors, exit codes, nothing left behind) for qa and demo.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from DeFacerLib.cli.qa_command import report_name
from DeFacerLib.deface.pipeline import DefaceParameters
from DeFacerLib.deface.workflow import deface_file
from DeFacerLib.io import read_volume
from DeFacerLib.qa.check import RESIDUAL_FACE_R, VERDICT_VIEWS, check_pair, least_changed_frame, residual_correlation

IXI = "heads/ixi/t1/IXI132-HH-1415_T1.nii.gz"  # PSR: array axis 0 runs anterior-posterior
OWN_SIDE = "defaced head's own face side"


def _defacer(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "DeFacerLib", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def ixi_pair(data_dir, tmp_path_factory):
    """(original path, defaced path): IXI132 defaced by the default pipeline."""
    out = tmp_path_factory.mktemp("defaced") / "IXI132_defaced.nii.gz"
    deface_file(data_dir / IXI, out)
    return data_dir / IXI, out


def test_face_moved_by_a_flipped_array_fails(ixi_pair):
    """An array written flipped front to back under the original header puts the intact face at
    the back of the head: seen from the original's face side it showed no face and PASSed."""
    original = read_volume(ixi_pair[0])
    moved = original.with_array(np.ascontiguousarray(original.array[::-1]))
    check, before, after = check_pair(original, moved, views=VERDICT_VIEWS)
    assert check.verdict == "FAIL"
    standard = {v.view: v for v in check.views if not v.variant}
    own = {v.view: v for v in check.views if v.variant == OWN_SIDE}
    assert set(own) == set(VERDICT_VIEWS)
    assert standard["front"].defaced_face_score == 0.0  # the original's face side: the back of the head
    assert own["front"].defaced_face_score > 0.85 and own["front"].similarity["sface"] > 0.85
    assert f"front ({OWN_SIDE})" in after and len(before) == len(after) == 6


def test_a_frame_left_undefaced_fails(ixi_pair):
    """4D data: only the first frame was rendered, so a frame left undefaced PASSed."""
    original, defaced = (read_volume(p) for p in ixi_pair)
    four_d = defaced.with_array(np.stack([defaced.array, original.array, defaced.array], axis=-1))
    assert least_changed_frame(original, four_d) == 1
    check, _, _ = check_pair(original, four_d, views=VERDICT_VIEWS)
    assert check.verdict == "FAIL"
    frame = {v.view: v for v in check.views if v.variant == "frame 1"}
    assert frame["front"].similarity_forced["sface"] == pytest.approx(1.0, abs=1e-3)
    assert all(not v.match for v in check.views if not v.variant)  # frame 0 is defaced
    # every frame defaced: the standard pass alone, and a PASS
    all_defaced = dataclasses.replace(four_d, array=np.stack([defaced.array] * 3, axis=-1))
    assert least_changed_frame(original, all_defaced) == 0
    # the frame left undefaced but rescaled (every voxel changed, 1.02x): found all the same; it was
    # passed over for the defaced frame, which changes fewer voxels, and the pair PASSed
    rescaled = np.rint(original.array.astype(np.float64) * 1.02).astype(original.array.dtype)
    hidden = dataclasses.replace(four_d, array=np.stack([defaced.array, rescaled, defaced.array], axis=-1))
    assert least_changed_frame(original, hidden) == 1
    check, _, _ = check_pair(original, hidden, views=VERDICT_VIEWS)
    assert check.verdict == "FAIL"


def test_a_face_dimmed_or_noised_in_place_fails(ixi_pair):
    """A face kept at a fifth of its brightness, or buried in noise, falls under the render's skin
    threshold and PASSed, though windowing or a median filter brings it back (front SFace 0.71 on
    the noised copy). Where the defacing changed voxels, they must not still follow the original's:
    r = 0.98-1.00 for these, 0.18-0.47 for DeFacer's own outputs of the 27 IXI heads."""
    original, defaced = (read_volume(p) for p in ixi_pair)
    changed = defaced.array != original.array
    values = original.array.astype(np.float64)
    dimmed = values.copy()
    dimmed[changed] *= 0.2
    noised = values.copy()
    noise = np.random.default_rng(7).normal(0.0, 0.6 * float(values[changed].std()), values.shape)
    noised[changed] += noise[changed]
    as_volume = {name: original.with_array(np.clip(np.rint(v), 0, None).astype(original.array.dtype))
                 for name, v in (("dimmed", dimmed), ("noised", noised))}
    own = residual_correlation(original, defaced)
    assert own is not None and own < 0.5
    for name, volume in as_volume.items():
        assert residual_correlation(original, volume) >= RESIDUAL_FACE_R, name
    check, _, _ = check_pair(original, as_volume["dimmed"], views=VERDICT_VIEWS)
    assert check.verdict == "FAIL"
    assert any("still follow the original" in reason for reason in check.reasons), check.reasons


def test_a_face_left_by_eyes_only_defacing_is_warned_of(ixi_pair, tmp_path):
    """With the eyes alone removed, IXI132's nose, mouth and chin stay plain to a person, yet no
    recogniser matches the defaced front to the original at the calibrated thresholds (SFace
    0.50 against 0.594): the verdict is PASS, as the pair check defines it, but the report warns
    that a face is still detected there. DeFacer's default output draws no such warning."""
    out = tmp_path / "eyes_only.nii.gz"
    deface_file(ixi_pair[0], out, parameters=DefaceParameters(features=("eyes",)))
    original, eyes_only, defaced = (read_volume(p) for p in (ixi_pair[0], out, ixi_pair[1]))
    check, _, _ = check_pair(original, eyes_only, views=VERDICT_VIEWS)
    front = next(v for v in check.views if v.view == "front" and not v.variant)
    assert front.defaced_face_score > 0.85
    assert check.warnings and check.warnings[0].startswith("front: a face is still detected")
    default, _, _ = check_pair(original, defaced, views=VERDICT_VIEWS)
    assert default.verdict == "PASS" and default.warnings == []


def test_ears_only_defacing_fails(ixi_pair, tmp_path):
    ears = tmp_path / "ears.nii.gz"
    deface_file(ixi_pair[0], ears, parameters=DefaceParameters(features=("ears",)))
    check, _, _ = check_pair(read_volume(ixi_pair[0]), read_volume(ears), views=VERDICT_VIEWS)
    assert check.verdict == "FAIL"
    assert all(v.match and v.similarity_forced["sface"] > 0.9 for v in check.views)


def test_report_of_an_odd_name_in_an_odd_folder(ixi_pair, tmp_path):
    """Markup-like "[red]"/"[/x]" in a path crashed the console line (exit 1 after the report)
    or vanished from it; HTML special characters must be text in the page, which is
    self-contained, names the pair judged and agrees with the JSON and the exit code."""
    folder = tmp_path / "<script>alert(1)<"  # with the file's name below, the path reads "...</script>..."
    folder.mkdir()
    odd = folder / "script> sub 01 [red] é.nii.gz"
    shutil.copy(ixi_pair[1], odd)
    out = tmp_path / "qa [/x]"
    result = _defacer("qa", ixi_pair[0], odd, "--out", out)
    assert result.returncode == 0, result.stderr
    name = "script> sub 01 [red] é"
    html_path, json_path = out / f"{name}_report.html", out / f"{name}_report.json"
    assert "".join(f"report: {html_path}".split()) in "".join(result.stdout.split())  # rich wraps long lines
    page = html_path.read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; sub 01 [red] é.nii.gz</li>" in page
    assert "<title>DeFacer QA: script&gt; sub 01 [red] é</title>" in page
    assert not re.search(r"""(src|href)=['"](?!data:image/png;base64,)|url\(|https?://""", page)
    assert page.count("data:image/png;base64,") == 10
    assert page.count("ORIGINAL (identifying)") >= 5
    report = json.loads(json_path.read_text())
    assert report["verdict"] == "PASS" and ">PASS</p>" in page
    assert report["inputs"] == {"original": str(ixi_pair[0]), "defaced": str(odd)}
    forced = [v["similarity_forced"]["sface"] for v in report["views"] if v["view"] in VERDICT_VIEWS]
    assert len(forced) == 3 and max(forced) < 0.55


def test_out_inside_an_input_folder_is_refused(data_dir, tmp_path):
    """A report folder inside a DICOM series folder changes that input (and inside the defaced
    one, ships the original face with the data to share)."""
    series = tmp_path / "series"
    shutil.copytree(data_dir / "dicom/siemens_xa30_enhanced_multiframe_t1", series)
    before = sorted(p.name for p in series.iterdir())
    result = _defacer("qa", series, series, "--out", series / "qa")
    assert result.returncode == 4 and result.stderr.count("\n") == 1
    assert "inside the input folder" in result.stderr
    assert sorted(p.name for p in series.iterdir()) == before


def test_unmakeable_out_and_path_like_names_are_refused_before_the_work(ixi_pair, tmp_path):
    result = _defacer("qa", ixi_pair[0], ixi_pair[1], "--out", "/proc/defacer_qa_test")
    assert result.returncode == 4 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    for name in ("../escaped", "a/b", ".."):
        result = _defacer("qa", ixi_pair[0], ixi_pair[1], "--out", tmp_path / "qa", "--name", name)
        assert result.returncode == 2, (name, result.stderr)
    assert not (tmp_path / "qa").exists() and not list(tmp_path.glob("escaped*"))


@pytest.mark.parametrize("blocked", ["sub_report.html", "sub_report.json"])
def test_a_report_file_that_cannot_be_written_leaves_no_partial_report(ixi_pair, tmp_path, blocked):
    """A folder where a report file goes ended the run as an internal error (exit 1), the
    picture of the original face and the JSON verdict left without their page."""
    out = tmp_path / "qa"
    (out / blocked).mkdir(parents=True)
    result = _defacer("qa", ixi_pair[0], ixi_pair[1], "--out", out, "--name", "sub")
    assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr
    assert "internal error" not in result.stderr and blocked in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [blocked]  # nothing else: no picture, JSON or page


def test_pictures_of_the_original_face_are_private(ixi_pair, tmp_path):
    """The page and the PNG show the original, identifying face, yet were written with the
    user's umask (0644: every user of a shared server could open them), where the audit's
    mappings of mere IDs are 0600. deface --qa's picture is the same kind."""
    import os
    import stat

    assert _defacer("qa", ixi_pair[0], ixi_pair[1], "--out", tmp_path / "qa", "--name", "sub").returncode == 0
    deface_file(ixi_pair[0], tmp_path / "out.nii.gz", qa_dir=tmp_path / "deface_qa")
    modes = {path.name: stat.S_IMODE(os.stat(path).st_mode)
             for path in [*(tmp_path / "qa").iterdir(), *(tmp_path / "deface_qa").iterdir()]}
    del modes["sub_report.json"]  # numbers only: the user's usual mode
    assert modes == {"sub_report.html": 0o600, "sub_before_after.png": 0o600, "out_before_after.png": 0o600}, modes


def test_the_report_gives_the_threshold_of_every_match_it_shows(ixi_pair, tmp_path):
    """A defaced IXI132 PASSes, yet its page showed "match" on the left and right views (reported
    only), whose thresholds it did not give: only the verdict views' were listed."""
    assert _defacer("qa", ixi_pair[0], ixi_pair[1], "--out", tmp_path, "--name", "sub").returncode == 0
    report = json.loads((tmp_path / "sub_report.json").read_text())
    page = (tmp_path / "sub_report.html").read_text()
    matched = {view["view"] for view in report["views"] if view["match"]}
    assert report["verdict"] == "PASS" and matched and not matched & set(VERDICT_VIEWS)
    listed = "; ".join(report["thresholds"].values())
    for view in matched:
        assert f"{view}: SFace cosine similarity &gt;= " in page and f"{view}: SFace" in listed, view


def test_failed_run_leaves_no_report_folder(ixi_pair, tmp_path):
    result = _defacer("qa", ixi_pair[0], tmp_path / "missing.nii.gz", "--out", tmp_path / "new" / "qa")
    assert result.returncode == 3
    assert not (tmp_path / "new").exists()


def test_default_report_names_keep_dotted_stems():
    """A name cut at the first dot gave every UID-named DICOM folder the report name "1": each
    run replaced the last one's report."""
    assert report_name(None, "/data/1.3.12.2.1107.5.2.32") == "1.3.12.2.1107.5.2.32"
    assert report_name(None, "/data/1.3.12.2.1107.5.2.33/") == "1.3.12.2.1107.5.2.33"
    assert report_name(None, "sub-01_acq.fast_T1w.nii.gz") == "sub-01_acq.fast_T1w"
    assert report_name(None, "head.MGZ") == "head"
    assert report_name(None, ".hidden.nii.gz") == ".hidden"
    assert report_name("sub-01", "x.nii.gz") == "sub-01"


def test_demo_twice_and_in_bad_places(tmp_path):
    """A "[/x]" in --out crashed the demo (exit 1) half way, leaving one head's outputs; a file
    as --out or an unmakeable one was an internal error; a run stopped by an existing output
    left the outputs it had written."""
    out = tmp_path / "demo [/x]"
    first = _defacer("demo", "--out", out)
    assert first.returncode == 0, first.stderr
    assert "".join(f"QA picture: {out}/qa/phantom_ct_defaced_before_after.png".split()) in "".join(first.stdout.split())
    assert len(list(out.iterdir())) == 9 and len(list((out / "qa").iterdir())) == 2
    again = _defacer("demo", "--out", out, "--no-qa")
    assert again.returncode == 4 and "exists; pass --overwrite" in again.stderr
    assert _defacer("demo", "--out", out, "--no-qa", "-q", "--overwrite").returncode == 0

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for place in (a_file, "/proc/defacer_demo_test"):
        result = _defacer("demo", "--out", place)
        assert result.returncode == 4 and result.stderr.count("\n") == 1, result.stderr

    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "phantom_ct.nii.gz").write_text("earlier work")
    result = _defacer("demo", "--out", stopped, "-q")
    assert result.returncode == 4
    assert sorted(p.name for p in stopped.iterdir()) == ["phantom_ct.nii.gz"]


def test_a_matched_face_is_not_also_called_unmatched(ixi_pairs):
    """An undefaced copy FAILs because its front still matches the original; its warning said
    "the recognisers do not match it to the original" beside that reason (and -q now keeps it)."""
    from DeFacerLib.io import read_volume
    from DeFacerLib.qa.check import check_pair

    original = read_volume(ixi_pairs[0][0])
    check = check_pair(original, original)[0]
    assert check.verdict == "FAIL" and any(r.startswith("front:") for r in check.reasons), check.reasons
    assert not any("do not match it to the original" in w for w in check.warnings), check.warnings


def test_side_views_alone_are_refused_not_passed(data_dir):
    """check_pair(views=("left", "right")) PASSed IXI132's intact face against itself: the
    side views are reported only, so with no verdict view nothing could FAIL."""
    from DeFacerLib.errors import UsageError

    head = read_volume(data_dir / IXI)
    with pytest.raises(UsageError, match="none of the verdict's"):
        check_pair(head, head, views=("left", "right"))
    check, _, _ = check_pair(head, head, views=("front", "left"))
    assert check.verdict == "FAIL" and check.reasons[0].startswith("front: the defaced face still matches")
