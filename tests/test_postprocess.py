"""Connected-component postprocessing rules (clinix.postprocess) and their JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clinix.errors import ClinixError
from clinix.postprocess import ComponentRule, Postprocessing, load_postprocessing

SPACING = (2.0, 1.0, 0.5)  # 1 mm³ per voxel


def blobs() -> np.ndarray:
    """Label 1: a 4³ cube (64 voxels) and a lone voxel; label 2: a 3³ cube (27) touching the big cube,
    and a 2³ cube (8) apart; diagonal neighbours are one component (26-connectivity)."""
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[1:5, 1:5, 1:5] = 1
    labels[5:8, 1:4, 1:4] = 2
    labels[10, 10, 10] = 1
    labels[9, 9, 9] = 0
    labels[1:3, 9:11, 9:11] = 2
    return labels


def test_nothing_to_do_returns_the_same_array() -> None:
    labels = blobs()
    assert Postprocessing().apply(labels, SPACING) is labels


def test_foreground_largest_keeps_the_component_of_all_labels_together() -> None:
    result = Postprocessing(foreground_largest=True, foreground_labels=(1, 2)).apply(blobs(), SPACING)
    assert np.count_nonzero(result == 1) == 64 and np.count_nonzero(result == 2) == 27
    assert result[10, 10, 10] == 0 and not result[1:3, 9:11, 9:11].any()


def test_largest_per_class_leaves_the_other_classes_alone() -> None:
    rule = ComponentRule("a", (1,), "largest")
    result = Postprocessing(rules=(rule,)).apply(blobs(), SPACING)
    assert np.count_nonzero(result == 1) == 64 and np.count_nonzero(result == 2) == 27 + 8


def test_diagonal_neighbours_are_one_component() -> None:
    labels = np.zeros((5, 5, 5), dtype=np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = labels[4, 4, 4] = 1
    result = Postprocessing(rules=(ComponentRule("a", (1,), "largest"),)).apply(labels, SPACING)
    assert result[1, 1, 1] == result[2, 2, 2] == 1 and result[4, 4, 4] == 0


@pytest.mark.parametrize(("threshold", "left"), [(1.0, 64 + 1), (1.5, 64), (64.0, 64), (64.5, 0)])
def test_min_volume_removes_components_under_the_threshold_in_mm3(threshold: float, left: int) -> None:
    rule = ComponentRule("a", (1,), "min_volume", threshold)
    assert np.count_nonzero(Postprocessing(rules=(rule,)).apply(blobs(), SPACING) == 1) == left


def test_min_volume_counts_millimetres_not_voxels() -> None:
    rule = ComponentRule("b", (2,), "min_volume", 10.0)
    coarse = Postprocessing(rules=(rule,)).apply(blobs(), (2.0, 2.0, 2.0))  # 8 mm³ per voxel
    fine = Postprocessing(rules=(rule,)).apply(blobs(), SPACING)
    assert np.count_nonzero(coarse == 2) == 27 + 8 and np.count_nonzero(fine == 2) == 27


def test_the_json_file_round_trips(tmp_path: Path) -> None:
    rules = (ComponentRule("organ", (1,), "largest"), ComponentRule("lesion", (2, 3), "min_volume", 12.5))
    original = Postprocessing(True, (1, 2, 3), rules, {"cases": 4})
    path = tmp_path / "postprocessing.json"
    path.write_text(json.dumps(original.to_json()))
    loaded = load_postprocessing(path)
    assert loaded == original and loaded.evidence == {"cases": 4}
    assert loaded.describe() == (
        "foreground: largest component only; organ: largest component only; lesion: components under 12.5 mm³ removed"
    )


def test_a_missing_file_means_no_postprocessing(tmp_path: Path) -> None:
    assert load_postprocessing(tmp_path / "postprocessing.json") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format": 2, "rules": []}', "postprocessing format 2; this clinix reads 1"),
        ('{"format": 1, "rules": [{"name": "a", "labels": [1], "keep": "smallest"}], "foreground_largest": false, '
         '"foreground_labels": [1]}', "unknown rule 'smallest'"),
        ('{"format": 1, "rules": [{"name": "a", "labels": [1], "keep": "min_volume", "min_volume_mm3": -1}], '
         '"foreground_largest": false, "foreground_labels": [1]}', "non-negative"),
        ('{"format": 1}', "not a clinix postprocessing file"),
        ("[1, 2]", "not a clinix postprocessing file"),
        ("{not json", "cannot be read as JSON"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_error_naming_it(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "postprocessing.json"
    path.write_text(content)
    with pytest.raises(ClinixError, match=message) as caught:
        load_postprocessing(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)
