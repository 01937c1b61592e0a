from __future__ import annotations

import json
import math

import numpy as np

from clinix.data.phantom import make_phantom_case
from clinix.io.image import Geometry
from clinix.preprocess import CaseProperties, preprocess_case, restore_label_map, restore_probabilities
from tests.preprocess.test_case import make_plan

ANGLE = math.radians(30.0)
OBLIQUE = Geometry(
    (3.5, 0.8, 0.8),
    (10.0, -20.0, 5.0),
    (math.cos(ANGLE), -math.sin(ANGLE), 0.0, math.sin(ANGLE), math.cos(ANGLE), 0.0, 0.0, 0.0, 1.0),
)
# z: 3.5 -> 1.75 mm (twice the slices, nearest across them: 3.5 / 0.8 > 3); in-plane: 0.8 -> 0.64 mm (x 1.25)
TARGET_SPACING = (1.75, 0.64, 0.64)


def ellipsoid(shape: tuple[int, int, int], centre: tuple[float, ...], semi_axes: tuple[float, ...]) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, semi_axes, strict=True)) <= 1


def ellipsoid_case() -> tuple[np.ndarray, np.ndarray]:
    """A ``(1, 16, 48, 48)`` body (zero around it) holding an organ (1) that holds a tumour (2)."""
    shape = (16, 48, 48)
    image = np.where(ellipsoid(shape, (7.5, 24, 22), (7, 20, 18)), 40.0, 0.0).astype(np.float32)[None]
    label = np.zeros(shape, dtype=np.uint8)
    label[ellipsoid(shape, (7.5, 22, 20), (5, 14, 12))] = 1
    label[ellipsoid(shape, (8, 20, 18), (2.5, 6, 6))] = 2
    return image, label


def dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    a, b = a == value, b == value
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_label_map_round_trip_keeps_shape_geometry_and_overlap() -> None:
    image, label = ellipsoid_case()
    plan = make_plan(TARGET_SPACING)
    _, seg, properties = preprocess_case(image, label, OBLIQUE, plan, "e")
    assert seg is not None and seg.shape[1] == 2 * properties.shape_after_crop[0]
    restored = restore_label_map(seg[0], properties, plan)
    assert restored.shape == label.shape and restored.dtype == np.uint8
    assert dice(restored, label, 1) >= 0.99
    assert dice(restored, label, 2) >= 0.99
    assert np.count_nonzero(restored[label == 0]) <= 0.01 * np.count_nonzero(label)
    # what a writer needs to put the result back where the image lies
    reloaded = CaseProperties.from_json(json.loads(json.dumps(properties.to_json())))
    assert reloaded.geometry == OBLIQUE


def test_phantom_round_trip_with_an_oblique_direction() -> None:
    image, label, geometry = make_phantom_case(1, seed=0, size="tiny")  # index 1: flipped or rotated direction
    assert geometry.direction != Geometry.identity().direction
    z, y, x = geometry.spacing
    plan = make_plan((z / 2, 0.8 * y, 0.8 * x))
    _, seg, properties = preprocess_case(image[None], label, geometry, plan, "phantom_001")
    assert seg is not None
    restored = restore_label_map(seg[0], properties, plan)
    assert restored.shape == label.shape
    assert dice(restored, label, 1) >= 0.99
    # the tumour holds ~50 voxels: each boundary voxel lost or gained costs ~0.02 of Dice; allow two
    assert dice(restored, label, 2) >= 0.95


def softmax_on_preprocessed_grid(properties: CaseProperties, classes: int) -> np.ndarray:
    logits = np.random.default_rng(3).normal(size=(classes, *properties.shape_after_resampling))
    exp = np.exp(logits)
    return (exp / exp.sum(axis=0)).astype(np.float32)


def test_restored_probabilities_sum_to_one_and_are_background_outside_the_crop() -> None:
    image, label = ellipsoid_case()
    plan = make_plan(TARGET_SPACING)
    _, _, properties = preprocess_case(image, label, OBLIQUE, plan, "e")
    restored = restore_probabilities(softmax_on_preprocessed_grid(properties, 3), properties, plan)
    assert restored.shape == (3, 16, 48, 48) and restored.dtype == np.float32
    # linear interpolation of a partition of unity is one
    np.testing.assert_allclose(restored.sum(axis=0), 1.0, atol=1e-5)
    (z0, z1), (y0, y1), (x0, x1) = properties.crop_box
    outside = np.ones((16, 48, 48), dtype=bool)
    outside[z0:z1, y0:y1, x0:x1] = False
    assert outside.any()
    assert np.all(restored[0][outside] == 1.0) and np.all(restored[1:, outside] == 0.0)


def test_label_map_from_probabilities_is_the_argmax_of_the_restored_probabilities() -> None:
    image, label = ellipsoid_case()
    plan = make_plan(TARGET_SPACING)
    _, _, properties = preprocess_case(image, label, OBLIQUE, plan, "e")
    probabilities = softmax_on_preprocessed_grid(properties, 3)
    labels = restore_label_map(probabilities, properties, plan)
    expected = np.argmax(restore_probabilities(probabilities, properties, plan), axis=0)
    np.testing.assert_array_equal(labels, expected)


REGION_LABELS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}


def test_regions_become_a_label_map_later_regions_over_earlier_ones() -> None:
    image, label = ellipsoid_case()
    plan = make_plan(TARGET_SPACING, labels=REGION_LABELS)
    plan.dataset["regions_class_order"] = [1, 2, 3]
    _, _, properties = preprocess_case(image, label, OBLIQUE, plan, "e")
    shape = tuple(properties.shape_after_resampling)
    whole = np.zeros(shape, dtype=np.float32)
    whole[:, :, : shape[2] // 2] = 0.9  # the left half is tumour
    core = np.zeros(shape, dtype=np.float32)
    core[:, :, : shape[2] // 4] = 0.8  # its left half is core ...
    enhancing = np.zeros(shape, dtype=np.float32)
    enhancing[:, :, : shape[2] // 8] = 0.6  # ... whose left half enhances; 0.4 elsewhere stays out
    enhancing[:, :, shape[2] // 2 :] = 0.4
    labels = restore_label_map(np.stack([whole, core, enhancing]), properties, plan)
    restored = restore_probabilities(np.stack([whole, core, enhancing]), properties, plan)
    expected = np.zeros(restored.shape[1:], dtype=np.uint8)
    for region, value in enumerate((1, 2, 3)):  # regions_class_order, in order, as nnU-Net writes it
        expected[restored[region] > 0.5] = value
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    (z0, z1), (y0, y1), (x0, x1) = properties.crop_box
    outside = np.ones(labels.shape, dtype=bool)
    outside[z0:z1, y0:y1, x0:x1] = False
    assert np.all(restored[:, outside] == 0.0)  # no background channel: every region is 0 outside the crop
