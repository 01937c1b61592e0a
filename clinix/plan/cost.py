"""What a planned network costs in arithmetic: forward FLOPs and tensors saved for backward, per voxel.

One forward pass on the ``meta`` device (shapes only, no arithmetic, milliseconds) records the conv and
linear FLOPs (``torch.utils.flop_counter``), which are exactly proportional to the patch volume for a
given topology, and every tensor autograd saves for backward (``saved_tensors_hooks``, deduplicated by
storage), measured at the smallest valid patch. The memory of a training step is not extrapolated from
these (at the smallest patch the Mamba stages' fixed buffers dominate): ``clinix.plan.memory`` simulates
whole steps. The saved bytes per conv-output element remain the figure to compare with nnU-Net's
constant for its PlainConvUNet (560e6 elements per sample at 8 GB, batch 2): MambaClinix saves about
11.6 bytes per element, which is why its patches are smaller than a plain U-Net's at the same budget.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from clinix.net.network import NetworkConfig
from clinix.net.registry import build_network


@dataclass(frozen=True)
class NetworkCost:
    """Per-sample costs of one network, per voxel of the training patch (at the smallest patch)."""

    saved_bytes_per_voxel: float
    largest_saved_bytes_per_voxel: float
    forward_flops_per_voxel: float
    conv_output_elements_per_voxel: float
    parameters: int

    @property
    def bytes_per_conv_element(self) -> float:
        """The constant to compare with nnU-Net's: saved fp32 bytes per conv-output element."""
        return self.saved_bytes_per_voxel / self.conv_output_elements_per_voxel


def smallest_patch(config: NetworkConfig) -> tuple[int, int, int]:
    """The smallest patch whose bottleneck has 2 voxels on the first axis and 1 on the others.

    InstanceNorm needs more than one voxel per channel, hence the 2.
    """
    divisor = [math.prod(s[a] for s in config.strides) for a in range(3)]
    return (2 * divisor[0], divisor[1], divisor[2])


def measure_cost(arch: str, config: NetworkConfig) -> NetworkCost:
    """Measure ``config`` on the meta device (cached by structure)."""
    return _measure(arch, _freeze(config))


def _freeze(config: NetworkConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


@lru_cache(maxsize=64)
def _measure(arch: str, frozen_config: str) -> NetworkCost:
    config = NetworkConfig.from_dict(json.loads(frozen_config))
    with torch.device("meta"):
        network = build_network(arch, config)
    network.train()
    patch = smallest_patch(config)
    voxels = math.prod(patch)
    saved: dict[int, int] = {}
    conv_elements = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage._cdata] = storage.nbytes()
        return tensor

    def count_conv(module: torch.nn.Module, _: object, output: torch.Tensor) -> None:
        nonlocal conv_elements
        conv_elements += output[0].numel()  # per sample

    hooks = [m.register_forward_hook(count_conv) for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    inputs = torch.empty(1, config.in_channels, *patch, device="meta")
    flop_counter = FlopCounterMode(display=False)
    with flop_counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        network(inputs)
    for hook in hooks:
        hook.remove()
    parameters = sum(p.numel() for p in network.parameters())  # shared parameters are yielded once
    return NetworkCost(
        saved_bytes_per_voxel=sum(saved.values()) / voxels,
        largest_saved_bytes_per_voxel=max(saved.values()) / voxels,
        forward_flops_per_voxel=flop_counter.get_total_flops() / voxels,
        conv_output_elements_per_voxel=conv_elements / voxels,
        parameters=parameters,
    )
