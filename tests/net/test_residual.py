"""ResNet-D block and the decoder's BasicResBlock (SPEC §4.1, §4.4; reference §1.2, §1.5)."""

from __future__ import annotations

import torch
from torch import nn

from clinix.net.layers import InstanceNorm3d
from clinix.net.residual import BasicBlockD, BasicResBlock


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_basic_block_d_downsamples_and_projects_when_shape_and_width_change() -> None:
    block = BasicBlockD(32, 64, 3, stride=2)
    assert block(torch.zeros(1, 32, 8, 8, 8)).shape == (1, 64, 4, 4, 4)
    assert [type(m) for m in block.skip] == [nn.AvgPool3d, nn.Conv3d, InstanceNorm3d]
    assert block.skip[1].bias is None
    # conv1 27·32·64+64, conv2 27·64·64+64, two INs 2·128, skip conv 32·64 (no bias) + IN 128:
    # reference §5.1 gives 168,448 for stage 1's block.
    assert _count(block) == 27 * 32 * 64 + 64 + 27 * 64 * 64 + 64 + 256 + 32 * 64 + 128 == 168_448


def test_basic_block_d_has_an_identity_skip_when_the_shape_is_kept() -> None:
    block = BasicBlockD(32, 32, 3)
    assert len(block.skip) == 0
    assert _count(block) == 55_488  # reference §5.1, stage 0


def test_basic_block_d_adds_the_skip_before_the_final_activation() -> None:
    block = BasicBlockD(2, 2, 1)
    with torch.no_grad():
        block.norm2.weight.zero_()  # residual branch becomes norm2.bias = -3 everywhere
        block.norm2.bias.fill_(-3.0)
    x = torch.full((1, 2, 2, 2, 2), 1.0)
    torch.testing.assert_close(block(x), torch.full_like(x, -0.02))  # LReLU(1 - 3) = -2·0.01


def test_basic_res_block_uses_a_biased_1x1_shortcut_from_2c_to_c() -> None:
    block = BasicResBlock(640, 320, 3)
    assert block.shortcut.kernel_size == (1, 1, 1) and block.shortcut.bias is not None
    # reference §5.1: the decoder's deepest BasicResBlock has 8.50 M parameters
    assert _count(block) == 27 * 640 * 320 + 320 + 27 * 320 * 320 + 320 + 4 * 320 + 640 * 320 + 320 == 8_501_440
    assert BasicResBlock(8, 4, 3)(torch.zeros(1, 8, 4, 4, 4)).shape == (1, 4, 4, 4, 4)
