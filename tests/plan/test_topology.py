"""The planner's arithmetic against nnU-Net's documented plans (reference §3.7)."""

from __future__ import annotations

import numpy as np
import pytest

from clinix.plan.planner import nnunet_plan, plain_unet_feature_map_elements
from clinix.plan.topology import (
    initial_patch,
    pool_and_kernel_topology,
    resampled_shape,
    shrink_patch,
    target_spacing,
)

FEATURES_6 = [32, 64, 128, 256, 320, 320]


def test_target_spacing_is_the_median_for_isotropic_data() -> None:
    spacings = np.array([[1.0, 0.8, 0.8], [1.2, 0.9, 0.9], [0.9, 0.7, 0.7]])
    shapes = np.array([[100, 120, 120]] * 3)
    assert target_spacing(spacings, shapes) == [1.0, 0.8, 0.8]


def test_thick_slices_take_the_10th_percentile_when_anisotropic() -> None:
    # 5 mm slices vs 0.7 mm in-plane, few slices: the slice axis target becomes finer than the median.
    spacings = np.array([[5.0, 0.7, 0.7]] * 6 + [[3.0, 0.7, 0.7]] * 4)
    shapes = np.array([[30, 512, 512]] * 10)
    expected_z = float(np.percentile(spacings[:, 0], 10))
    assert target_spacing(spacings, shapes) == [expected_z, 0.7, 0.7]
    assert expected_z == 3.0


def test_thick_slices_keep_the_median_when_there_are_many_of_them() -> None:
    spacings = np.array([[5.0, 0.7, 0.7]] * 4)
    shapes = np.array([[200, 512, 512]] * 4)  # 200 * 3 > 512: not "few slices"
    assert target_spacing(spacings, shapes) == [5.0, 0.7, 0.7]


def test_resampled_shape_rounds_half_to_even() -> None:
    assert resampled_shape([10, 5, 3], [1.5, 1.0, 1.0], [2.0, 2.0, 1.2]) == [8, 2, 2]


def test_hippocampus_plan_matches_nnunet() -> None:
    topology, batch = nnunet_plan([1.0, 1.0, 1.0], [36, 50, 35], 3, 36 * 50 * 35 * 260, 8.0)
    assert topology.patch_size == (40, 56, 40)
    assert topology.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    assert batch == 9


def test_brats_like_plan_shrinks_to_128_cubed() -> None:
    topology, batch = nnunet_plan([1.0, 1.0, 1.0], [138, 169, 138], 4, 138 * 169 * 138 * 484, 8.0)
    assert topology.patch_size == (128, 128, 128)
    assert topology.n_stages == 6
    assert batch == 2


def test_thick_slice_mri_gets_in_plane_kernels_and_pooling() -> None:
    topology, batch = nnunet_plan([3.6, 0.625, 0.625], [20, 320, 320], 3, 20 * 320 * 320 * 32, 8.0)
    assert topology.strides == ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2))
    assert topology.kernel_sizes[:3] == ((1, 3, 3), (1, 3, 3), (3, 3, 3))
    assert topology.patch_size == (20, 320, 256)
    assert batch == 2


def test_plain_unet_feature_map_matches_nnunet_estimates() -> None:
    cube = pool_and_kernel_topology([1.0, 1.0, 1.0], [128, 128, 128])
    wider = pool_and_kernel_topology([1.0, 1.0, 1.0], [128, 160, 128])
    assert plain_unet_feature_map_elements(cube, FEATURES_6, 4) == 454_893_568
    assert plain_unet_feature_map_elements(wider, FEATURES_6, 4) == 568_616_960


def test_shrink_recomputes_the_divisor_between_subtractions() -> None:
    topology = pool_and_kernel_topology([1.0, 1.0, 1.0], [160, 192, 160])
    assert shrink_patch(topology, [1.0, 1.0, 1.0], [138, 169, 138]) == [160, 192, 128]


def test_patch_smaller_than_the_image_is_clipped_to_the_median_shape() -> None:
    assert initial_patch([1.0, 1.0, 1.0], [20, 30, 25]) == [20, 30, 25]
    topology = pool_and_kernel_topology([1.0, 1.0, 1.0], [20, 30, 25])
    # 20,30,25 -> 10,15,13 -> 5,8,7: two pools per axis, then only y is >= 8 and it is < 12: stop.
    assert topology.divisor == (4, 4, 4)
    assert topology.patch_size == (20, 32, 28)  # padded up to the pooling divisor


@pytest.mark.parametrize("size", [[7, 7, 7], [5, 200, 200]])
def test_tiny_axes_are_never_pooled(size: list[int]) -> None:
    topology = pool_and_kernel_topology([1.0, 1.0, 1.0], size)
    assert all(stride[0] == 1 for stride in topology.strides)
