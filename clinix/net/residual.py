"""Residual blocks: the ResNet-D block of every encoder stage and the decoder's merge block (SPEC §4.1, §4.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from clinix.net.layers import as_size3, conv3d, instance_norm, leaky_relu


class BasicBlockD(nn.Module):
    """ResNet-D basic block: ``LReLU(IN(conv(LReLU(IN(conv_s(x))))) + skip(x))``.

    The first conv carries the stride. The skip is the identity, or, when the shape changes,
    ``AvgPool(stride)`` (if strided) followed by ``1x1 conv (no bias) -> IN`` (if the width changes):
    ResNet-D averages before projecting so no voxel is skipped by a strided 1x1 conv.

    Shapes: ``(B, in_channels, Z, Y, X) -> (B, out_channels, Z/sz, Y/sy, X/sx)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        stride = as_size3(stride)
        self.conv1 = conv3d(in_channels, out_channels, kernel_size, stride)
        self.norm1 = instance_norm(out_channels)
        self.conv2 = conv3d(out_channels, out_channels, kernel_size)
        self.norm2 = instance_norm(out_channels)
        self.act = leaky_relu()
        skip: list[nn.Module] = []
        if stride != (1, 1, 1):
            skip.append(nn.AvgPool3d(stride, stride))
        if in_channels != out_channels:
            skip += [conv3d(in_channels, out_channels, 1, bias=False), instance_norm(out_channels)]
        self.skip = nn.Sequential(*skip)  # empty Sequential is the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        return self.act(residual + self.skip(x))


class BasicResBlock(nn.Module):
    """The decoder's merge block: ``LReLU(IN(conv(LReLU(IN(conv(x))))) + conv1x1(x))``.

    The 1x1 shortcut (with bias) maps the concatenated ``2C`` channels to ``C``.
    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3) -> None:
        super().__init__()
        self.conv1 = conv3d(in_channels, out_channels, kernel_size)
        self.norm1 = instance_norm(out_channels)
        self.conv2 = conv3d(out_channels, out_channels, kernel_size)
        self.norm2 = instance_norm(out_channels)
        self.shortcut = conv3d(in_channels, out_channels, 1)
        self.act = leaky_relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        return self.act(residual + self.shortcut(x))
