"""Which classes are scored: the options, dataset.json labels, regions and the ignore label."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinix.errors import ClinixError, DatasetError
from clinix.io.labels import LabelSet, read_label_set
from clinix.metrics.classes import (
    ClassSpec,
    classes_present,
    parse_labels_option,
    parse_regions_option,
    resolve_classes,
)

BRATS_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}


def _dataset_json(tmp_path, labels, **extra):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": labels, **extra}))
    return path


def test_labels_option_reads_comma_separated_integers():
    assert parse_labels_option("1, 2,3") == (1, 2, 3)


def test_labels_option_refuses_a_name():
    with pytest.raises(ClinixError, match="--labels"):
        parse_labels_option("1,liver")


def test_regions_option_reads_brats_regions():
    assert parse_regions_option("WT=1,2,3;TC=2,3;ET=3") == {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}


def test_regions_option_refuses_a_region_without_labels():
    with pytest.raises(ClinixError, match="TC"):
        parse_regions_option("WT=1,2,3;TC")


def test_nnunet_labels_keep_background_and_the_ignore_value(tmp_path):
    path = _dataset_json(tmp_path, {"background": 0, "liver": 1, "tumour": 2, "ignore": 3})
    expected = LabelSet((("background", (0,)), ("liver", (1,)), ("tumour", (2,))), ignore_label=3)
    assert read_label_set(path) == expected
    assert expected.foreground == [("liver", (1,)), ("tumour", (2,))]


def test_decathlon_labels_map_values_to_names(tmp_path):
    path = _dataset_json(tmp_path, {"0": "background", "1": "liver", "2": "cancer"}, training=[])
    assert read_label_set(path).foreground == [("liver", (1,)), ("cancer", (2,))]


def test_dataset_json_without_labels_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="labels"):
        read_label_set(_dataset_json(tmp_path, {}))


def test_dataset_json_names_its_integer_labels(tmp_path):
    declared = read_label_set(_dataset_json(tmp_path, {"background": 0, "liver": 1, "tumour": 2}))
    assert resolve_classes(None, None, declared, None) == [
        ClassSpec("liver", (1,)),
        ClassSpec("tumour", (2,)),
    ]


def test_labels_option_keeps_dataset_json_names(tmp_path):
    declared = read_label_set(_dataset_json(tmp_path, {"background": 0, "liver": 1, "tumour": 2}))
    assert resolve_classes([2], None, declared, None) == [ClassSpec("tumour", (2,))]


def test_dataset_json_regions_are_scored_alone(tmp_path):
    declared = read_label_set(_dataset_json(tmp_path, BRATS_LABELS, regions_class_order=[1, 2, 3]))
    assert resolve_classes(None, None, declared, None) == [
        ClassSpec("whole_tumor", (1, 2, 3)),
        ClassSpec("tumor_core", (2, 3)),
        ClassSpec("enhancing_tumor", (3,)),
    ]


def test_labels_and_regions_options_score_labels_first():
    classes = resolve_classes([1], {"WT": (1, 2)}, None, None)
    assert classes == [ClassSpec("1", (1,)), ClassSpec("WT", (1, 2))]


def test_nothing_declared_means_discover_the_labels():
    assert resolve_classes(None, None, None, None) is None


def test_a_class_holding_the_ignore_label_is_refused():
    with pytest.raises(ClinixError, match="ignore"):
        resolve_classes(None, {"all": (1, 2, 3)}, None, ignore_label=3)


def test_background_is_never_a_class():
    with pytest.raises(ClinixError, match="background"):
        resolve_classes([0, 1], None, None, None)


def test_classes_present_are_the_nonzero_values_other_than_ignore():
    ref = np.array([[[0, 1, 4]]])
    pred = np.array([[[2, 0, 0]]])
    assert classes_present([ref, pred], ignore_label=4) == [ClassSpec("1", (1,)), ClassSpec("2", (2,))]


def test_classes_of_a_region_dataset_are_its_label_values_named_where_dataset_json_names_them(tmp_path):
    declared = read_label_set(_dataset_json(tmp_path, BRATS_LABELS, regions_class_order=[1, 2, 3]))
    assert resolve_classes(None, None, declared, None, classes_only=True) == [
        ClassSpec("1", (1,)),
        ClassSpec("2", (2,)),
        ClassSpec("enhancing_tumor", (3,)),
    ]
