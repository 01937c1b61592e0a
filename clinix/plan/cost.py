"""What a planned network costs: activation memory and forward FLOPs, measured, not assumed.

nnU-Net sizes patches with a constant calibrated for its PlainConvUNet (560e6 conv-output elements per
sample ≈ 8 GB at batch 2). HGCN and Mamba stages keep far more tensors for the backward pass than two
plain convolutions, so clinix measures the network it actually plans: one forward pass on the ``meta``
device (shapes only, no arithmetic, milliseconds) records every tensor autograd saves for backward
(``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage) and the conv/linear FLOPs
(``torch.utils.flop_counter``). Every stage's tensors scale with the patch volume, so one measurement at
the smallest valid patch gives bytes and FLOPs per patch voxel for the whole search.

Measured (6 stages, features 32..320, 4 classes, 128³, batch 2, CUDA AMP factor applied): ``mambaclinix``
needs about 20 GB (7.1 kB of saved fp32 tensors per patch voxel, 11.6 bytes per nnU-Net-style conv-output
element); clinix's ``resunet`` about 21 GB. nnU-Net's constant sizes its PlainConvUNet at the same patch
and batch to 8 GB: MambaClinix needs about 2.5x that, which matches the paper training 128³ patches at
batch 2 on 24 GB cards. ``tests/plan/test_cost.py`` pins the measurement against a real CPU pass.
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

GIB = 1024**3
# fp32 Adam training holds weights, gradients and two moment buffers: 16 bytes per parameter.
BYTES_PER_PARAMETER_TRAINING = 16
# Backward briefly holds the gradient of the largest activations beside the saved tensors.
BACKWARD_TRANSIENT_FACTOR = 2.0
# CUDA context, cuDNN workspaces, allocator fragmentation.
CUDA_OVERHEAD_GB = 1.0
# Under CUDA autocast, convolutions save half-precision tensors while norms and the Mamba layers stay in
# float32. Assumed, not measured here (no GPU on the build machines): 0.6 of the fp32 activation bytes.
AMP_ACTIVATION_FACTOR = 0.6
# Forward+backward ≈ 3x the forward FLOPs. Effective throughput of a whole training step on a quiet 2-core
# CPU, measured by bench/plan_cpu.py: 41 GFLOP/s for the thin CPU-plan network (8..64 features), 94 for a
# full-width one; thin layers use the cores worst, so a figure below the thin network's is used.
TRAINING_FLOPS_FACTOR = 3.0
CPU_EFFECTIVE_FLOPS = 30e9


@dataclass(frozen=True)
class NetworkCost:
    """Per-sample costs of one network, per voxel of the training patch."""

    saved_bytes_per_voxel: float
    largest_saved_bytes_per_voxel: float
    forward_flops_per_voxel: float
    conv_output_elements_per_voxel: float
    parameters: int

    def training_memory_gb(self, patch: list[int] | tuple[int, ...], batch_size: int, device: str) -> float:
        """Peak memory of one training iteration: activations, backward transients, parameter state."""
        voxels = math.prod(patch)
        activations = (
            batch_size
            * voxels
            * (self.saved_bytes_per_voxel + BACKWARD_TRANSIENT_FACTOR * self.largest_saved_bytes_per_voxel)
        )
        if device == "cuda":
            activations *= AMP_ACTIVATION_FACTOR
        total = activations + BYTES_PER_PARAMETER_TRAINING * self.parameters
        return total / GIB + (CUDA_OVERHEAD_GB if device == "cuda" else 0.0)

    def cpu_seconds_per_iteration(self, patch: list[int] | tuple[int, ...], batch_size: int) -> float:
        """Expected seconds of one forward+backward on a 2-core CPU (a model, see CPU_EFFECTIVE_FLOPS)."""
        flops = TRAINING_FLOPS_FACTOR * self.forward_flops_per_voxel * math.prod(patch) * batch_size
        return flops / CPU_EFFECTIVE_FLOPS

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
