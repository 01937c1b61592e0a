"""Small layers shared by every block: 3D convolution with "same" padding, InstanceNorm, LeakyReLU,
the channels-first LayerNorm, nearest upsampling, DropPath (stochastic depth) and He initialisation
(SPEC §4.1).

On the CPU a network of 32 first-stage features or more runs in the channels-last 3D memory format
(``clinix.net.network.memory_format_for``): oneDNN's convolutions are 1.3–1.8× faster on it (10× for the
depthwise ones), and the LayerNorm and the Mamba layer's tokens become views instead of copies. The
layers here keep that format: ``InstanceNorm3d`` normalises a channels-last input without the layout
round trip of PyTorch's instance-norm kernel and ``upsample_nearest`` replicates voxels in place of
``F.interpolate``, which is slow on it. A channels-first input takes PyTorch's own paths, bit for bit as
before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a ``(B, C, Z, Y, X)`` tensor is laid out channels-last (and not also channels-first, C > 1)."""
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


class InstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` (affine, no running statistics) that keeps a channels-last input channels-last.

    PyTorch's instance-norm kernel turns a channels-last input into channels-first and back. Here each
    sample, viewed as ``(Z·Y·X, C)`` rows, is batch-normalised over its rows, the same statistic (biased
    variance, ``eps`` inside the root) on the memory as it lies. The rows are first shifted by their mean,
    taken without gradient: a norm is blind to a constant shift, so the result and its gradient are
    unchanged in exact arithmetic, while the channels-last kernels' sums (in batch and group norm alike)
    would otherwise lose digits on inputs far from zero (1 % of a stem's gradient, against 1e-5 for
    PyTorch's kernel). 1.7× faster forward and backward than that kernel on 2 CPU cores. The parameters are
    ``nn.InstanceNorm3d``'s, so checkpoints load either way.

    Shapes: ``(B, C, Z, Y, X) -> (B, C, Z, Y, X)``, in the input's memory format.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_channels_last(x):
            return super().forward(x)
        batch, channels, *spatial = x.shape
        rows = x.permute(0, 2, 3, 4, 1).reshape(batch, -1, channels)  # a view: (B, Z·Y·X, C)
        rows = rows - rows.detach().mean(dim=1, keepdim=True)
        normalised = torch.stack(
            [F.batch_norm(sample, None, None, self.weight, self.bias, True, 0.0, self.eps) for sample in rows]
        )
        return normalised.view(batch, *spatial, channels).permute(0, 4, 1, 2, 3)


def instance_norm(channels: int) -> InstanceNorm3d:
    """InstanceNorm3d with affine parameters and eps 1e-5, as nnU-Net."""
    return InstanceNorm3d(channels, eps=INSTANCE_NORM_EPS, affine=True)


def upsample_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour upsampling of ``(B, C, *S)`` to ``(B, C, *size)``, each edge an integer multiple.

    Every voxel is repeated ``size / S`` times per axis, which is what ``F.interpolate(mode="nearest")``
    computes for integer factors; a channels-last input is expanded in its own layout and stays so.
    """
    if not is_channels_last(x):
        return F.interpolate(x, size=tuple(size), mode="nearest")
    batch, channels, *spatial = x.shape
    factors = [target // edge for target, edge in zip(size, spatial, strict=True)]
    if any(edge * factor != target for edge, factor, target in zip(spatial, factors, size, strict=True)):
        raise ValueError(f"upsampling {tuple(spatial)} to {tuple(size)} needs integer factors")
    (z, y, w), (fz, fy, fx) = spatial, factors
    repeated = x.permute(0, 2, 3, 4, 1)[:, :, None, :, None, :, None, :].expand(batch, z, fz, y, fy, w, fx, channels)
    return repeated.reshape(batch, z * fz, y * fy, w * fx, channels).permute(0, 4, 1, 2, 3)


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


def maybe_checkpointed(enabled: bool, block: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """``block(*inputs)``; with ``enabled`` while gradients are recorded, its activations are not kept but
    recomputed in backward (``torch.utils.checkpoint``, non-reentrant, the RNG state replayed so DropPath
    draws the same masks): the gradients are those of the plain call.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


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
