"""The U-Net assembled from a ``NetworkConfig`` (paper §2.1, §2.4; SPEC §4).

Encoder stage s: ``BasicBlockD(C_{s-1} -> C_s, stride_s)``, then one block from ``block_map[s]``:
an HGCN block of order ``orders[s]``, a residual Mamba layer, or a second ``BasicBlockD`` (the ablation
baseline's "standard residual block"). The stage outputs are the skips; the last is the bottleneck.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clinix.errors import ClinixError
from clinix.net.decoder import ResidualDecoder
from clinix.net.hgconv import GATINGS, HGCNBlock, hgconv_channel_splits
from clinix.net.layers import (
    ConvNormAct,
    LayerNormChannelsFirst,
    Size3,
    as_size3,
    init_conv3d_he,
    maybe_checkpointed,
)
from clinix.net.mamba import ResidualMambaLayer
from clinix.net.residual import BasicBlockD

BLOCKS: tuple[str, ...] = ("hgcn", "mamba", "residual")


@dataclass
class NetworkConfig:
    """Everything that fixes a network's structure; plain data that round-trips through JSON.

    Per-stage lists have one entry per encoder stage. ``orders[s]`` is the hgConv order of an
    ``"hgcn"`` stage and None for the others. ``strides[0]`` must be (1, 1, 1). ``checkpointing`` changes
    how a training step runs, not the weights (``ClinixUNet``).
    """

    in_channels: int
    num_classes: int
    features: list[int]
    kernel_sizes: list[Size3]
    strides: list[Size3]
    block_map: list[str]
    orders: list[int | None]
    deep_supervision: bool = True
    drop_path_rate: float = 0.5
    gating: str = "add"
    checkpointing: bool = False  # recompute each encoder stage and decoder level in backward

    def __post_init__(self) -> None:
        self.features = [int(c) for c in self.features]
        self.kernel_sizes = [as_size3(k) for k in self.kernel_sizes]
        self.strides = [as_size3(s) for s in self.strides]
        self.block_map = list(self.block_map)
        self.orders = [None if n is None else int(n) for n in self.orders]
        _check_config(self)

    @property
    def num_stages(self) -> int:
        return len(self.features)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Inverse of ``to_dict``; unknown or missing keys are a ClinixError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ClinixError(f"network config: unknown keys {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise ClinixError(f"network config: {error}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _check_config(config: NetworkConfig) -> None:
    """Raise ClinixError naming the first inconsistency (lengths, strides, blocks, orders, widths)."""
    stages = config.num_stages
    if stages < 2:
        raise ClinixError(f"a network needs at least 2 stages, got {stages}")
    for name in ("kernel_sizes", "strides", "block_map", "orders"):
        if len(getattr(config, name)) != stages:
            raise ClinixError(f"{name} has {len(getattr(config, name))} entries for {stages} stages")
    if config.in_channels < 1 or config.num_classes < 1 or min(config.features) < 1:
        raise ClinixError("in_channels, num_classes and features must be positive")
    if config.strides[0] != (1, 1, 1):
        raise ClinixError(f"the first stage's stride must be (1, 1, 1), got {config.strides[0]}")
    if any(k % 2 == 0 or k < 1 for kernel in config.kernel_sizes for k in kernel):
        raise ClinixError(f"kernel sizes must be odd and positive, got {config.kernel_sizes}")
    if any(s < 1 for stride in config.strides for s in stride):
        raise ClinixError(f"strides must be positive, got {config.strides}")
    if config.gating not in GATINGS:
        raise ClinixError(f"gating must be one of {GATINGS}, got {config.gating!r}")
    if not 0.0 <= config.drop_path_rate < 1.0:
        raise ClinixError(f"drop_path_rate must lie in [0, 1), got {config.drop_path_rate}")
    for stage, (block, order, channels) in enumerate(
        zip(config.block_map, config.orders, config.features, strict=True)
    ):
        _check_stage(stage, block, order, channels)


def _check_stage(stage: int, block: str, order: int | None, channels: int) -> None:
    if block not in BLOCKS:
        raise ClinixError(f"stage {stage}: unknown block {block!r} (expected one of {BLOCKS})")
    if block != "hgcn":
        if order is not None:
            raise ClinixError(f"stage {stage}: an order is given but the stage is {block!r}, not 'hgcn'")
        return
    if order is None:
        raise ClinixError(f"stage {stage}: an 'hgcn' stage needs an order")
    if channels % 2:
        raise ClinixError(f"stage {stage}: an HGCN stage needs an even feature count, got {channels}")
    try:
        hgconv_channel_splits(channels // 2, order)
    except ValueError as error:
        raise ClinixError(f"stage {stage} ({channels} features): {error}") from None


def drop_path_rates(config: NetworkConfig) -> list[float]:
    """``linspace(0, drop_path_rate, S)``: deeper stages drop more (used by the HGCN stages only)."""
    last = config.num_stages - 1
    return [config.drop_path_rate * s / last for s in range(config.num_stages)]


def last_hgcn_stage(config: NetworkConfig) -> int | None:
    """The stage whose HGCN input gets the encoder's extra LayerNorm (the released ``conn_pos``)."""
    hgcn_stages = [s for s, block in enumerate(config.block_map) if block == "hgcn"]
    return hgcn_stages[-1] if hgcn_stages else None


def input_divisor(config: NetworkConfig) -> Size3:
    """Per axis, the product of all strides: every input (patch) edge must be a multiple of it."""
    return tuple(math.prod(stride[axis] for stride in config.strides) for axis in range(3))


class EncoderStage(nn.Module):
    """``BasicBlockD`` (the stage's downsampling), an optional LayerNorm, then the stage's block.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S / stride)``.
    """

    def __init__(self, down: BasicBlockD, norm: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.down = down
        self.norm = norm
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.norm(self.down(x)))


def _stage_block(config: NetworkConfig, stage: int, drop_path: float) -> nn.Module:
    channels, kernel = config.features[stage], config.kernel_sizes[stage]
    block = config.block_map[stage]
    if block == "hgcn":
        return HGCNBlock(channels, config.orders[stage], kernel, drop_path, config.gating)
    if block == "mamba":
        return ResidualMambaLayer(channels)
    return BasicBlockD(channels, channels, kernel)


class Encoder(nn.Module):
    """Stem conv-IN-LReLU, then one ``EncoderStage`` per stage (eqs. 11–13).

    With ``checkpointing`` the stem and every stage recompute their activations in backward.

    Shapes: ``(B, in_channels, Z, Y, X)`` -> skips ``[(B, features[s], *S_s) for s in stages]``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.checkpointing = config.checkpointing
        self.stem = ConvNormAct(config.in_channels, config.features[0], config.kernel_sizes[0])
        rates, norm_stage = drop_path_rates(config), last_hgcn_stage(config)
        widths = [config.features[0], *config.features]
        self.stages = nn.ModuleList(
            EncoderStage(
                BasicBlockD(widths[s], widths[s + 1], config.kernel_sizes[s], config.strides[s]),
                LayerNormChannelsFirst(widths[s + 1]) if s == norm_stage else nn.Identity(),
                _stage_block(config, s, rates[s]),
            )
            for s in range(config.num_stages)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = maybe_checkpointed(self.checkpointing, self.stem, x)
        skips = []
        for stage in self.stages:
            x = maybe_checkpointed(self.checkpointing, stage, x)
            skips.append(x)
        return skips


class ClinixUNet(nn.Module):
    """The segmentation U-Net of a ``NetworkConfig``: encoder, residual decoder, deep supervision.

    Shapes: ``(B, in_channels, Z, Y, X)`` with every edge a multiple of ``input_divisor(config)`` ->
    a list of ``(B, num_classes, *S_s)`` for s = 0..S-2 (deep supervision, full resolution first) or one
    ``(B, num_classes, Z, Y, X)`` tensor. ``deep_supervision`` and ``checkpointing`` may be switched after
    construction.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.input_divisor = input_divisor(config)
        self.encoder = Encoder(config)
        self.decoder = ResidualDecoder(
            config.features, config.kernel_sizes, config.num_classes, config.deep_supervision, config.checkpointing
        )
        self.apply(init_conv3d_he)
        self.to(memory_format=self.memory_format_on(next(self.parameters()).device))

    def memory_format_on(self, device: torch.device) -> torch.memory_format:
        """The memory format this network runs in on ``device`` (``memory_format_for``)."""
        return memory_format_for(device, self.config.features[0])

    def place(self, device: torch.device | str) -> ClinixUNet:
        """Move to ``device`` with the weights in that device's memory format (``memory_format_for``).

        oneDNN runs a channels-last input channels-first when the weights are not channels-last too (1.6×
        slower at 32..320 features), so training and inference place the network with this.
        """
        device = torch.device(device)
        return self.to(device=device, memory_format=self.memory_format_on(device))

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        self.decoder.deep_supervision = enabled

    @property
    def checkpointing(self) -> bool:
        """Activation checkpointing of every encoder stage and decoder level in training steps."""
        return self.encoder.checkpointing

    @checkpointing.setter
    def checkpointing(self, enabled: bool) -> None:
        self.encoder.checkpointing = self.decoder.checkpointing = enabled

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        _check_input_shape(x.shape[2:], self.input_divisor)
        return self.decoder(self.encoder(x.contiguous(memory_format=self.memory_format_on(x.device))))


# Channels-last pays on the CPU from 32 first-stage features (a 32..320 training step 1.7× faster); the
# CPU plans' thin networks (8..128) run slower in it: 45 against 31 ms per 20×56×72 tile in bf16 inference
CHANNELS_LAST_MIN_FEATURES = 32


def memory_format_for(device: torch.device, first_features: int) -> torch.memory_format:
    """Channels-last 3D on the CPU for networks of at least ``CHANNELS_LAST_MIN_FEATURES`` first-stage
    features, where oneDNN's convolutions are faster on it (clinix.net.layers), and likewise on ``meta``,
    whose simulated training steps (clinix.plan.memory) are to allocate what a CPU step does;
    channels-first elsewhere."""
    wide = first_features >= CHANNELS_LAST_MIN_FEATURES
    return torch.channels_last_3d if wide and device.type in ("cpu", "meta") else torch.contiguous_format


def _check_input_shape(spatial: Sequence[int], divisor: Size3) -> None:
    if len(spatial) != 3 or any(edge % d for edge, d in zip(spatial, divisor, strict=True)):
        raise ValueError(
            f"input spatial shape {tuple(spatial)} must be 3D with edges divisible by {divisor} "
            "(the product of the strides)"
        )
