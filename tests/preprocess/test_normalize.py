from __future__ import annotations

import numpy as np
import pytest

from clinix.errors import ClinixError
from clinix.plan.model import ChannelNormalization
from clinix.preprocess.normalize import normalize_image


def as_volume(values: list[float]) -> np.ndarray:
    """A ``(1, 1, 1, N)`` image of one channel."""
    return np.array(values, dtype=np.float32).reshape(1, 1, 1, -1)


def test_ct_clips_to_the_percentiles_then_z_scores_with_the_dataset_statistics() -> None:
    scheme = ChannelNormalization("CT", "ct", mean=100.0, std=200.0, lower=-1000.0, upper=1000.0)
    image = as_volume([-2000, -500, 0, 500, 3000])
    body = np.ones(image.shape[1:], dtype=bool)
    # clipped: -1000, -500, 0, 500, 1000; then (x - 100) / 200
    expected = [-5.5, -3.0, -0.5, 2.0, 4.5]
    np.testing.assert_allclose(normalize_image(image, body, [scheme]).ravel(), expected, rtol=1e-6)


def test_ct_without_statistics_in_the_plan_is_a_user_error() -> None:
    scheme = ChannelNormalization("CT", "ct")
    with pytest.raises(ClinixError, match="CT normalization needs"):
        normalize_image(as_volume([1, 2]), np.ones((1, 1, 2), dtype=bool), [scheme])


def test_zscore_without_mask_uses_the_whole_image() -> None:
    scheme = ChannelNormalization("MR", "zscore", use_nonzero_mask=False)
    image = as_volume([1, 2, 3, 4])
    body = np.array([[[False, True, True, False]]])
    # mean 2.5, population std sqrt(1.25); the mask is ignored
    std = np.sqrt(1.25)
    expected = [-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std]
    np.testing.assert_allclose(normalize_image(image, body, [scheme]).ravel(), expected, rtol=1e-6)


def test_zscore_with_mask_uses_the_mask_statistics_and_leaves_outside_at_zero() -> None:
    scheme = ChannelNormalization("MR", "zscore", use_nonzero_mask=True)
    image = as_volume([5, 2, 4, 7, 6])
    body = np.array([[[False, True, True, False, True]]])
    # inside: 2, 4, 6 -> mean 4, population std sqrt(8/3)
    std = np.sqrt(8 / 3)
    expected = [0.0, -2 / std, 0.0, 0.0, 2 / std]
    np.testing.assert_allclose(normalize_image(image, body, [scheme]).ravel(), expected, rtol=1e-6, atol=1e-7)


def test_each_channel_gets_its_own_scheme_and_none_only_casts() -> None:
    schemes = [ChannelNormalization("raw", "none"), ChannelNormalization("MR", "zscore")]
    image = np.stack([as_volume([3, 9])[0], as_volume([1, 3])[0]]).astype(np.int16)
    normalized = normalize_image(image, np.ones((1, 1, 2), dtype=bool), schemes)
    assert normalized.dtype == np.float32
    np.testing.assert_array_equal(normalized.reshape(2, 2), [[3.0, 9.0], [-1.0, 1.0]])


def test_unknown_scheme_and_channel_count_mismatch_are_user_errors() -> None:
    body = np.ones((1, 1, 2), dtype=bool)
    with pytest.raises(ClinixError, match="unknown normalization scheme 'rescale'"):
        normalize_image(as_volume([1, 2]), body, [ChannelNormalization("X", "rescale")])
    with pytest.raises(ClinixError, match="normalises 2 channels but the image has 1"):
        normalize_image(as_volume([1, 2]), body, [ChannelNormalization("a", "none")] * 2)
