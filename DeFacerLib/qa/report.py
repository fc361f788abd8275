"""The QA report of one original/defaced pair: a self-contained HTML page, JSON and PNGs."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from DeFacerLib.errors import OutputError
from DeFacerLib.io.atomic import atomic_paths, check_name_fits, os_error_reason
from DeFacerLib.qa.check import VERDICT_VIEWS, RiskCheck
from DeFacerLib.qa.figure import before_after_figure


# The QA pictures render the undefaced head too: its face identifies the patient.
# What a FAIL asks of the user: the one remedy measured to close what the default leaves (the
# shield passed qa on all 27 IXI heads and on niivue_T2w, whose default copy fails; docs/qa.md).
FAIL_ADVICE = ("do not share this copy; `defacer deface --shield` also closes the front of the head with "
               "featureless tissue: deface the original with it and check that copy")
ORIGINAL_FACE_NOTICE = ("this report shows renders of the original, undefaced head, whose face identifies the "
                        "patient: keep it with the original data and share only the defaced images")


def _png_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def report_paths(out_dir, name: str) -> dict[str, Path]:
    """The files write_report writes for ``name`` in ``out_dir``: {"html", "json", "figure"}."""
    out_dir = Path(out_dir)
    return {"html": out_dir / f"{name}_report.html", "json": out_dir / f"{name}_report.json",
            "figure": out_dir / f"{name}_before_after.png"}


def check_report_names(out_dir, name: str) -> None:
    """Refuse (OutputError), before the renders, a report whose file names are longer than the
    file system allows: a defaced file or --name of 240-255 bytes fitted, NAME_before_after.png
    did not, and the run ended in an internal error (OSError) after the face recognition."""
    for path in report_paths(out_dir, name).values():
        check_name_fits(path, "QA report file")


def write_report(check: RiskCheck, before: dict, after: dict, out_dir, name: str = "qa",
                 inputs: dict[str, str] | None = None) -> dict[str, str]:
    """Write NAME_report.html (images embedded), NAME_report.json and NAME_before_after.png.
    ``inputs`` ({"original": path, "defaced": path}) names the pair judged, in both reports."""
    out_dir = Path(out_dir)
    check_report_names(out_dir, name)  # `defacer qa` checked them before the work; a caller of the API may not have
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # root passes os.access checks on /proc, read-only mounts
        raise OutputError(f"cannot make the report folder {out_dir}: {error.strerror or error}") from None
    paths = report_paths(out_dir, name)
    figure, json_path, html_path = paths["figure"], paths["json"], paths["html"]
    blocked = [path for path in (figure, json_path, html_path) if path.exists() and not path.is_file()]
    if blocked:
        raise OutputError(f"cannot write the QA report: {blocked[0]} exists and is not a file; remove it or choose "
                          "another report folder or name")
    data = check.to_dict()
    if inputs:
        data = {"inputs": dict(inputs), **data}
    page = _page(check, before, after, name, inputs)
    # all three or none, and an earlier report in the folder stays whole until the new one is: the
    # pages are moved into place only once the picture is written (removing the new files of a
    # failed run also took the earlier run's picture and JSON with them)
    try:
        # the page embeds the original face: 0600
        with atomic_paths([json_path, html_path], private=(html_path,)) as (json_temp, html_temp):
            json_temp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
            html_temp.write_text(page, encoding="utf-8")
            # last: it is moved into place at once, and the pages follow it as the stack closes
            before_after_figure(before, after, figure, title=f"{name}: ORIGINAL, identifying face (top) and defaced (bottom)")
    except OSError as error:
        raise OutputError(f"cannot write the QA report in {out_dir}: {os_error_reason(error)}") from None
    return {"html": str(html_path), "json": str(json_path), "figure": str(figure)}


def _page(check: RiskCheck, before: dict, after: dict, name: str, inputs: dict[str, str] | None) -> str:
    """The self-contained HTML page: every value escaped, the renders embedded as data URIs."""
    colour = "#1a7f37" if check.verdict == "PASS" else "#b42318"
    rows = []
    for view in check.views:
        rows.append(
            "<tr>" + "".join(f"<td>{cell}</td>" for cell in (
                html.escape(view.label) + ("" if view.view in VERDICT_VIEWS else " (reported only)"),
                _cell(view.original_face_score), _cell(view.defaced_face_score),
                f"{view.original_dlib_faces} / {view.defaced_dlib_faces}", view.landmarks_found,
                _cell(view.similarity.get("sface")), _cell(view.similarity.get("dlib")),
                _cell(view.similarity_forced.get("sface")), _cell(view.similarity_forced.get("dlib")),
                "<b>match</b>" if view.match else "no match",
            )) + "</tr>"
        )
    images = "".join(
        f"<figure><img src='{_png_data_uri(before[v])}' width=200 alt='ORIGINAL (identifying): {html.escape(v)}'>"
        f"<img src='{_png_data_uri(after[v])}' width=200 alt='defaced: {html.escape(v)}'>"
        f"<figcaption>{html.escape(v)}: <b>ORIGINAL (identifying)</b> left | defaced right</figcaption></figure>"
        for v in before
    )
    pair = "".join(f"<li>{html.escape(role)}: {html.escape(str(path))}</li>" for role, path in (inputs or {}).items())
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in check.reasons) or "<li>no facial view matches</li>"
    advice = "" if check.verdict == "PASS" else f"<p><b>What to do:</b> {html.escape(FAIL_ADVICE)}</p>"
    if check.warnings:
        advice += "<p><b>Warning:</b></p><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in check.warnings) + "</ul>"
    thresholds = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in check.thresholds.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>DeFacer QA: {html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}figure{{display:inline-block;margin:6px}}
.verdict{{font-size:2em;color:{colour};font-weight:bold}}</style></head><body>
<h1>Re-identification check: {html.escape(name)}</h1>
<p style="border:2px solid #b42318;padding:6px 10px"><b>Private:</b> {html.escape(ORIGINAL_FACE_NOTICE)}</p>
<ul>{pair}</ul>
<p class="verdict">{check.verdict}</p><ul>{reasons}</ul>{advice}
<table><tr><th>view</th><th>YuNet score original</th><th>YuNet score defaced</th><th>dlib faces orig / defaced</th>
<th>landmarks (defaced)</th><th>SFace similarity</th><th>dlib distance</th><th>SFace, cut at original face</th>
<th>dlib, cut at original face</th><th>result</th></tr>{''.join(rows)}</table>
<p>Both heads rendered as {html.escape(check.rendered_as or "?")}.</p>
<h2>Thresholds</h2><ul>{thresholds}</ul><h2>Renders</h2>{images}
<p>Made by DeFacer. Similarities compare each defaced render with the original render of the same view.</p>
</body></html>"""
