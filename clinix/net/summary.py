"""What ``clinix info`` reports about a network: parameters, forward FLOPs, scan backend, stages.

Networks are built on the meta device, so even a 70 M-parameter network at a 128³ patch is described
in about a second without allocating memory or running the selective scan.

A plans.json written by ``clinix plan`` (``clinix.plan.model.Plan``) holds the network in three
top-level keys, which ``read_architecture`` reads (other keys are ignored)::

    "arch": "mambaclinix",                   # a family of clinix.net.registry
    "patch_size": [128, 128, 128],           # (z, y, x) voxels
    "network": { ... }                       # NetworkConfig.to_dict()
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from clinix.errors import ClinixError
from clinix.net.layers import Size3
from clinix.net.network import NetworkConfig, input_divisor
from clinix.net.registry import build_network, config_for_arch
from clinix.net.scan import active_scan_backend

ARCHITECTURE_KEYS = ("arch", "patch_size", "network")
BASE_FEATURES, MAX_FEATURES = 32, 320
FLOPS_NOTE = (
    "forward pass, batch 1, convolutions and linear layers only (FLOPs = 2 x MACs); the selective-scan "
    "recurrence, normalisations, activations and interpolation are not counted"
)


@dataclass
class StageSummary:
    """One encoder stage: its width, stride, kernel, block, hgConv order, feature map and Mamba tokens."""

    stage: int
    features: int
    stride: Size3
    kernel: Size3
    block: str
    order: int | None
    feature_map: Size3
    tokens: int | None


@dataclass
class NetworkSummary:
    """The numbers ``clinix info`` prints; ``to_dict`` is its ``--json`` output."""

    arch: str
    in_channels: int
    num_classes: int
    patch_size: Size3
    parameters: int
    encoder_parameters: int
    forward_flops: int
    flops_note: str
    scan_backend: str
    stages: list[StageSummary]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters(module: nn.Module) -> int:
    """Parameters of ``module``, each shared tensor counted once (``parameters()`` deduplicates)."""
    return sum(p.numel() for p in module.parameters())


def forward_flops(network: nn.Module, in_channels: int, patch_size: Size3) -> int:
    """Forward FLOPs of one ``(1, in_channels, *patch_size)`` input, counted on meta tensors (see FLOPS_NOTE)."""
    with FlopCounterMode(display=False) as counter:
        network(torch.empty(1, in_channels, *patch_size, device="meta"))
    return counter.get_total_flops()


def default_topology(num_stages: int) -> tuple[list[int], list[Size3], list[Size3]]:
    """nnU-Net's isotropic defaults: features 32·2^s capped at 320, 3x3x3 kernels, strides 1 then 2."""
    features = [min(BASE_FEATURES * 2**s, MAX_FEATURES) for s in range(num_stages)]
    return features, [(3, 3, 3)] * num_stages, [(1, 1, 1)] + [(2, 2, 2)] * (num_stages - 1)


def _feature_maps(config: NetworkConfig, patch_size: Size3) -> list[Size3]:
    maps, current = [], patch_size
    for stride in config.strides:
        current = tuple(edge // s for edge, s in zip(current, stride, strict=True))
        maps.append(current)
    return maps


def _check_patch(config: NetworkConfig, patch_size: Sequence[int]) -> Size3:
    divisor = input_divisor(config)
    if len(patch_size) != 3 or any(edge < 1 or edge % d for edge, d in zip(patch_size, divisor, strict=True)):
        raise ClinixError(
            f"patch {list(patch_size)} must be 3 positive edges divisible by {list(divisor)} "
            f"(the product of the strides of {config.num_stages} stages)"
        )
    return tuple(int(edge) for edge in patch_size)


def summarize_network(arch: str, config: NetworkConfig, patch_size: Sequence[int]) -> NetworkSummary:
    """Describe the network of ``config`` (family ``arch``) at ``patch_size`` (z, y, x)."""
    patch = _check_patch(config, patch_size)
    with torch.device("meta"):
        network = build_network(arch, config)
    stages = [
        StageSummary(
            stage=s,
            features=config.features[s],
            stride=config.strides[s],
            kernel=config.kernel_sizes[s],
            block=config.block_map[s],
            order=config.orders[s],
            feature_map=feature_map,
            tokens=math.prod(feature_map) if config.block_map[s] == "mamba" else None,
        )
        for s, feature_map in enumerate(_feature_maps(config, patch))
    ]
    return NetworkSummary(
        arch=arch,
        in_channels=config.in_channels,
        num_classes=config.num_classes,
        patch_size=patch,
        parameters=count_parameters(network),
        encoder_parameters=count_parameters(network.encoder),
        forward_flops=forward_flops(network, config.in_channels, patch),
        flops_note=FLOPS_NOTE,
        scan_backend=active_scan_backend("cuda" if torch.cuda.is_available() else "cpu"),
        stages=stages,
    )


def summarize_arch(
    arch: str,
    num_stages: int,
    patch_size: Sequence[int],
    in_channels: int = 1,
    num_classes: int = 2,
    orders: Sequence[int] | None = None,
) -> NetworkSummary:
    """Describe family ``arch`` with ``num_stages`` stages on ``default_topology`` at ``patch_size``."""
    if num_stages < 2:
        raise ClinixError(f"a network needs at least 2 stages, got {num_stages}")
    config = config_for_arch(arch, in_channels, num_classes, *default_topology(num_stages), orders=orders)
    return summarize_network(arch, config, patch_size)


def read_architecture(plans: dict[str, Any]) -> tuple[str, NetworkConfig, Size3]:
    """``(arch, config, patch_size)`` from a plans dict; ClinixError when a key is missing or malformed."""
    missing = [key for key in ARCHITECTURE_KEYS if key not in plans]
    if missing:
        raise ClinixError(f"plans lack {', '.join(repr(k) for k in missing)}: not a plan written by 'clinix plan'")
    patch, network = plans["patch_size"], plans["network"]
    if not isinstance(patch, list) or not all(isinstance(edge, int) for edge in patch):
        raise ClinixError(f"plans: patch_size must be a list of integers, got {patch!r}")
    if not isinstance(network, dict):
        raise ClinixError("plans: network must be an object")
    return str(plans["arch"]), NetworkConfig.from_dict(network), tuple(patch)


def summarize_plans(path: str | Path) -> NetworkSummary:
    """Describe the network a plans.json file defines."""
    path = Path(path)
    try:
        plans = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ClinixError(f"{path}: cannot read plans ({error})") from None
    if not isinstance(plans, dict):
        raise ClinixError(f"{path}: plans must be a JSON object")
    return summarize_network(*read_architecture(plans))
