from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from clinix.errors import ClinixError
from clinix.io.image import Geometry
from clinix.io.labels import LabelSet
from clinix.plan.model import ChannelNormalization, Plan, ResamplingSettings
from clinix.preprocess import CaseProperties, preprocess_case
from clinix.preprocess.case import plan_digest, sample_class_locations

LABELS = {"background": 0, "organ": 1, "tumour": 2}
CT = ChannelNormalization("CT", "ct", mean=100.0, std=50.0, lower=-1000.0, upper=1000.0)


def make_plan(
    target_spacing: tuple[float, float, float],
    normalization: list[ChannelNormalization] | None = None,
    dataset_root: str = "/nowhere",
    labels: dict[str, Any] | None = None,
) -> Plan:
    """A hand-made plan with only what preprocessing reads filled in meaningfully."""
    normalization = normalization or [CT]
    return Plan(
        dataset_root=dataset_root,
        dataset={"labels": labels or LABELS, "channel_names": {str(i): n.name for i, n in enumerate(normalization)}},
        target_spacing=list(target_spacing),
        median_shape=[1, 1, 1],
        normalization=normalization,
        resampling=ResamplingSettings(),
        patch_size=[8, 8, 8],
        batch_size=2,
        batch_dice=False,
        arch="mambaclinix",
        loss="ce-dice",
        network={},
    )


def test_location_counts_are_all_up_to_ten_thousand_but_at_least_one_percent() -> None:
    seg = np.ones((110, 100, 100), dtype=np.int16)  # 1,100,000 voxels
    seg[0, 0, :50] = 2
    seg[1:3] = 3  # 20,000 voxels
    classes = {"1": [1], "2": [2], "3": [3], "4": [4]}
    locations = sample_class_locations(seg, classes)
    # class 1: 1,079,950 voxels -> ceil(10,799.5) = 10,800 > 10,000; class 2: all 50; class 3: 10,000
    assert {k: len(v) for k, v in locations.items()} == {"1": 10_800, "2": 50, "3": 10_000, "4": 0}
    for key, voxels in locations.items():
        coordinates = np.array(voxels, dtype=int).reshape(-1, 3)
        assert np.all(seg[tuple(coordinates.T)] == int(key))
        assert len({tuple(c) for c in coordinates}) == len(coordinates)  # drawn without replacement
    assert sample_class_locations(seg, classes) == locations


def test_region_datasets_oversample_the_union_of_their_regions() -> None:
    labels = LabelSet.from_json(
        {"labels": {"background": 0, "whole tumour": [1, 2, 3], "core": [2, 3]}, "regions_class_order": [1, 2]}
    )
    assert labels.location_keys() == {"1,2,3": [1, 2, 3]}
    seg = np.array([[[0, 1, 2, 3]]], dtype=np.int16)
    assert sample_class_locations(seg, labels.location_keys()) == {"1,2,3": [[0, 0, 1], [0, 0, 2], [0, 0, 3]]}
    classes = LabelSet.from_json({"labels": {"background": 0, "organ": 1, "tumour": 2}})
    assert classes.location_keys() == {"1": [1], "2": [2]}


def body_case() -> tuple[np.ndarray, np.ndarray, Geometry]:
    """A ``(1, 6, 8, 10)`` CT image: a body of 150 HU at [1,5)x[2,6)x[2,8), labels 1 and 2 inside it."""
    image = np.zeros((1, 6, 8, 10), dtype=np.float32)
    image[0, 1:5, 2:6, 2:8] = 150.0
    label = np.zeros((6, 8, 10), dtype=np.uint8)
    label[2:4, 3:5, 3:7] = 1
    label[2, 3, 3] = 2
    return image, label, Geometry((2.0, 1.0, 1.0), (1.0, 2.0, 3.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def test_preprocess_case_crops_normalises_and_resamples() -> None:
    image, label, geometry = body_case()
    data, seg, properties = preprocess_case(image, label, geometry, make_plan((1.0, 2.0, 1.0)), "c1")
    # crop (4, 4, 6) -> round((2/1·4, 1/2·4, 1/1·6)) = (8, 2, 6)
    assert data.shape == (1, 8, 2, 6) and data.dtype == np.float32
    assert seg is not None and seg.shape == (1, 8, 2, 6) and seg.dtype == np.int16
    np.testing.assert_allclose(data, (150.0 - 100.0) / 50.0, rtol=1e-5)  # a constant body stays constant
    assert properties.crop_box == [[1, 5], [2, 6], [2, 8]]
    assert properties.shape_after_crop == [4, 4, 6]
    assert properties.shape_after_resampling == [8, 2, 6]
    assert properties.original_shape == [6, 8, 10]
    assert properties.geometry == geometry
    assert set(properties.class_locations) == {"1", "2"}
    for key, voxels in properties.class_locations.items():
        assert all(seg[0][tuple(v)] == int(key) for v in voxels)


def test_zscore_with_mask_leaves_outside_the_body_at_zero() -> None:
    image, label, geometry = body_case()
    image[0, 1, 2, 2] = 0.0  # a notch in the corner of the body, open to the outside
    image[0, 3, 3:5, 3:7] = 250.0
    plan = make_plan(geometry.spacing, [ChannelNormalization("MR", "zscore", use_nonzero_mask=True)])
    data, seg, _ = preprocess_case(image, label, geometry, plan, "c1")
    assert seg is not None and seg[0, 0, 0, 0] == -1
    assert data[0, 0, 0, 0] == 0.0
    inside = data[0][seg[0] >= 0]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1.0) < 1e-5


def test_without_label_there_is_no_seg_and_no_locations() -> None:
    image, _, geometry = body_case()
    data, seg, properties = preprocess_case(image, None, geometry, make_plan(geometry.spacing), "c1")
    assert seg is None and properties.class_locations == {}
    assert data.shape == (1, 4, 4, 6)


def test_label_of_another_shape_is_a_user_error_naming_the_case() -> None:
    image, label, geometry = body_case()
    with pytest.raises(ClinixError, match="c7: label shape"):
        preprocess_case(image, label[:-1], geometry, make_plan(geometry.spacing), "c7")


def test_properties_round_trip_through_json() -> None:
    image, label, geometry = body_case()
    _, _, properties = preprocess_case(image, label, geometry, make_plan((1.0, 2.0, 1.0)), "c1")
    text = json.dumps({"clinix_version": "0", **properties.to_json()})
    assert CaseProperties.from_json(json.loads(text)) == properties


def test_plan_digest_changes_with_the_target_spacing_only_when_it_matters() -> None:
    plan = make_plan((1.0, 1.0, 1.0))
    same = make_plan((1.0, 1.0, 1.0))
    same.batch_size = 7  # not a preprocessing setting
    assert plan_digest(same) == plan_digest(plan)
    assert plan_digest(make_plan((1.0, 1.0, 2.0))) != plan_digest(plan)
