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
        view = tool.EarView(volume, surface, face, tool.SIDES[name], tool._eyes_mm(rel, table[rel]), **readings["window"])
        pixel = view.camera.project(point[None, :], tool.RENDER_PX, tool.RENDER_PX)[0]
        back_mm = (pixel - [view.x0, view.y0]) / view.scale
        assert np.allclose(back_mm, grid_mm, atol=0.05), (name, back_mm, grid_mm)  # the ray goes through the reading


READERS = ("ear_readings.json", "ear_readings_A.json", "ear_readings_B.json", "ear_readings_C.json")


def test_consensus_is_the_median_of_the_agreeing_majority():
    tool = _tool()
    a, b, c = np.array([60.0, 10.0, -30.0]), np.array([62.0, 12.0, -30.0]), np.array([61.0, 30.0, -30.0])
    point, left_out = tool.consensus({"A": a, "B": b, "C": c})  # C is 18-20 mm from the others
    assert left_out == ["C"] and np.allclose(point, [61.0, 11.0, -30.0])
    point, left_out = tool.consensus({"A": a, "B": b, "C": a + [0.0, 4.0, 0.0]})
    assert left_out == [] and np.allclose(point, [60.0, 12.0, -30.0])  # component-wise median of all three
    assert tool.consensus({"A": a, "B": c})[0] is None  # two readers 20 mm apart: no agreement
    d = np.array([61.0, 11.0, -45.0])
    assert tool.consensus({"A": a, "B": b, "C": c, "D": d})[0] is None  # only two of four agree: no majority


def test_every_ear_has_a_consensus_of_blind_readers():
    """ear_consensus.json holds every ear of the table; three readers read every ear, blind; where
    a majority agreed, its readings lie pairwise within AGREE_MM and the consensus within it."""
    tool = _tool()
    table = json.loads((TRAINING / "landmarks.json").read_text())["heads"]
    agreed = json.loads((TRAINING / "ear_consensus.json").read_text())
    table_ears = {(rel, ear) for rel, entry in table.items() for ear in entry["landmarks"] if ear.startswith("ear_")}
    for name in READERS[1:]:
        readings = json.loads((TRAINING / name).read_text())["readings"]
        assert {(rel, ear) for rel, ears in readings.items() for ear in ears} == table_ears, name
    ears = [(rel, name, e) for rel, head in agreed["ears"].items() for name, e in head.items()]
    assert {(rel, name) for rel, name, _e in ears} == table_ears
    assert sum(e["agreed"] for _r, _n, e in ears) >= 60
    for rel, name, e in ears:
        if e["agreed"]:
            kept = [d for reader, d in e["distance_mm"].items() if reader not in e["left_out"]]
            assert len(kept) >= 2 and max(kept) <= tool.AGREE_MM, (rel, name, e)
    # the table's ear points (the training labels' centres) are another point: ~11 mm away (median)
    assert 8.0 < np.median([e["table_distance_mm"] for _r, _n, e in ears]) < 14.0


def test_the_consensus_is_reproduced_from_the_readings(data_dir):
    """agree() on IXI162's readings (four readers) gives ear_consensus.json's points again, on the real head."""
    tool = _tool()
    rel = "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"
    table = json.loads((TRAINING / "landmarks.json").read_text())["heads"]
    readers = {}
    for name in READERS:
        readings = json.loads((TRAINING / name).read_text())
        readers[name] = {"window": readings.get("window", {}), "readings": {rel: readings["readings"][rel]}}
    agreed = tool.agree(data_dir, table, readers)["ears"][rel]
    stored = json.loads((TRAINING / "ear_consensus.json").read_text())["ears"][rel]
    for name in ("ear_left", "ear_right"):
        assert agreed[name]["agreed"] and len(agreed[name]["readers"]) == 4
        assert np.allclose(agreed[name]["point_mm"], stored[name]["point_mm"]), name


def test_compare_measures_a_reading_against_a_second_one(data_dir, tmp_path, capsys):
    """``compare`` (the mode the first blind reading was measured with) on IXI162's two readings:
    each ear's distance to the table, the model and the second reader, and the medians."""
    tool = _tool()
    rel = "heads/ixi/t1/IXI162-HH-1548_T1.nii.gz"
    files = []
    for name in ("ear_readings.json", "ear_readings_A.json"):
        readings = json.loads((TRAINING / name).read_text())
        path = tmp_path / name
        path.write_text(json.dumps({"window": readings.get("window", {}), "readings": {rel: readings["readings"][rel]}}))
        files.append(path)
    assert tool.main(["compare", str(files[0]), "--second", str(files[1]), "--data", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith(f"{rel} ear_") for line in lines) == 2
    medians = next(line for line in lines if line.startswith("medians (mm), all readings"))
    # the same two readers' points as ``agree`` turns them: 6.2 and 2.0 mm apart, median 4.1 mm
    second = float(medians.split("second reading ")[1].split()[0])
    assert 3.5 < second < 4.7, medians
