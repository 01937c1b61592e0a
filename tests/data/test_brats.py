"""The BraTS-like phantom: deterministic, four co-registered MRI contrasts, regions as nnU-Net writes BraTS."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from clinix.data.brats import CONTRAST, ENHANCING, MSD_ORDER, SEQUENCES, make_brats_case, write_brats_dataset
from clinix.errors import ClinixError
from clinix.io.dataset import open_dataset


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(
        b"".join(p.relative_to(folder).as_posix().encode() + p.read_bytes() for p in files)
    ).hexdigest()


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    first = write_brats_dataset(tmp_path / "a", cases=2, test_cases=1, size="tiny")
    second = write_brats_dataset(tmp_path / "b", cases=2, test_cases=1, size="tiny")
    other = write_brats_dataset(tmp_path / "c", cases=2, test_cases=1, size="tiny", seed=1)
    assert digest(first) == digest(second) != digest(other)


def test_a_case_is_a_skull_stripped_brain_in_four_contrasts_with_a_three_part_tumour() -> None:
    image, label, geometry = make_brats_case(3)
    assert image.shape[0] == 4 and image.shape[1:] == label.shape
    assert geometry.spacing == (1.0, 1.0, 1.0)
    brain = image[0] > 0
    assert all(np.array_equal(channel > 0, brain) for channel in image)  # exactly 0 outside, in every channel
    assert 0.2 < brain.mean() < 0.5 and set(np.unique(label)) == {0, 1, 2, 3}
    assert np.all(brain[label > 0])
    rim, rest = label == ENHANCING, brain & (label != ENHANCING)
    contrast = {name: image[c][rim].mean() / image[c][rest].mean() for c, name in enumerate(SEQUENCES)}
    assert contrast["T1ce"] > 1.5 and contrast["T1"] < 1.0  # the enhancing rim shows on T1ce alone
    assert CONTRAST["FLAIR"][3] == max(CONTRAST["FLAIR"])  # edema is brightest on FLAIR


def test_the_nnunet_layout_declares_brats_regions(tmp_path: Path) -> None:
    root = write_brats_dataset(tmp_path / "d", cases=2, test_cases=1, size="tiny")
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
    assert meta["regions_class_order"] == [1, 2, 3]
    dataset = open_dataset(root)
    assert dataset.labels is not None and dataset.labels.is_region_based
    assert [p.name for p in dataset.cases[0].images] == [f"brats_000_000{c}.nii.gz" for c in range(4)]
    assert sorted(p.name for p in (root / "labelsTs").iterdir()) == ["brats_002.nii.gz"]


def test_the_decathlon_layout_stores_one_4d_image_per_case_in_its_own_channel_order(tmp_path: Path) -> None:
    root = write_brats_dataset(tmp_path / "Task01_BrainTumour", cases=2, test_cases=1, size="tiny", layout="msd")
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert meta["labels"] == {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / "BRATS_001.nii.gz")))
    image, _, _ = make_brats_case(0, size="tiny")
    np.testing.assert_allclose(stored, image[[SEQUENCES.index(n) for n in MSD_ORDER]], rtol=1e-6)
    assert open_dataset(root).num_channels == 4


def test_unknown_layouts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ClinixError, match="unknown layout 'kaggle'"):
        write_brats_dataset(tmp_path / "x", layout="kaggle")
