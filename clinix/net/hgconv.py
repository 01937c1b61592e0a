"""The high-order gated convolution (hgConv) and the HGCN block (paper §2.2, eqs. 1–6; SPEC §4.2)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from clinix.net.layers import DropPath, LayerNormChannelsFirst, conv3d, leaky_relu

Gating = Literal["add", "mul"]
GATINGS: tuple[str, ...] = ("add", "mul")
LAYER_SCALE_INIT = 1e-6


def hgconv_channel_splits(width: int, order: int) -> list[int]:
    """The sub-vector widths ``d_j = T / 2^(n-1-j)``, j = 0..n-1 (eq. 5): ``(16, 3) -> [4, 8, 16]``.

    Raises ValueError when ``T`` is not divisible by ``2^(n-1)`` or the order is below 1.
    """
    if order < 1:
        raise ValueError(f"hgConv order must be at least 1, got {order}")
    if width % 2 ** (order - 1):
        raise ValueError(
            f"hgConv of order {order} needs a width divisible by 2^{order - 1} = {2 ** (order - 1)}, got {width}"
        )
    return [width // 2 ** (order - 1 - j) for j in range(order)]


class HgConv(nn.Module):
    """hgConv of order n on width T.

    ``proj_in`` (1x1, T -> 2T) splits into ``base`` (d_0) and ``q`` (Σ d_j = 2T - d_0); ``q`` goes through a
    depthwise conv with the stage's kernel (eq. 4, scale s = 1). The recursion (eq. 6) combines
    ``p = base ∘ q_0`` then ``p = Φ_j(p) ∘ q_{j+1}``, Φ_j a 1x1 conv d_j -> d_{j+1}, and ``proj_out``
    (1x1, T -> T) closes it. ``∘`` is addition with ``gating="add"`` (eq. 6 and the released code) and
    the product with ``gating="mul"`` (HorNet's gnConv); both have the same parameters.

    Shapes: ``(B, T, *S) -> (B, T, *S)``.
    """

    def __init__(
        self,
        width: int,
        order: int,
        kernel_size: int | Sequence[int] = 3,
        gating: Gating = "add",
    ) -> None:
        super().__init__()
        if gating not in GATINGS:
            raise ValueError(f"gating must be one of {GATINGS}, got {gating!r}")
        self.splits = hgconv_channel_splits(width, order)
        self.gating = gating
        gated_width = sum(self.splits)
        self.proj_in = conv3d(width, 2 * width, 1)
        self.dwconv = conv3d(gated_width, gated_width, kernel_size, groups=gated_width)
        self.pointwise = nn.ModuleList(conv3d(d_in, d_out, 1) for d_in, d_out in itertools.pairwise(self.splits))
        self.proj_out = conv3d(width, width, 1)

    def _combine(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return p + q if self.gating == "add" else p * q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base, q = torch.split(self.proj_in(x), [self.splits[0], sum(self.splits)], dim=1)
        gates = torch.split(self.dwconv(q), self.splits, dim=1)  # eq. 4: [V_0, ..., V_{n-1}]
        p = self._combine(base, gates[0])  # eq. 6, j = 0
        for phi, gate in zip(self.pointwise, gates[1:], strict=True):
            p = self._combine(phi(p), gate)  # eq. 6, j >= 1
        return self.proj_out(p)


class HGCNBlock(nn.Module):
    """The HGCN block on C channels with working width T = C/2 (eqs. 1–3)::

        h   = Conv1x1(C -> T)(x)                          # eq. 1, the stem
        h   = h + DropPath(γ ⊙ hgConv(LN(h)))             # eq. 2, γ a layer scale initialised to 1e-6
        y   = Conv_k(C -> C)(LReLU(Conv_k(T -> C)(LN(h)))) # eq. 3
        out = x + DropPath(y)

    Shapes: ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(
        self,
        channels: int,
        order: int,
        kernel_size: int | Sequence[int] = 3,
        drop_path: float = 0.0,
        gating: Gating = "add",
    ) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"an HGCN block needs an even channel count, got {channels}")
        width = channels // 2
        self.stem = conv3d(channels, width, 1)
        self.norm_in = LayerNormChannelsFirst(width)
        self.hgconv = HgConv(width, order, kernel_size, gating)
        self.layer_scale = nn.Parameter(torch.full((width,), LAYER_SCALE_INIT))
        self.norm_out = LayerNormChannelsFirst(width)
        self.conv1 = conv3d(width, channels, kernel_size)
        self.act = leaky_relu()
        self.conv2 = conv3d(channels, channels, kernel_size)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # eq. 1
        gamma = self.layer_scale[:, None, None, None]
        h = h + self.drop_path(gamma * self.hgconv(self.norm_in(h)))  # eq. 2
        y = self.conv2(self.act(self.conv1(self.norm_out(h))))  # eq. 3
        return x + self.drop_path(y)
