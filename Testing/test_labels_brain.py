"""A label map without a brain label still never cuts the brain: the U-Net's predicted brain
and its frontal guard protect it (deface.workflow._features_of).

Without them only the depth limits stood between a face label's box and the frontal lobe: the
model's own eyes, nose, mouth and ears given as a label map changed 1710 reference-brain voxels
of IXI162 and 1001 of IXI206 (2026-12-06)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from DeFacerLib.deface.pipeline import find_features
from DeFacerLib.deface.workflow import deface_file
from DeFacerLib.features import FEATURES, LABEL_VALUES
from DeFacerLib.io import read_volume


@pytest.mark.parametrize("subject", ["IXI162", "IXI206"])
def test_label_map_without_brain_keeps_the_reference_brain(ixi_pairs, subject, tmp_path):
    t1, brain_path = next(pair for pair in ixi_pairs if pair[0].name.startswith(subject))
    head = read_volume(t1)
    found = find_features(head)
    labels = np.zeros(head.shape3, np.uint8)
    for name in FEATURES:
        labels[found.masks[name]] = LABEL_VALUES[name]
    image = nib.load(t1)
    labels_path = tmp_path / "features_only.nii.gz"
    nib.save(nib.Nifti1Image(labels, image.affine, image.header), labels_path)

    outcome = deface_file(t1, tmp_path / "defaced.nii.gz", labels_path=labels_path)

    changed = nib.load(tmp_path / "defaced.nii.gz").get_fdata() != image.get_fdata()
    reference_brain = nib.load(brain_path).get_fdata() > 0
    assert int(np.count_nonzero(changed & reference_brain)) == 0
    assert changed.sum() > 100_000  # the face did go: 113349 / 118353 voxels changed
    assert set(outcome["features_removed"]) == set(FEATURES)
    protection = outcome["report"]["brain_from_model"]
    assert protection["brain_voxels"] > 100_000 and protection["guard_voxels"] > 50_000
