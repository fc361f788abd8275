#!/usr/bin/env python3
"""Render docs/images/slicer_module_before_after.png: what the Slicer module's 3D view shows.

    .venv-slicer/bin/python scripts/render_slicer_figure.py [--out PATH]

3D Slicer cannot run on the machines this project is built on, so the picture in
docs/slicer.md is not a screenshot: it is this offscreen VTK render of the nodes the module's
real Logic (DeFacerLogic, on real MRML nodes from the slicer-core wheel) puts in the scene for
the synthetic phantom. Left: the input's skin with the feature ROIs ("Show feature boxes") and,
dashed, the whole-face region the removal also cuts (report["features"]["face"]; the module
shows no ROI for it). Right: the skin of "Defaced volume 1". The script exists so that the
picture can be remade whenever the removal changes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DeFacer"))
sys.path.insert(0, str(REPO))

SIZE = (640, 1200)  # rows, columns
# Slicer's default 3D view background (top, bottom) and its usual markups colours per feature.
BACKGROUND = ((0.757, 0.765, 0.910), (0.455, 0.471, 0.745))
COLOURS = {"eyes": (0.15, 0.35, 1.0), "nose": (0.0, 0.7, 0.15), "mouth": (1.0, 0.8, 0.0), "ears": (0.9, 0.1, 0.9)}
FACE_COLOUR = (0.85, 0.05, 0.05)
CAPTION = ("Offscreen VTK render of the DeFacer module's 3D view content (synthetic phantom)"
           " - not a screenshot of 3D Slicer")


def box_corners(centre, size, axes) -> np.ndarray:
    """The 8 corners (RAS) of an oriented box; ``axes`` columns are its unit axes."""
    signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    return np.asarray(centre) + (signs * np.asarray(size)) @ np.asarray(axes).T


def box_edges(corners: np.ndarray, dash_mm: float | None = None):
    """The box's 12 edges as vtkPolyData lines, cut into dashes of ``dash_mm`` when given."""
    import vtk

    points, lines = vtk.vtkPoints(), vtk.vtkCellArray()
    for a in range(8):
        for b in range(a + 1, 8):
            if bin(a ^ b).count("1") != 1:  # corners differing in one sign share an edge
                continue
            length = np.linalg.norm(corners[b] - corners[a])
            steps = max(1, int(length // dash_mm)) if dash_mm else 1
            for n in range(0, steps, 2 if dash_mm else 1):
                ends = [corners[a] + (corners[b] - corners[a]) * t / steps for t in (n, min(n + 1, steps))]
                lines.InsertNextCell(2, [points.InsertNextPoint(*end) for end in ends])
    edges = vtk.vtkPolyData()
    edges.SetPoints(points)
    edges.SetLines(lines)
    return edges


def actor(polydata, colour, opacity=1.0, line_width=None):
    import vtk

    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(polydata)
    mapper.ScalarVisibilityOff()
    result = vtk.vtkActor()
    result.SetMapper(mapper)
    result.GetProperty().SetColor(*colour)
    result.GetProperty().SetOpacity(opacity)
    if line_width:
        result.GetProperty().SetLineWidth(line_width)
        result.GetProperty().LightingOff()
    return result


def box_actors(corners, colour, dash_mm=None) -> list:
    """Slicer-like ROI: coloured edges over a faint fill (no fill for the dashed face box)."""
    import vtk

    actors = [actor(box_edges(corners, dash_mm), colour, line_width=3)]
    if dash_mm is None:
        hull = vtk.vtkPoints()
        for corner in corners:
            hull.InsertNextPoint(*corner)
        fill = vtk.vtkDelaunay3D()  # the convex hull of 8 corners: the box's faces
        fill.SetInputData(vtk.vtkPolyData())
        fill.GetInput().SetPoints(hull)
        surface = vtk.vtkDataSetSurfaceFilter()
        surface.SetInputConnection(fill.GetOutputPort())
        surface.Update()
        actors.append(actor(surface.GetOutput(), colour, opacity=0.15))
    return actors


def text(renderer, string, x, y, colour=(1, 1, 1), size=18, bold=True):
    import vtk

    label = vtk.vtkTextActor()
    label.SetInput(string)
    label.SetDisplayPosition(int(x), int(y))
    prop = label.GetTextProperty()
    prop.SetFontSize(size)
    prop.SetColor(*colour)
    prop.SetBold(bold)
    prop.SetShadow(True)
    renderer.AddViewProp(label)
    return label


def build_scene():
    """Phantom -> MRML nodes -> the module's Logic: (before skin, after skin, ROI boxes, face box)."""
    import slicer

    from DeFacerLib import slicer_convert
    from DeFacerLib.phantom import make_phantom
    from DeFacerLogicLib.logic import ATTR_FEATURE, DeFacerLogic, matrix_to_numpy

    logic = DeFacerLogic(slicer.vtkMRMLScene())
    volume, labels = make_phantom(modality="MR")
    node = logic.node_from_volume(volume, "Phantom head")
    labels_node = logic.node_from_volume(volume.label_map(labels), "Phantom labels",
                                         nodeClass="vtkMRMLLabelMapVolumeNode")
    output, report = logic.deface(node, labelsNode=labels_node)
    rois = []
    for roi in logic.feature_rois(node, report):
        matrix = matrix_to_numpy(roi.GetObjectToWorldMatrix())
        size, centre = [0.0] * 3, [0.0] * 3
        roi.GetSizeWorld(size)
        roi.GetCenterWorld(centre)
        axes = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
        rois.append((roi.GetAttribute(ATTR_FEATURE), box_corners(centre, size, axes)))
    face = report["features"].get("face")
    face_box = None
    if face and face.get("present"):
        face_box = box_corners(*slicer_convert.index_box_to_roi(volume, face["box_index_min"], face["box_index_max"]))
    before = logic.skin_model(node, "DeFacer skin before").GetPolyData()
    after = logic.skin_model(output, "DeFacer skin after").GetPolyData()
    return before, after, rois, face_box, output.GetName(), volume


def render(out: Path) -> Path:
    import vtk

    from DeFacerLib.io.atomic import atomic_path
    from DeFacerLib.qa.render import SKIN_RGB, _make_window, face_direction, quiet_vtk, view_directions

    before, after, rois, face_box, output_name, volume = build_scene()
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    # between the front and the patient's left, a little from above (LPS -> RAS: flip x and y)
    views = view_directions(face_direction(volume))
    toward = lps_to_ras * (views["front"] + 0.5 * views["left"] + np.array([0.0, 0.0, 0.3]))
    toward /= np.linalg.norm(toward)

    window = _make_window(SIZE)
    with quiet_vtk():
        window.SetNumberOfLayers(2)
        camera = vtk.vtkCamera()
        panels = []
        for number, skin in enumerate((before, after)):
            renderer = vtk.vtkRenderer()
            renderer.SetViewport(0.5 * number, 0.0, 0.5 * (number + 1), 1.0)
            renderer.GradientBackgroundOn()
            renderer.SetBackground(*BACKGROUND[1])
            renderer.SetBackground2(*BACKGROUND[0])
            renderer.SetActiveCamera(camera)
            renderer.AddActor(actor(skin, SKIN_RGB))
            window.AddRenderer(renderer)
            panels.append(renderer)
        for feature, corners in rois:
            for item in box_actors(corners, COLOURS[feature]):
                panels[0].AddActor(item)
        if face_box is not None:
            for item in box_actors(face_box, FACE_COLOUR, dash_mm=6.0):
                panels[0].AddActor(item)

        centre = np.mean(np.array(before.GetBounds()).reshape(3, 2), axis=1)
        camera.SetFocalPoint(*centre)
        camera.SetPosition(*(centre + 800.0 * toward))
        camera.SetViewUp(0.0, 0.0, 1.0)
        camera.SetViewAngle(30.0)
        panels[0].ResetCamera()
        camera.Zoom(1.1)
        for renderer in panels:
            renderer.ResetCameraClippingRange()

        overlay = vtk.vtkRenderer()  # titles, legend and caption over both panels
        overlay.SetLayer(1)
        overlay.InteractiveOff()
        window.AddRenderer(overlay)
        height, width = SIZE
        text(overlay, "Before: feature boxes as ROIs (adjustable)", 18, height - 40)
        text(overlay, f"After: '{output_name}'", width / 2 + 18, height - 40)
        x = 18
        for feature in COLOURS:
            if any(name == feature for name, _ in rois):
                text(overlay, feature, x, height - 68, COLOURS[feature], size=17)
                x += 10 * len(feature) + 24
        if face_box is not None:
            text(overlay, "- - whole face (removed too; not an ROI)", x, height - 68, FACE_COLOUR, size=17)
        text(overlay, CAPTION, 16, 16, size=16)

        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        writer = vtk.vtkPNGWriter()
        writer.SetInputConnection(grab.GetOutputPort())
        with atomic_path(out) as temporary:
            writer.SetFileName(str(temporary))
            writer.Write()
        window.Finalize()
    return out

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs/images/slicer_module_before_after.png")
    print(render(parser.parse_args(argv).out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
