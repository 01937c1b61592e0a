"""The residual decoder with deep supervision (SPEC §4.4; reference §1.5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from clinix.net.layers import Size3, conv3d, maybe_checkpointed, upsample_nearest
from clinix.net.residual import BasicBlockD, BasicResBlock


class DecoderLevel(nn.Module):
    """One decoder level at the resolution of an encoder skip::

        up  = nearest_upsample(Conv1x1(C_below -> C)(x))     # no transposed conv
        sk  = BasicBlockD(C -> C)(skip)                      # a residual block on the skip
        x   = BasicResBlock(2C -> C, 1x1 shortcut)(cat(up, sk))
        seg = Conv1x1(C -> num_classes)(x)                   # the level's segmentation head

    The 1×1 conv commutes with nearest upsampling (each output voxel is the same dot product), so it runs
    at the coarse resolution: the released code's result at an eighth of that conv's cost per 2×2×2 step.

    Shapes: ``x (B, C_below, *S_below)``, ``skip (B, C, *S)`` -> ``(B, C, *S)``; ``head`` gives ``(B, K, *S)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size3, num_classes: int) -> None:
        super().__init__()
        self.up = conv3d(in_channels, out_channels, 1)
        self.skip_block = BasicBlockD(out_channels, out_channels, kernel_size)
        self.merge = BasicResBlock(2 * out_channels, out_channels, kernel_size)
        self.head = conv3d(out_channels, num_classes, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = upsample_nearest(self.up(x), skip.shape[2:])
        return self.merge(torch.cat([up, self.skip_block(skip)], dim=1))


class ResidualDecoder(nn.Module):
    """Bottleneck residual block, then one ``DecoderLevel`` per skip from the deepest to full resolution.

    With ``deep_supervision`` the forward returns the logits of every level, full resolution first
    (S - 1 tensors for S encoder stages: the bottleneck has no head); without it only the full-resolution
    logits. Every level keeps its head either way, so one checkpoint serves training and inference. With
    ``checkpointing`` the bottleneck and every level recompute their activations in backward.

    Shapes: ``skips[s] (B, features[s], *S_s)`` -> ``[(B, K, *S_0), (B, K, *S_1), ..., (B, K, *S_{S-2})]``.
    """

    def __init__(
        self,
        features: Sequence[int],
        kernel_sizes: Sequence[Size3],
        num_classes: int,
        deep_supervision: bool = True,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.bottleneck = BasicBlockD(features[-1], features[-1], kernel_sizes[-1])
        self.levels = nn.ModuleList(
            DecoderLevel(features[s + 1], features[s], kernel_sizes[s], num_classes)
            for s in reversed(range(len(features) - 1))
        )
        self.deep_supervision = deep_supervision
        self.checkpointing = checkpointing

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        x = maybe_checkpointed(self.checkpointing, self.bottleneck, skips[-1])
        logits = []
        for level, skip in zip(self.levels, reversed(skips[:-1]), strict=True):
            x = maybe_checkpointed(self.checkpointing, level, x, skip)
            if self.deep_supervision:
                logits.append(level.head(x))
        if not self.deep_supervision:
            return self.levels[-1].head(x)
        return logits[::-1]
