"""hgConv and the HGCN block (paper eqs. 1–6; SPEC §4.2; reference §1.3, §1.7)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from clinix.net.hgconv import HGCNBlock, HgConv, hgconv_channel_splits


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _hgcn_formula(channels: int, order: int, taps: int) -> int:
    """Reference §1.7 written out, for a kernel with ``taps`` voxels."""
    t = channels // 2
    dims = [t // 2 ** (order - 1 - j) for j in range(order)]
    s = sum(dims)
    return (
        channels * t
        + t  # stem
        + 4 * t  # two LayerNorms
        + t  # layer scale γ
        + 2 * t * t
        + 2 * t  # proj_in
        + taps * s
        + s  # depthwise conv
        + sum(a * b + b for a, b in itertools.pairwise(dims))  # Φ_j
        + t * t
        + t  # proj_out
        + taps * t * channels
        + channels  # conv1
        + taps * channels * channels
        + channels  # conv2
    )


@pytest.mark.parametrize(("channels", "order", "expected"), [(32, 2, 43_776), (64, 3, 173_680), (128, 4, 691_024)])
def test_hgcn_block_parameter_counts_match_the_released_code(channels: int, order: int, expected: int) -> None:
    assert _hgcn_formula(channels, order, 27) == expected
    assert _count(HGCNBlock(channels, order, 3)) == expected


def test_hgcn_block_with_an_anisotropic_kernel_uses_it_in_every_spatial_conv() -> None:
    assert _count(HGCNBlock(32, 2, (1, 3, 3))) == _hgcn_formula(32, 2, 9) == 15_696


def test_channel_splits_halve_downwards_from_the_width() -> None:
    assert hgconv_channel_splits(16, 2) == [8, 16]
    assert hgconv_channel_splits(32, 3) == [8, 16, 32]
    assert hgconv_channel_splits(64, 4) == [8, 16, 32, 64]  # eq. 5


def test_channel_splits_reject_a_width_not_divisible_by_two_to_the_order_minus_one() -> None:
    with pytest.raises(ValueError, match=r"divisible by 2\^3 = 8, got 12"):
        hgconv_channel_splits(12, 4)


def _identity_hgconv(gating: str) -> HgConv:
    """Order 2 on width 2 (splits [1, 2]) with every 1x1 conv and the depthwise conv an identity."""
    hg = HgConv(2, 2, kernel_size=1, gating=gating)
    with torch.no_grad():
        for conv in (hg.proj_in, hg.dwconv, hg.pointwise[0], hg.proj_out):
            conv.bias.zero_()
        hg.proj_in.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]).view(4, 2, 1, 1, 1))
        hg.dwconv.weight.fill_(1.0)
        hg.pointwise[0].weight.copy_(torch.tensor([[1.0], [3.0]]).view(2, 1, 1, 1, 1))
        hg.proj_out.weight.copy_(torch.eye(2).view(2, 2, 1, 1, 1))
    return hg


def test_additive_recursion_follows_eq_6() -> None:
    # input (a, b) = (2, 5): base = a, V_0 = b, V_1 = (a + b, 2a) = (7, 4)
    # U_1 = base + V_0 = 7; U_2 = Φ(U_1) + V_1 = (7, 21) + (7, 4) = (14, 25)
    x = torch.tensor([2.0, 5.0]).view(1, 2, 1, 1, 1)
    assert _identity_hgconv("add")(x).flatten().tolist() == [14.0, 25.0]


def test_multiplicative_gating_follows_hornet() -> None:
    # U_1 = base · V_0 = 10; U_2 = Φ(U_1) · V_1 = (10, 30) · (7, 4) = (70, 120)
    x = torch.tensor([2.0, 5.0]).view(1, 2, 1, 1, 1)
    assert _identity_hgconv("mul")(x).flatten().tolist() == [70.0, 120.0]


def test_mul_gating_has_the_same_parameters_but_a_different_output() -> None:
    torch.manual_seed(0)
    additive, multiplicative = HgConv(16, 3, gating="add"), HgConv(16, 3, gating="mul")
    multiplicative.load_state_dict(additive.state_dict(), strict=True)
    x = torch.randn(1, 16, 4, 4, 4)
    assert not torch.allclose(additive(x), multiplicative(x))


def test_hgcn_block_keeps_the_shape_and_starts_with_a_tiny_layer_scale() -> None:
    block = HGCNBlock(16, 3, 3, drop_path=0.2).eval()
    assert block(torch.randn(2, 16, 4, 4, 4)).shape == (2, 16, 4, 4, 4)
    assert block.layer_scale.shape == (8,) and torch.all(block.layer_scale == 1e-6)
    assert block.drop_path.drop_prob == 0.2


def test_hgcn_block_output_is_input_plus_the_eq_3_branch() -> None:
    torch.manual_seed(0)
    block = HGCNBlock(8, 2, 3).eval()
    with torch.no_grad():
        block.layer_scale.zero_()  # removes eq. 2's hgConv term: h = stem(x)
    x = torch.randn(1, 8, 3, 3, 3)
    h = block.stem(x)
    expected = x + block.conv2(nn.functional.leaky_relu(block.conv1(block.norm_out(h)), 0.01))
    torch.testing.assert_close(block(x), expected)


def test_hgcn_block_rejects_odd_channels() -> None:
    with pytest.raises(ValueError, match="even channel count"):
        HGCNBlock(15, 2)
