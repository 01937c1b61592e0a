"""What one training step holds in memory, from a simulation of that step on the ``meta`` device.

The planner needs the peak memory of a training iteration of the network it plans, at every patch it
considers. Extrapolating a per-voxel figure measured at one tiny patch does not work: there the Mamba
stages hold two tokens and their buffers that do not scale with the tokens dominate (a 6-stage plan was
estimated at 6.8 GB where a real step peaked at 1.9 GB). So clinix runs the real thing on tensors that
have shapes and no data: the network of the plan, built on ``meta``, its loss with deep supervision, the
backward pass, gradient clipping and the plan's optimizer, two steps (the second holds the optimizer's
state). A ``TorchDispatchMode`` adds up the bytes of every tensor storage alive at each moment; the
largest sum, plus the parameters themselves, is the step's peak. It counts what a real step allocates:
activations saved for backward, the backward's transient gradients, parameter gradients and optimizer
state, and the selective scan's own buffers for the backend that will run it (``clinix.net.scan.meta``).
A simulation takes a fraction of a second.

Checked against real steps (``bench/plan_memory.py``: every ``--arch`` at three points up to the
48×128×160 patch of a 6-stage network, batch 2): the simulation counts the bytes a real CPU step
allocates to within Adam's step counters (``tests/plan/test_memory.py``). What the operating system sees
is more: the C library serves blocks under its mmap threshold from heaps it keeps, which fragment, so the
resident set of a CPU step is ``CPU_PROCESS_GB`` + the peak + ``HEAP_RETENTION`` × the peak of such
blocks (within 6 % of every measured point). On CUDA, autocast keeps convolution and norm activations in
half precision while the Mamba layers and the losses stay in float32: ``AMP_ACTIVATION_FACTOR`` (assumed,
no GPU having been at hand to measure it) scales the activations, and ``CUDA_OVERHEAD_GB`` stands for the
context and cuDNN's workspaces.

For one network the peak is affine in the voxels a step sees (every tensor but the weights' scales with
``batch × patch volume``), so ``MemoryModel`` extrapolates one simulation to other batches.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from clinix.net.network import NetworkConfig
from clinix.net.registry import build_network
from clinix.net.scan.meta import simulated_scan
from clinix.plan.model import OptimizerSettings

GIB = 1024**3
MODEL_VERSION = 2  # 1: per-voxel bytes from the smallest patch; 2: simulated steps (this module)
# CPU, measured by bench/plan_memory.py on the build machine (glibc 2.36, torch 2.13, 2 cores): a process
# with torch and clinix imported holds 0.41 GB. glibc serves blocks under its mmap threshold (at most
# 32 MiB) from heaps it keeps, and they fragment: the resident set grew by the simulated peak plus
# 0.22-0.79 (0.65 fits every point within 6 %) of the peak of such blocks.
CPU_PROCESS_GB = 0.41
HEAP_BLOCK_LIMIT = 32 * 1024**2
HEAP_RETENTION = 0.65
# CUDA: context, cuDNN workspaces, the caching allocator's rounding (not measured here: no GPU).
CUDA_OVERHEAD_GB = 1.0
AMP_ACTIVATION_FACTOR = 0.6
# The loader keeps 2 batches per worker (4 workers) of enlarged patches in host memory (train/loader.py).
LOADER_BATCHES_IN_FLIGHT = 8
LOADER_PATCH_GROWTH = 2.5  # enlarged patch volume / patch volume, about (train/augment.py)


class LiveTensorBytes(TorchDispatchMode):
    """Within the mode, ``live`` is the bytes of tensor storages created and not yet freed, ``peak`` its
    maximum; ``heap_live`` and ``heap_peak`` the same for storages under ``HEAP_BLOCK_LIMIT``."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.heap_live = self.heap_peak = 0
        self._tracked: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata  # one C++ storage, however many views and Python wrappers share it
        if key in self._tracked:
            return
        size = storage.nbytes()
        self._tracked.add(key)
        self._add(size)
        weakref.finalize(storage, self._freed, key, size)

    def _add(self, size: int) -> None:
        self.live += size
        self.peak = max(self.peak, self.live)
        if size < HEAP_BLOCK_LIMIT:
            self.heap_live += size
            self.heap_peak = max(self.heap_peak, self.heap_live)

    def _freed(self, key: int, size: int) -> None:
        self._tracked.discard(key)
        self._add(-size)


class StepMemory(NamedTuple):
    """What a training step holds: ``peak`` bytes at its worst moment (weights, gradients, optimizer
    state and activations), of which ``fixed`` do not depend on the patch (weights, gradients, state),
    and ``heap_peak``, the peak of tensors small enough for the C library's heaps (CPU, module docstring).
    """

    peak: float
    fixed: float
    heap_peak: float

    def device_gb(self, device: str) -> float:
        """The memory the step needs on ``device``: on CUDA under autocast, with the context; on the CPU,
        the resident memory of the training process."""
        if device == "cuda":
            return (self.fixed + AMP_ACTIVATION_FACTOR * (self.peak - self.fixed)) / GIB + CUDA_OVERHEAD_GB
        return CPU_PROCESS_GB + (self.peak + HEAP_RETENTION * self.heap_peak) / GIB


def simulate_training_step(
    arch: str,
    config: NetworkConfig,
    patch: list[int] | tuple[int, ...],
    batch_size: int,
    loss: str,
    optimizer: OptimizerSettings,
    scan_backend: str,
) -> StepMemory:
    """A training step's memory (module docstring; ``_simulated_step``), remembered for the same arguments."""
    key = json.dumps([arch, config.to_dict(), list(patch), batch_size, loss, asdict(optimizer), scan_backend])
    return _simulate(key)


@lru_cache(maxsize=512)
def _simulate(key: str) -> StepMemory:
    arch, config_dict, patch, batch_size, loss, optimizer_dict, scan_backend = json.loads(key)
    config, optimizer = NetworkConfig.from_dict(config_dict), OptimizerSettings(**optimizer_dict)
    return _simulated_step(arch, config, patch, batch_size, loss, optimizer, scan_backend)


def _simulated_step(
    arch: str,
    config: NetworkConfig,
    patch: list[int],
    batch_size: int,
    loss: str,
    optimizer: OptimizerSettings,
    scan_backend: str,
) -> StepMemory:
    """One training step on the meta device, its tensors counted (module docstring).

    The step simulated is a second one: the optimizer's state, which a first step creates only after its
    backward, exists throughout (it is made beforehand by a step on zero gradients, outside the count).
    ``scan_backend`` is the selective scan that will train (``clinix.net.scan.meta.SIMULATED_BACKENDS``).
    """
    from clinix.train.losses import build_loss, deep_supervision_weights  # train/ imports plan/
    from clinix.train.schedule import build_optimizer

    with torch.device("meta"):
        network = build_network(arch, NetworkConfig.from_dict({**config.to_dict(), "deep_supervision": True}))
    network.train()
    loss_fn = build_loss(
        loss, batch_dice=False, deep_supervision_weights=deep_supervision_weights(config.num_stages - 1)
    )
    steps = build_optimizer(network.parameters(), optimizer)
    for parameter in network.parameters():
        parameter.grad = torch.zeros_like(parameter)
    steps.step()  # creates the optimizer's state
    state = [t for values in steps.state.values() for t in values.values() if isinstance(t, torch.Tensor)]
    data = torch.empty(batch_size, config.in_channels, *patch, device="meta")
    target = torch.zeros(batch_size, 1, *patch, dtype=torch.int16, device="meta")
    tracker = LiveTensorBytes()
    with simulated_scan(scan_backend), tracker:
        steps.zero_grad(set_to_none=True)
        loss_fn(network(data), target).backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), optimizer.grad_clip)
        steps.step()
    held = [t.untyped_storage().nbytes() for t in (*network.parameters(), *network.buffers(), *state)]
    parameters = sum(p.numel() * p.element_size() for p in network.parameters())
    fixed = 2 * parameters + optimizer_state_bytes(network, optimizer)  # weights, gradients, state
    heap_held = sum(size for size in held if size < HEAP_BLOCK_LIMIT)
    return StepMemory(sum(held) + tracker.peak, fixed, heap_held + tracker.heap_peak)


def optimizer_state_bytes(network: torch.nn.Module, optimizer: OptimizerSettings) -> int:
    """Adam's two moments, or SGD's momentum buffer, of every parameter (float32)."""
    buffers = 2 if optimizer.name == "adam" else 1
    return buffers * sum(p.numel() * p.element_size() for p in network.parameters())


@dataclass(frozen=True)
class MemoryModel:
    """A training step's memory as it scales with the voxels a step sees, for one network: the fixed
    bytes, plus per-voxel bytes (all tensors, and those small enough for the heaps) · batch · patch volume.
    """

    fixed: float
    per_voxel: float
    heap_per_voxel: float

    def step(self, patch: list[int] | tuple[int, ...], batch_size: int) -> StepMemory:
        voxels = batch_size * math.prod(patch)
        return StepMemory(self.fixed + self.per_voxel * voxels, self.fixed, self.heap_per_voxel * voxels)

    def device_gb(self, patch: list[int] | tuple[int, ...], batch_size: int, device: str) -> float:
        """The memory a step of ``batch_size`` at ``patch`` needs on ``device`` ("cuda" or "cpu"), in GiB."""
        return self.step(patch, batch_size).device_gb(device)


def fit_memory_model(
    arch: str,
    config: NetworkConfig,
    patch: list[int] | tuple[int, ...],
    loss: str,
    optimizer: OptimizerSettings,
    scan_backend: str,
    batch_size: int = 2,
) -> MemoryModel:
    """The model of ``config``, from one simulated step of ``batch_size`` at ``patch`` (the bisection's)."""
    measured = simulate_training_step(arch, config, patch, batch_size, loss, optimizer, scan_backend)
    voxels = batch_size * math.prod(patch)
    return MemoryModel(measured.fixed, (measured.peak - measured.fixed) / voxels, measured.heap_peak / voxels)


def training_memory_gb(
    arch: str,
    config: NetworkConfig,
    patch: list[int] | tuple[int, ...],
    batch_size: int,
    loss: str,
    optimizer: OptimizerSettings,
    scan_backend: str,
    device: str,
) -> float:
    """The estimate for one exact configuration: a simulated step, then what ``device`` adds (GiB)."""
    return simulate_training_step(arch, config, patch, batch_size, loss, optimizer, scan_backend).device_gb(device)


def loader_gb(patch: list[int] | tuple[int, ...], batch_size: int, channels: int) -> float:
    """Host memory of the batches the loader keeps ready (float32 data, int16 labels, enlarged patches)."""
    per_batch = batch_size * LOADER_PATCH_GROWTH * math.prod(patch) * (4 * channels + 2)
    return LOADER_BATCHES_IN_FLIGHT * per_batch / GIB
