"""Shared layers: channels-first LayerNorm, DropPath, conv padding, He init (SPEC §4.1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clinix.net.layers import DropPath, LayerNormChannelsFirst, as_size3, conv3d, init_conv3d_he


def test_layer_norm_channels_first_normalises_each_voxel_over_channels() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 4, 5)
    norm = LayerNormChannelsFirst(6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
        norm.bias.copy_(torch.full((6,), 0.5))
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-6) * torch.arange(1.0, 7.0)[:, None, None, None] + 0.5
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    assert norm.eps == 1e-6


def test_drop_path_is_identity_in_eval_and_at_rate_zero() -> None:
    x = torch.randn(4, 3, 2, 2, 2)
    assert torch.equal(DropPath(0.5).eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_drop_path_drops_whole_samples_and_rescales_the_kept_ones() -> None:
    torch.manual_seed(0)
    out = DropPath(0.5).train()(torch.ones(200, 3, 2, 2, 2))
    per_sample = out.flatten(1)
    assert torch.equal(per_sample.min(dim=1).values, per_sample.max(dim=1).values)  # constant per sample
    assert set(per_sample[:, 0].tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - 0.5)


def test_drop_path_rejects_a_rate_of_one() -> None:
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.0)


def test_conv3d_same_padding_keeps_the_shape_for_anisotropic_kernels() -> None:
    conv = conv3d(2, 5, (1, 3, 5))
    assert conv.padding == (0, 1, 2)
    assert conv(torch.zeros(1, 2, 4, 6, 8)).shape == (1, 5, 4, 6, 8)
    assert as_size3(3) == (3, 3, 3)


def test_he_init_gives_kaiming_normal_weights_and_zero_bias() -> None:
    torch.manual_seed(0)
    conv = conv3d(64, 64, 3)
    init_conv3d_he(conv)
    fan_in = 64 * 27
    expected_std = math.sqrt(2.0 / (1 + 0.01**2)) / math.sqrt(fan_in)  # gain of leaky_relu(0.01)
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.02)
    assert torch.count_nonzero(conv.bias).item() == 0


def test_he_init_leaves_linear_and_conv1d_alone() -> None:
    linear, conv1d = torch.nn.Linear(4, 4), torch.nn.Conv1d(4, 4, 3)
    before = [p.clone() for p in (*linear.parameters(), *conv1d.parameters())]
    linear.apply(init_conv3d_he)
    conv1d.apply(init_conv3d_he)
    after = list(linear.parameters()) + list(conv1d.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_layer_norm_channels_first_matches_functional_layer_norm_on_channels_last() -> None:
    x = torch.randn(1, 4, 2, 3, 2)
    expected = F.layer_norm(x.permute(0, 2, 3, 4, 1), (4,), eps=1e-6).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(LayerNormChannelsFirst(4)(x), expected)
