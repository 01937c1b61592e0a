from __future__ import annotations

import numpy as np
import pytest

from clinix.plan.model import ResamplingSettings
from clinix.preprocess.resample import (
    compute_new_shape,
    resample_image,
    resample_labels,
    resample_volume,
    separate_axis,
)

SETTINGS = ResamplingSettings()


def test_new_shape_rounds_spacing_ratio_times_shape_halves_to_even() -> None:
    # 3/1.5*10 = 20; 1/0.8*7 = 8.75 -> 9; 1/2*5 = 2.5 -> 2 (half to even); 0.1/5*3 = 0.06 -> at least 1
    assert compute_new_shape((10, 7, 5), (3.0, 1.0, 1.0), (1.5, 0.8, 2.0)) == (20, 9, 2)
    assert compute_new_shape((3, 3, 3), (0.1, 1.0, 1.0), (5.0, 1.0, 1.0)) == (1, 3, 3)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ((4.0, 1.0, 1.0), (1.0, 1.0, 1.0), 0),  # source anisotropic: its thick axis
        ((1.0, 1.0, 1.0), (1.0, 1.0, 5.0), 2),  # source isotropic, target anisotropic: the target's
        ((4.0, 1.0, 1.0), (1.0, 1.0, 5.0), 0),  # both anisotropic: the source decides
        ((1.0, 1.2, 1.0), (1.5, 1.5, 1.5), None),  # isotropic enough
        ((3.0, 1.0, 1.0), (1.5, 1.0, 1.0), None),  # a ratio of exactly 3 is not above the threshold
        ((4.0, 4.0, 1.0), (1.0, 1.0, 1.0), None),  # the largest spacing is shared: no single thick axis
    ],
)
def test_separate_axis_decision(source: tuple, target: tuple, expected: int | None) -> None:
    assert separate_axis(source, target, threshold=3.0) == expected


def test_thick_slices_are_repeated_not_interpolated_when_anisotropic() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    # 4 mm -> 2 mm slices, in-plane unchanged: order 3 in-plane, nearest (order_z 0) across slices
    out = resample_image(image, (6, 4, 5), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0), SETTINGS)
    assert out.shape == (1, 6, 4, 5) and out.dtype == np.float32
    for k in range(3):
        np.testing.assert_array_equal(out[0, 2 * k], image[0, k])
        np.testing.assert_array_equal(out[0, 2 * k + 1], image[0, k])


def test_isotropic_linear_resampling_aligns_voxel_extents() -> None:
    ramp = np.broadcast_to(np.arange(3, dtype=np.float32)[:, None, None], (3, 2, 2))
    out = resample_volume(ramp, (6, 2, 2), (2.0, 1.0, 1.0), (1.0, 1.0, 1.0), order=1, settings=SETTINGS)
    # output voxel i samples input coordinate (i + 0.5) / 2 - 0.5, the edges extended
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 0.25, 0.75, 1.25, 1.75, 2.0], atol=1e-6)


def test_labels_upsampled_across_thick_slices_copy_one_input_slice_each() -> None:
    rng = np.random.default_rng(1)
    seg = rng.integers(-1, 4, size=(4, 6, 6)).astype(np.int16)
    out = resample_labels(seg, (8, 6, 6), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0), SETTINGS, order=1)
    assert out.shape == (8, 6, 6) and out.dtype == np.int16
    for k in range(8):
        np.testing.assert_array_equal(out[k], seg[k // 2])


def test_label_resampling_is_the_argmax_of_linearly_resampled_one_hots() -> None:
    # x: labels 2, 2, 0, 1 -> 2 voxels: each output averages a pair (weights 1/2, 1/2);
    # (2, 2) -> 2; (0, 1) is a tie, which goes to the higher label 1.
    seg = np.array([2, 2, 0, 1], dtype=np.int16).reshape(1, 1, 4)
    out = resample_labels(seg, (1, 1, 2), (1.0, 1.0, 1.0), (1.0, 1.0, 2.0), SETTINGS, order=1)
    np.testing.assert_array_equal(out.ravel(), [2, 1])


def test_label_maps_of_unchanged_shape_are_returned_as_is() -> None:
    seg = np.array([[[0, 1], [2, -1]]], dtype=np.int16)
    out = resample_labels(seg, (1, 2, 2), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), SETTINGS, order=1)
    np.testing.assert_array_equal(out, seg)
