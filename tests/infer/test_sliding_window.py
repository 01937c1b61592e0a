from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clinix.infer.sliding_window import (
    gaussian_importance_map,
    pad_to_patch,
    sliding_window_logits,
    tile_slices,
    tile_starts,
)


def test_gaussian_map_peaks_at_the_centre_with_sigma_one_eighth_of_the_patch() -> None:
    weights = gaussian_importance_map((9, 17, 33))
    assert weights.shape == (9, 17, 33) and weights.dtype == np.float32
    assert weights[4, 8, 16] == 1.0 and np.unravel_index(weights.argmax(), weights.shape) == (4, 8, 16)
    # two voxels off-centre along z: exp(−2² / (2 σ²)) with σ = 9/8
    assert weights[6, 8, 16] == pytest.approx(math.exp(-4 / (2 * (9 / 8) ** 2)), rel=1e-6)
    # the corner: the product over the axes of exp(−((p − 1)/2)² / (2 (p/8)²))
    corner = math.prod(math.exp(-(((p - 1) / 2) ** 2) / (2 * (p / 8) ** 2)) for p in (9, 17, 33))
    assert weights[0, 0, 0] == pytest.approx(corner, rel=1e-5)
    assert weights.min() > 0


def test_gaussian_map_of_an_even_patch_is_mirror_symmetric() -> None:
    weights = gaussian_importance_map((16, 32, 8))
    for axis in range(3):
        np.testing.assert_array_equal(weights, np.flip(weights, axis))
    assert weights.max() == 1.0 and weights.min() > 0
    # the peak is shared by the 8 voxels around the centre of an even patch
    assert np.count_nonzero(weights == weights.max()) == 8 and weights[7:9, 15:17, 3:5].min() == weights.max()


def test_tile_starts_follow_nnunet() -> None:
    assert tile_starts(110, 64, 0.5) == [0, 23, 46]  # n = ceil(46 / 32) + 1 = 3, spacing 23
    assert tile_starts(37, 16, 0.5) == [0, 7, 14, 21]  # n = ceil(21 / 8) + 1 = 4, spacing 7
    assert tile_starts(64, 64, 0.5) == [0]
    assert tile_starts(65, 64, 1.0) == [0, 1]


def test_tiles_cover_every_voxel_of_an_odd_shape() -> None:
    shape, patch = (37, 50, 23), (16, 32, 16)
    tiles = tile_slices(shape, patch, 0.5)
    assert len(tiles) == 4 * 3 * 2  # 37: 4 tiles, 50: ceil(18 / 16) + 1 = 3, 23: ceil(7 / 8) + 1 = 2
    coverage = np.zeros(shape, dtype=int)
    for tile in tiles:
        coverage[tile] += 1
        assert [s.stop - s.start for s in tile] == list(patch)
    assert coverage.min() >= 1


def test_pad_to_patch_splits_the_padding_with_the_odd_voxel_after() -> None:
    image = torch.ones(2, 5, 40, 9)
    padded, region = pad_to_patch(image, (8, 32, 16))
    assert padded.shape == (2, 8, 40, 16)
    assert region == (slice(1, 6), slice(0, 40), slice(3, 12))  # z: 3 = 1 + 2; x: 7 = 3 + 4
    assert padded.sum() == image.sum() and padded[(slice(None), *region)].min() == 1


def test_an_image_smaller_than_the_patch_comes_back_cropped_to_its_own_voxels() -> None:
    image = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 5, 40, 9)).astype(np.float32))
    logits = sliding_window_logits(lambda batch: batch, image, (8, 32, 16), num_classes=1, batch_tiles=2)
    assert logits.shape == (1, 5, 40, 9)
    # each voxel is the Gaussian-weighted mean of the same value seen by several tiles
    np.testing.assert_allclose(logits.numpy(), image.numpy(), rtol=1e-5, atol=1e-6)


def test_a_constant_network_output_is_reproduced_exactly_everywhere() -> None:
    values = torch.tensor([-2.0, 0.5, 4.0, 0.0])  # powers of two: c·g and the sums round exactly like g

    def constant(batch: torch.Tensor) -> torch.Tensor:
        return values.view(1, 4, 1, 1, 1).expand(batch.shape[0], 4, *batch.shape[2:])

    image = torch.zeros(1, 37, 50, 23)
    logits = sliding_window_logits(constant, image, (16, 32, 16), num_classes=4, step=0.5, batch_tiles=5)
    assert logits.shape == (4, 37, 50, 23) and logits.dtype == torch.float32
    for k, value in enumerate(values.tolist()):
        assert torch.all(logits[k] == value)
