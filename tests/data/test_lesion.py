"""The lesion phantom: CT-sized chest scans in int16 HU, small lung lesions at realistic volume ratios, some
cases without any, the same bytes for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from clinix.cli import app
from clinix.data.lesion import FRACTION_RANGE, PADDING_HU, lesion_fraction, make_lesion_case, write_lesion_dataset
from clinix.errors import ClinixError
from clinix.io.dataset import open_dataset
from tests.data.test_brats import digest

CUBE = np.ones((3, 3, 3), dtype=bool)


def lesion_count(label: np.ndarray) -> int:
    return ndimage.label(label, CUBE)[1]


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    first = write_lesion_dataset(tmp_path / "a", cases=2, test_cases=1, size="tiny")
    second = write_lesion_dataset(tmp_path / "b", cases=2, test_cases=1, size="tiny")
    other = write_lesion_dataset(tmp_path / "c", cases=2, test_cases=1, size="tiny", seed=1)
    assert digest(first) == digest(second) != digest(other)


def test_a_default_case_is_a_ct_sized_chest_with_small_lesions_in_air_filled_lungs() -> None:
    image, label, geometry = make_lesion_case(0)
    assert image.shape[1:] == (512, 512) and 40 <= image.shape[0] <= 80
    assert geometry.spacing[0] == 5.0 and 0.6 <= geometry.spacing[1] == geometry.spacing[2] <= 0.8
    assert np.array_equal(image, np.rint(image)) and image.min() >= -1024 and image.max() <= 3071
    assert np.all(image[:, 0, 0] == PADDING_HU)  # outside the field of view: the scanner's padding
    assert np.count_nonzero(image == 0) < 0.01 * image.size  # nothing for crop-to-nonzero to cut
    lung = (image > -950) & (image < -780)
    assert lung.mean() > 0.05  # air-filled lungs fill a good part of the chest
    assert FRACTION_RANGE[0] <= lesion_fraction(label) <= FRACTION_RANGE[1]
    assert 1 <= lesion_count(label) <= 3
    rim = ndimage.binary_dilation(label > 0, CUBE, iterations=2) & (label == 0)
    assert np.median(image[rim]) < np.mean(image[label > 0]) - 150  # a lesion stands out of the lung around it


def test_every_fourth_case_has_no_lesion_and_the_others_one_to_three_at_realistic_ratios() -> None:
    for index in range(12):
        _, label, _ = make_lesion_case(index, size="tiny")
        if index % 4 == 3:
            assert not label.any(), index
        else:
            assert 1 <= lesion_count(label) <= 3, index
            assert FRACTION_RANGE[0] <= lesion_fraction(label) <= FRACTION_RANGE[1], index


def test_lesions_are_solid_like_vessels_or_subsolid_between_vessels_and_lung() -> None:
    medians = []
    for index in range(11):
        image, label, _ = make_lesion_case(index, size="tiny")
        if label.any():
            medians.append(float(np.median(image[label > 0])))
    solid = [m for m in medians if m > -250]  # soft tissue (0-60 HU) blurred with the lung at the edges
    subsolid = [m for m in medians if -750 < m < -300]
    assert len(solid) + len(subsolid) == len(medians) and len(solid) > len(subsolid) > 0


def test_the_cli_writes_a_dataset_that_opens_with_one_ct_channel(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["phantom", str(tmp_path / "l"), "--kind", "lesion", "--size", "tiny", "--cases", "2", "--test-cases", "1"]
    )
    assert result.exit_code == 0, result.output
    dataset = open_dataset(tmp_path / "l")
    assert dataset.num_channels == 1 and len(dataset.cases) == 2
    assert json.loads((tmp_path / "l" / "dataset.json").read_text())["labels"] == {"background": 0, "lesion": 1}


def test_the_decathlon_layout_and_unknown_sizes_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["phantom", str(tmp_path / "m"), "--kind", "lesion", "--layout", "msd"])
    assert result.exit_code == 2 and "--layout msd is written for --kind brats only" in result.output
    with pytest.raises(ClinixError, match="unknown phantom size 'huge'"):
        make_lesion_case(0, size="huge")
