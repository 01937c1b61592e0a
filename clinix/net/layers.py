"""Small layers shared by every block: 3D convolution with "same" padding, InstanceNorm, LeakyReLU,
the channels-first LayerNorm, DropPath (stochastic depth) and He initialisation (SPEC §4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Size3 = tuple[int, int, int]

NEGATIVE_SLOPE = 0.01  # LeakyReLU slope of nnU-Net and the released code
INSTANCE_NORM_EPS = 1e-5
LAYER_NORM_EPS = 1e-6  # HorNet's channels-first LayerNorm


def as_size3(value: int | Sequence[int]) -> Size3:
    """``3`` -> ``(3, 3, 3)``; a 3-sequence is returned as a tuple of ints."""
    if isinstance(value, int):
        return (value, value, value)
    if len(value) != 3:
        raise ValueError(f"expected 3 sizes (z, y, x), got {list(value)}")
    return (int(value[0]), int(value[1]), int(value[2]))


def conv3d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int] = 1,
    stride: int | Sequence[int] = 1,
    bias: bool = True,
    groups: int = 1,
) -> nn.Conv3d:
    """A Conv3d with ``k // 2`` padding per axis: odd kernels keep the size at stride 1."""
    kernel = as_size3(kernel_size)
    return nn.Conv3d(
        in_channels,
        out_channels,
        kernel,
        stride=as_size3(stride),
        padding=tuple(k // 2 for k in kernel),
        bias=bias,
        groups=groups,
    )


def instance_norm(channels: int) -> nn.InstanceNorm3d:
    """InstanceNorm3d with affine parameters and eps 1e-5, as nnU-Net."""
    return nn.InstanceNorm3d(channels, eps=INSTANCE_NORM_EPS, affine=True)


def leaky_relu() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


class ConvNormAct(nn.Sequential):
    """Conv -> InstanceNorm -> LeakyReLU; the encoder's stem. ``(B, C_in, *S) -> (B, C_out, *S / stride)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
    ) -> None:
        super().__init__(
            conv3d(in_channels, out_channels, kernel_size, stride),
            instance_norm(out_channels),
            leaky_relu(),
        )


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over the channel axis of ``(B, C, *S)`` at every voxel (HorNet's "channels_first")."""

    def __init__(self, num_channels: int, eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S) -> (B, C, *S)``."""
        channels_last = x.movedim(1, -1)
        normalised = F.layer_norm(channels_last, (channels_last.shape[-1],), self.weight, self.bias, self.eps)
        return normalised.movedim(-1, 1)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole sample's branch with probability ``drop_prob`` and
    scale the kept ones by ``1 / (1 - drop_prob)`` so the expectation is unchanged. Identity in eval.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must lie in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...) -> (B, ...)``."""
        if not self.training or self.drop_prob == 0.0:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = x.new_empty(mask_shape).bernoulli_(keep_prob)
        return x * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def init_conv3d_he(module: nn.Module) -> None:
    """He init of nnU-Net (``InitWeights_He(1e-2)``) for one Conv3d; other modules are left alone.

    Use as ``network.apply(init_conv3d_he)``. Mamba's Linear and Conv1d keep their own init.
    """
    if isinstance(module, nn.Conv3d):
        nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
