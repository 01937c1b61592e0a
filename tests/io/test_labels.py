"""The label model of every stage: classes and regions read from dataset.json, their rules and their uses."""

from __future__ import annotations

import pytest

from clinix.io.labels import LabelSet, parse_label_set

CLASSES = {"background": 0, "liver": 1, "tumour": 2, "ignore": 3}
BRATS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}


def parsed(raw: dict, order: list[int] | None = None, layout: str = "nnunet") -> tuple[LabelSet, list[tuple[str, str]]]:
    labels, findings = parse_label_set(raw, order, layout)
    assert labels is not None
    return labels, findings


def test_classes_train_with_softmax_outputs_one_per_value() -> None:
    labels, findings = parsed(CLASSES)
    assert findings == []
    assert (labels.is_region_based, labels.activation, labels.num_outputs) == (False, "softmax", 3)
    assert labels.output_names == ["background", "liver", "tumour"]
    assert labels.label_values == [0, 1, 2] and labels.ignore_label == 3
    assert labels.location_keys() == {"1": [1], "2": [2]}
    assert labels.regions == []


def test_brats_regions_train_with_one_sigmoid_output_per_region() -> None:
    labels, findings = parsed(BRATS, [1, 2, 3])
    assert findings == []
    assert (labels.is_region_based, labels.activation, labels.num_outputs) == (True, "sigmoid", 3)
    assert labels.output_names == ["whole_tumor", "tumor_core", "enhancing_tumor"]
    assert labels.regions == [(1, 2, 3), (2, 3), (3,)]
    assert labels.label_values == [0, 1, 2, 3]
    assert labels.location_keys() == {"1,2,3": [1, 2, 3]}  # oversampling draws from the union
    assert labels.region_values() == [1, 2, 3]


def test_a_label_set_round_trips_through_the_json_plans_keep() -> None:
    for raw, order in ((CLASSES, None), (BRATS, [1, 2, 3])):
        labels, _ = parsed(raw, order)
        assert LabelSet.from_json(labels.to_json()) == labels


def test_the_decathlon_maps_values_to_names() -> None:
    labels, findings = parsed({"0": "background", "1": "edema", "2": "non-enhancing tumor"}, layout="msd")
    assert findings == [] and labels.foreground == [("edema", (1,)), ("non-enhancing tumor", (2,))]


@pytest.mark.parametrize(
    ("raw", "order", "finding"),
    [
        (BRATS, None, "labels define regions but 'regions_class_order' is missing"),
        (BRATS, [1, 2], "'regions_class_order' has 2 values for 3 regions"),
        (BRATS, [1, 1, 3], "'regions_class_order' writes 1 for region 'tumor_core', which does not contain it"),
        (
            {"background": 0, "whole": [1, 2, 5], "core": [2]},
            [1, 2],
            "regions ['whole'] use values [5]; the label values must be 0..3",
        ),
        ({"background": 0, "liver": 1, "also_liver": 1}, None, "labels 'liver' and 'also_liver' share the value 1"),
        ({"background": 0, "liver": 1, "tumour": 3}, None, "label values must be consecutive from 0, found [0, 1, 3]"),
        ({"liver": 1, "tumour": 2}, None, "label 'background' must exist and be 0"),
        ({"background": 0, "liver": "1"}, None, "label 'liver' has value '1', expected an integer or a list of them"),
        ({"background": 0, "liver": 1, "ignore": 5}, None, "the 'ignore' label must be 2 (max label + 1), not 5"),
        (BRATS, "1,2,3", "'regions_class_order' must be a list of integers, found '1,2,3'"),
    ],
)
def test_every_broken_declaration_is_an_error_that_says_what_to_fix(raw: dict, order, finding: str) -> None:
    _, findings = parse_label_set(raw, order, "nnunet")
    assert ("error", finding) in findings


def test_an_order_without_regions_is_only_a_warning() -> None:
    _, findings = parsed({"background": 0, "liver": 1}, [1])
    assert findings == [("warning", "'regions_class_order' is given but no label is a region; it is not used")]


def test_value_to_name_labels_in_the_nnunet_layout_are_explained() -> None:
    labels, findings = parse_label_set({"0": "background", "1": "liver"}, None, "nnunet")
    assert labels is None
    assert findings == [("error", "'labels' maps values to names (v1 style); write {name: value} instead")]
