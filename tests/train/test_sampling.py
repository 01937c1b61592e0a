"""Patch sampling with nnU-Net's foreground oversampling (reference §5.2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clinix.preprocess import CaseProperties
from clinix.preprocess.run import save_case
from clinix.train.sampling import PatchSampler, crop_bounds, forced_foreground_positions
from clinix.workdir import WorkDir


def write_preprocessed_case(
    workdir: Path, case_id: str, data: np.ndarray, seg: np.ndarray, class_locations: dict[str, list[list[int]]]
) -> None:
    """Store ``data (C, z, y, x)`` and ``seg (1, z, y, x)`` as a preprocessed case of ``workdir``."""
    folder = WorkDir(workdir).preprocessed()
    folder.mkdir(parents=True, exist_ok=True)
    shape = list(data.shape[1:])
    properties = CaseProperties(
        case_id=case_id,
        original_shape=shape,
        original_spacing=[1.0, 1.0, 1.0],
        origin=[0.0, 0.0, 0.0],
        direction=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        crop_box=[[0, s] for s in shape],
        shape_after_crop=shape,
        shape_after_resampling=shape,
        target_spacing=[1.0, 1.0, 1.0],
        class_locations=class_locations,
    )
    save_case(folder, data, seg, properties)


def coordinate_image(shape: tuple[int, int, int]) -> np.ndarray:
    """``(1, *shape)`` float32 whose voxel (z, y, x) holds z · 10 000 + y · 100 + x."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (z * 10_000 + y * 100 + x).astype(np.float32)[None]


def single_voxel_case(workdir: Path, voxel: tuple[int, int, int], shape=(40, 40, 40)) -> None:
    """A case whose only foreground voxel (label 1) is ``voxel``; the image holds its coordinates."""
    seg = np.zeros((1, *shape), dtype=np.int16)
    seg[(0, *voxel)] = 1
    write_preprocessed_case(workdir, "case", coordinate_image(shape), seg, {"1": [list(voxel)], "2": []})


@pytest.mark.parametrize(("batch_size", "forced_count"), [(1, 0), (2, 1), (3, 1), (5, 2), (9, 3), (12, 4)])
def test_the_last_samples_of_a_batch_are_forced_to_foreground(batch_size, forced_count):
    # nnU-Net: sample j is forced iff j >= round(B · 0.67).
    expected = [False] * (batch_size - forced_count) + [True] * forced_count
    assert forced_foreground_positions(batch_size, 0.33) == expected


@pytest.mark.parametrize(("batch_size", "world_size"), [(1, 2), (1, 4), (2, 2), (3, 3), (4, 2)])
def test_under_several_processes_the_forced_share_is_that_of_the_global_batch(batch_size, world_size):
    per_rank = [forced_foreground_positions(batch_size, 0.33, rank, world_size) for rank in range(world_size)]
    assert [flag for flags in per_rank for flag in flags] == forced_foreground_positions(batch_size * world_size, 0.33)
    assert all(len(flags) == batch_size for flags in per_rank)


@pytest.mark.parametrize(
    ("shape", "sample_patch", "final_patch", "bounds"),
    [
        (50, 30, 20, (-5, 25)),  # need 10: the enlarged patch may reach 5 voxels past either end
        (50, 31, 20, (-6, 25)),  # need 11: lb = −11 // 2 = −6, ub = 50 + 5 + 1 − 31
        (20, 30, 20, (-5, -5)),  # the image is exactly the plan patch: one position
        (10, 30, 20, (-10, -10)),  # too small: need widened to 30 − 10, the image centred
        (10, 8, 8, (0, 2)),  # no enlargement: the patch stays inside
    ],
)
def test_crop_bounds_follow_nnunet_formulas(shape, sample_patch, final_patch, bounds):
    assert crop_bounds([shape], [sample_patch], [final_patch]) == [bounds]


def test_forced_patch_is_centred_on_the_stored_voxel(tmp_path):
    single_voxel_case(tmp_path, (20, 17, 25))
    sampler = PatchSampler(tmp_path, ["case"], [16, 16, 16], batch_size=2)
    for seed in range(5):
        data, seg = sampler.sample_batch(np.random.default_rng(seed))
        # Only class "1" has locations: sample 1 is centred on it, at index patch // 2 = 8.
        assert seg[1, 0, 8, 8, 8] == 1
        assert data[1, 0, 8, 8, 8] == 20 * 10_000 + 17 * 100 + 25
        assert (seg[1] == 1).sum() == 1


def test_forced_patch_clamps_only_its_lower_corner(tmp_path):
    single_voxel_case(tmp_path, (2, 20, 39))
    sampler = PatchSampler(tmp_path, ["case"], [16, 16, 16], batch_size=2)
    data, seg = sampler.sample_batch(np.random.default_rng(0))
    # z: max(0, 2 − 8) = 0 puts the voxel at index 2; x: 39 − 8 = 31 is not clamped, the patch
    # reaches 7 voxels past the image, which are padded.
    assert seg[1, 0, 2, 8, 8] == 1
    assert data[1, 0, 0, 0, 0] == 0 * 10_000 + 12 * 100 + 31
    assert (seg[1, 0, :, :, 9:] == -1).all()
    assert (data[1, 0, :, :, 9:] == 0).all()
    assert (seg[1, 0, :, :, :9] >= 0).all()


def test_random_patch_is_the_box_at_a_corner_within_the_bounds(tmp_path):
    single_voxel_case(tmp_path, (20, 20, 20))
    sampler = PatchSampler(tmp_path, ["case"], [16, 16, 16], batch_size=1, enlarged_patch=[24, 24, 24])
    image = coordinate_image((40, 40, 40))[0]
    corners = set()
    for seed in range(20):
        data, _ = sampler.sample_batch(np.random.default_rng(seed))
        corner = data[0, 0, 4, 4, 4]  # need 8 per axis: the corner lies in [-4, 20], and 4 + corner >= 0
        z, y, x = int(corner // 10_000) - 4, int(corner // 100 % 100) - 4, int(corner % 100) - 4
        assert all(-4 <= c <= 20 for c in (z, y, x))
        inside = data[0, 0, max(-z, 0) :, max(-y, 0) :, max(-x, 0) :]
        box = image[max(z, 0) : z + 24, max(y, 0) : y + 24, max(x, 0) : x + 24]
        np.testing.assert_array_equal(inside[: box.shape[0], : box.shape[1], : box.shape[2]], box)
        corners.add((z, y, x))
    assert len(corners) == 20


def test_patch_larger_than_the_image_is_padded_with_zero_and_minus_one(tmp_path):
    data = np.full((2, 4, 4, 4), 5.0, dtype=np.float32)
    seg = np.ones((1, 4, 4, 4), dtype=np.int16)
    write_preprocessed_case(tmp_path, "small", data, seg, {"1": []})
    sampler = PatchSampler(tmp_path, ["small"], [8, 8, 8], batch_size=3)
    patches, labels = sampler.sample_batch(np.random.default_rng(0))
    assert patches.shape == (3, 2, 8, 8, 8) and patches.dtype == np.float32
    assert labels.shape == (3, 1, 8, 8, 8) and labels.dtype == np.int16
    # need = 8 − 4 = 4: the only position is −2, the image sits at [2, 6) on every axis.
    assert (patches[:, :, 2:6, 2:6, 2:6] == 5.0).all() and patches.sum() == 3 * 2 * 64 * 5.0
    assert (labels[:, :, 2:6, 2:6, 2:6] == 1).all() and (labels == -1).sum() == 3 * (512 - 64)


def test_a_batch_is_a_function_of_the_generator_state(tmp_path):
    single_voxel_case(tmp_path, (20, 17, 25))
    write_preprocessed_case(
        tmp_path, "other", coordinate_image((30, 40, 50)) + 1, np.zeros((1, 30, 40, 50), np.int16), {}
    )
    sampler = PatchSampler(tmp_path, ["case", "other"], [16, 16, 16], batch_size=4, enlarged_patch=[20, 24, 24])
    first = sampler.sample_batch(np.random.default_rng(7))
    again = sampler.sample_batch(np.random.default_rng(7))
    other = sampler.sample_batch(np.random.default_rng(8))
    assert first[0].shape == (4, 1, 20, 24, 24)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
