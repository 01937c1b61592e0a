"""Batched training augmentation (reference §5.3, §5.4)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clinix.train.augment import AugmentationSettings, augment_batch, map_outside_label
from clinix.train.augment_intensity import (
    contrast,
    contrast_factors,
    gamma,
    gaussian_blur,
    gaussian_noise,
    multiplicative_brightness,
    simulate_low_resolution,
)
from clinix.train.augment_spatial import default_rotation, enlarged_patch_size

OFF = AugmentationSettings(
    p_rotation=0,
    p_scaling=0,
    p_noise=0,
    p_blur=0,
    p_brightness=0,
    p_contrast=0,
    p_low_resolution=0,
    p_gamma_inverted=0,
    p_gamma=0,
    p_mirror_per_axis=0,
)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_batch(shape, labels=(0, 1, 2), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, C, *S)`` from N(0, 1) and labels ``(B, 1, *S)`` drawn from ``labels``."""
    g = generator(seed)
    data = torch.randn(shape, generator=g)
    choice = torch.randint(0, len(labels), (shape[0], 1, *shape[2:]), generator=g)
    return data, torch.tensor(labels, dtype=torch.int16)[choice]


# --- enlarged patch and rotation rule (reference §5.3) ---


@pytest.mark.parametrize(
    ("patch", "enlarged"),
    [([128, 128, 128], [205, 205, 205]), ([40, 56, 40], [73, 80, 64]), ([10, 56, 40], [10, 65, 65])],
)
def test_enlarged_patch_matches_nnunet_initial_patch(patch, enlarged):
    # 128 · (cos 30° + sin 30°) / 0.85 = 205.7; dummy-2D [10, 56, 40]: 90° turns 40 ↔ 56, 56 / 0.85 = 65.9.
    assert enlarged_patch_size(patch) == enlarged


def test_enlarged_patch_without_rotation_only_covers_the_smallest_scale():
    assert enlarged_patch_size([20, 34, 17], rotation_degrees=0) == [23, 40, 20]  # ⌊s / 0.85⌋


@pytest.mark.parametrize(("patch", "rotation"), [([10, 56, 40], (180.0, (0,))), ([20, 56, 40], (30.0, (0, 1, 2)))])
def test_flat_patches_rotate_in_plane_by_up_to_180_degrees(patch, rotation):
    assert default_rotation(patch) == rotation  # dummy-2D iff max / patch[0] > 3: 5.6 yes, 2.8 no


# --- the whole pipeline ---


def test_with_every_chance_zero_the_output_is_the_centre_crop():
    data, seg = random_batch((2, 2, 12, 13, 14), labels=(-1, 0, 3))
    out, out_seg = augment_batch(data, seg, [8, 8, 8], generator(), OFF)
    # offsets ((12 − 8) // 2, (13 − 8) // 2, (14 − 8) // 2) = (2, 2, 3)
    assert torch.equal(out, data[:, :, 2:10, 2:10, 3:11])
    assert torch.equal(out_seg, map_outside_label(seg[:, :, 2:10, 2:10, 3:11]))
    assert int(out_seg.min()) == 0


def test_disabled_augmentation_only_crops_and_maps_outside():
    data, seg = random_batch((1, 1, 10, 10, 10), labels=(-1, 2))
    out, out_seg = augment_batch(data, seg, [8, 8, 8], generator(), AugmentationSettings(enabled=False))
    assert torch.equal(out, data[:, :, 1:9, 1:9, 1:9])
    assert torch.equal(out_seg, torch.where(seg == -1, 0, seg)[:, :, 1:9, 1:9, 1:9])


def test_mirroring_flips_image_and_labels_together():
    data = torch.arange(2 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 1, 4, 5, 6)
    seg = torch.zeros((2, 1, 4, 5, 6), dtype=torch.int16)
    seg[:, :, :, :, 0] = 1  # only the first x column is labelled
    settings = dataclasses.replace(OFF, p_mirror_per_axis=1.0, mirror_axes=(2,))
    out, out_seg = augment_batch(data, seg, [4, 5, 6], generator(), settings)
    assert torch.equal(out, data.flip(4))
    assert out_seg[:, :, :, :, 5].eq(1).all() and out_seg[:, :, :, :, :5].eq(0).all()


def test_rotation_by_90_degrees_about_z_turns_y_towards_x():
    data, seg = random_batch((1, 1, 3, 8, 8), labels=(0, 1, 2, 3))
    settings = dataclasses.replace(OFF, p_rotation=1.0, rotation_degrees=(90.0, 90.0), rotation_axes=(0,))
    out, out_seg = augment_batch(data, seg, [3, 8, 8], generator(), settings)
    # The output voxel (i, j) samples the input at (7 − j, i): np.rot90 from x towards y.
    expected = np.rot90(data.numpy(), k=1, axes=(4, 3))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert np.array_equal(out_seg.numpy(), np.rot90(seg.numpy(), k=1, axes=(4, 3)))


@pytest.mark.parametrize("enlarged", [9, 12])
def test_resampling_without_rotation_or_scaling_reproduces_the_integer_crop(enlarged):
    data, seg = random_batch((2, 1, enlarged, enlarged, enlarged), labels=(0, 4))
    settings = dataclasses.replace(OFF, p_rotation=1.0, rotation_degrees=(0.0, 0.0))
    out, out_seg = augment_batch(data, seg, [8, 8, 8], generator(), settings)
    crop, crop_seg = augment_batch(data, seg, [8, 8, 8], generator(), OFF)
    torch.testing.assert_close(out, crop, atol=1e-5, rtol=0)
    assert torch.equal(out_seg, crop_seg)


def test_resampled_labels_keep_the_original_values_and_map_the_border():
    data, seg = random_batch((4, 1, 16, 16, 16), labels=(0, 2, 5))
    seg[:, :, :3] = -1  # "outside" stored by the sampler's padding
    settings = dataclasses.replace(
        OFF, p_rotation=1.0, p_scaling=1.0, scale_range=(1.4, 1.4), p_mirror_per_axis=0.5, map_outside_to=7
    )
    _, out_seg = augment_batch(data, seg, [16, 16, 16], generator(), settings)
    # Zooming out by 1.4 samples past the patch: the border becomes 7, no interpolated value appears.
    assert set(torch.unique(out_seg).tolist()) == {0, 2, 5, 7}
    _, default_seg = augment_batch(
        data, seg, [16, 16, 16], generator(), dataclasses.replace(settings, map_outside_to=0)
    )
    assert set(torch.unique(default_seg).tolist()) == {0, 2, 5}


def test_intensity_transforms_leave_labels_alone():
    data, seg = random_batch((3, 2, 10, 10, 10), labels=(-1, 0, 1))
    settings = dataclasses.replace(
        AugmentationSettings(), p_rotation=0, p_scaling=0, p_mirror_per_axis=0, p_noise=1, p_brightness=1, p_gamma=1
    )
    out, out_seg = augment_batch(data, seg, [8, 8, 8], generator(), settings)
    crop, crop_seg = augment_batch(data, seg, [8, 8, 8], generator(), OFF)
    assert torch.equal(out_seg, crop_seg)
    assert (out - crop).abs().amin(dim=(2, 3, 4)).gt(0).all()  # every channel of every sample changed


def test_same_seed_same_batch_other_seed_other_batch():
    data, seg = random_batch((2, 1, 24, 24, 24))
    always = AugmentationSettings(p_rotation=1.0, p_scaling=1.0, p_noise=1.0, p_low_resolution=1.0)
    first = augment_batch(data, seg, [16, 16, 16], generator(3), always)
    again = augment_batch(data, seg, [16, 16, 16], generator(3), always)
    other = augment_batch(data, seg, [16, 16, 16], generator(4), always)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


# --- single intensity transforms, each forced on ---


def test_contrast_factors_split_evenly_below_and_above_one():
    factors = contrast_factors(generator(), (0.7, 1.5), 10_000)
    assert factors.min() >= 0.7 and factors.max() <= 1.5
    assert abs(float((factors < 1).double().mean()) - 0.5) < 0.02


def test_noise_standard_deviation_stays_below_a_tenth():
    data = torch.zeros((4, 1, 16, 16, 16))
    noisy = gaussian_noise(data, generator(), 1.0, (0.0, 0.1))
    assert noisy.std(dim=(1, 2, 3, 4)).max() < 0.1 * 1.05 and noisy.abs().sum() > 0


def test_blur_keeps_constants_and_the_mass_of_an_impulse():
    constant = torch.full((1, 1, 6, 6, 6), 3.0)
    torch.testing.assert_close(gaussian_blur(constant, generator(), 1.0, (0.5, 1.0), 1.0), constant)
    impulse = torch.zeros((1, 1, 17, 17, 17))
    impulse[0, 0, 8, 8, 8] = 1.0
    blurred = gaussian_blur(impulse, generator(), 1.0, (0.5, 1.0), 1.0)
    assert blurred[0, 0, 8, 8, 8] < 1.0
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-6)  # normalised kernel, radius 4 fits inside


def test_brightness_scales_each_channel_by_one_factor_in_range():
    data = torch.rand((2, 3, 5, 5, 5)) + 1.0
    ratio = multiplicative_brightness(data, generator(), 1.0, (0.75, 1.25)) / data
    per_channel = ratio.flatten(2)
    torch.testing.assert_close(per_channel.amin(dim=2), per_channel.amax(dim=2))
    assert ratio.min() >= 0.75 - 1e-6 and ratio.max() <= 1.25 + 1e-6


def test_contrast_stays_within_the_original_range():
    data, _ = random_batch((3, 2, 8, 8, 8))
    out = contrast(data, generator(), 1.0, (0.75, 1.25))
    assert (out.amin(dim=(2, 3, 4)) >= data.amin(dim=(2, 3, 4))).all()
    assert (out.amax(dim=(2, 3, 4)) <= data.amax(dim=(2, 3, 4))).all()
    assert not torch.equal(out, data)


def test_low_resolution_keeps_constants_and_coarsens_detail():
    constant = torch.full((1, 1, 8, 8, 8), 2.0)
    kept = simulate_low_resolution(constant, generator(), 1.0, (0.5, 0.5), 1.0, (0, 1, 2))
    torch.testing.assert_close(kept, constant)
    checker = (torch.arange(8)[:, None, None] + torch.arange(8)[None, :, None] + torch.arange(8)).remainder(2)
    data = checker.float()[None, None]
    coarse = simulate_low_resolution(data, generator(), 1.0, (0.5, 0.5), 1.0, (0, 1, 2))
    # The 4³ nearest-neighbour version of a checkerboard is constant, and so is its upsampling.
    assert float(coarse.std()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_keeps_each_channel_mean_and_std(invert):
    data, _ = random_batch((2, 2, 8, 8, 8))
    out = gamma(data, generator(1), 1.0, (0.7, 1.5), invert=invert)
    dims = (2, 3, 4)
    torch.testing.assert_close(out.mean(dim=dims), data.mean(dim=dims), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=dims), data.std(dim=dims), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, data, atol=1e-3)
