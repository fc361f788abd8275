"""The ear readings (scripts/training/annotate_ears.py): grid readings become concha points on real heads.

The readings were made by eye on the tool's sheets; what is tested here is the geometry that
turns a grid reading into a world point (the view's ray, 2 mm under the skin), and that the
readings cover every held-out ear.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from DeFacerLib.deface import head_mask
from DeFacerLib.io import read_volume
from DeFacerLib.qa import face_direction, skin_surface

TRAINING = Path(__file__).resolve().parents[1] / "scripts" / "training"


def _tool():
    spec = importlib.util.spec_from_file_location("annotate_ears", TRAINING / "annotate_ears.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readings_cover_every_held_out_ear():
    readings = json.loads((TRAINING / "ear_readings.json").read_text())["readings"]
    repeat = json.loads((TRAINING / "ear_readings_repeat.json").read_text())["readings"]
    held_out = json.loads((TRAINING / "split.json").read_text())["validation"]
    for rel in held_out:
        assert set(readings[rel]) == {"ear_left", "ear_right"}, rel
    assert set(repeat) <= set(readings)
    for ears in list(readings.values()) + list(repeat.values()):
        for x_mm, y_mm in ears.values():
            assert 0 <= x_mm <= 110 and 0 <= y_mm <= 110  # inside the 110 mm sheet


def test_a_reading_becomes_a_point_under_the_skin_of_its_ear(data_dir):
    tool = _tool()
    rel = "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"
    readings = json.loads((TRAINING / "ear_readings.json").read_text())
    table = json.loads((TRAINING / "landmarks.json").read_text())["heads"]
    volume = read_volume(data_dir / rel)
    head = head_mask(volume)
    surface = skin_surface(volume, max_points=200_000)
    face = face_direction(volume, surface)
    points = tool.read_points(data_dir, table, {"window": readings["window"], "readings": {rel: readings["readings"][rel]}})
    assert points[rel, "ear_left"][0] > 55 and points[rel, "ear_right"][0] < -55  # LPS: +x is the patient's left
    depth_mm = ndi.distance_transform_edt(head, sampling=volume.spacing_mm)
    for name, grid_mm in readings["readings"][rel].items():
        point = points[rel, name]
        ijk = tuple(np.round(volume.world_to_index(point[None, :])[0]).astype(int))
        assert head[ijk] and depth_mm[ijk] <= 4.0, (name, depth_mm[ijk])  # 2 mm under the skin, +- a voxel
        view = tool.EarView(volume, surface, face, tool.SIDES[name], tool._eyes_mm(table[rel]), **readings["window"])
        pixel = view.camera.project(point[None, :], tool.RENDER_PX, tool.RENDER_PX)[0]
        back_mm = (pixel - [view.x0, view.y0]) / view.scale
        assert np.allclose(back_mm, grid_mm, atol=0.05), (name, back_mm, grid_mm)  # the ray goes through the reading
