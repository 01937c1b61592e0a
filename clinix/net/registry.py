"""Network families selectable by ``--arch`` (SPEC §4.4), so the paper's Table 4 ablations can be rerun.

==================  =========================================================================
``mambaclinix``     HGCN in the first ceil(S/2) stages (orders stage+2 clamped to [2, 6]), Mamba after
``resunet``         a residual block in every stage (the ablation baseline)
``mamba-only``      residual blocks in the first ceil(S/2) stages, Mamba after
``hgcn-only``       HGCN in every stage, orders stage+2 clamped to [2, 6] (6 stages: [2,3,4,5,6,6])
``hgcn-uniform-N``  HGCN in every stage, order N everywhere
``umamba-bot``      residual blocks, one Mamba layer in the last stage (the bottleneck); our U-Mamba-Bot
                    counterpart with MambaClinix's decoder and residual Mamba layer
==================  =========================================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from clinix.errors import ClinixError
from clinix.net.network import ClinixUNet, NetworkConfig

MIN_ORDER, MAX_ORDER = 2, 6
ARCH_NAMES: tuple[str, ...] = ("mambaclinix", "resunet", "mamba-only", "hgcn-only", "hgcn-uniform-N", "umamba-bot")
_UNIFORM = re.compile(r"hgcn-uniform-(\d+)")


def default_order(stage: int) -> int:
    """The interaction order of an HGCN stage: ``stage + 2`` clamped to [2, 6] (paper eq. 11)."""
    return min(max(stage + 2, MIN_ORDER), MAX_ORDER)


def block_map_for_arch(arch: str, num_stages: int) -> list[str]:
    """One block name per stage for ``arch``; ClinixError for an unknown family."""
    early = math.ceil(num_stages / 2)
    late = num_stages - early
    if arch == "mambaclinix":
        return ["hgcn"] * early + ["mamba"] * late
    if arch == "resunet":
        return ["residual"] * num_stages
    if arch == "mamba-only":
        return ["residual"] * early + ["mamba"] * late
    if arch == "hgcn-only" or _UNIFORM.fullmatch(arch):
        return ["hgcn"] * num_stages
    if arch == "umamba-bot":
        return ["residual"] * (num_stages - 1) + ["mamba"]
    raise ClinixError(f"unknown architecture {arch!r}; choose from {', '.join(ARCH_NAMES)}")


def _orders_for_arch(arch: str, block_map: Sequence[str], orders: Sequence[int] | None) -> list[int | None]:
    hgcn_stages = [s for s, block in enumerate(block_map) if block == "hgcn"]
    if orders is None:
        uniform = _UNIFORM.fullmatch(arch)
        orders = [int(uniform.group(1)) if uniform else default_order(s) for s in hgcn_stages]
    elif not hgcn_stages:
        raise ClinixError(f"{arch} has no HGCN stages, so orders do not apply")
    elif len(orders) != len(hgcn_stages):
        raise ClinixError(f"{arch}: {len(orders)} orders given for {len(hgcn_stages)} HGCN stages {hgcn_stages}")
    per_stage: list[int | None] = [None] * len(block_map)
    for stage, order in zip(hgcn_stages, orders, strict=True):
        per_stage[stage] = int(order)
    return per_stage


def config_for_arch(
    arch: str,
    in_channels: int,
    num_classes: int,
    features: Sequence[int],
    kernel_sizes: Sequence[Sequence[int]],
    strides: Sequence[Sequence[int]],
    orders: Sequence[int] | None = None,
    deep_supervision: bool = True,
    gating: str = "add",
    checkpointing: bool = False,
) -> NetworkConfig:
    """The ``NetworkConfig`` of family ``arch`` on a given topology.

    ``orders`` overrides the hgConv orders of the HGCN stages, in stage order (e.g. ``[4, 5, 6]`` for
    the three HGCN stages of a 6-stage ``mambaclinix``). Bad names or orders are a ClinixError.
    """
    block_map = block_map_for_arch(arch, len(features))
    return NetworkConfig(
        in_channels=in_channels,
        num_classes=num_classes,
        features=list(features),
        kernel_sizes=list(kernel_sizes),
        strides=list(strides),
        block_map=block_map,
        orders=_orders_for_arch(arch, block_map, orders),
        deep_supervision=deep_supervision,
        gating=gating,
        checkpointing=checkpointing,
    )


def build_network(arch: str, config: NetworkConfig) -> ClinixUNet:
    """The network of ``config``, checked to be of family ``arch`` (its block map; orders may differ)."""
    expected = block_map_for_arch(arch, config.num_stages)
    if config.block_map != expected:
        raise ClinixError(f"the config's block map {config.block_map} is not {arch!r} ({expected})")
    return ClinixUNet(config)
