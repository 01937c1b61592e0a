"""Devices and multi-process training under ``torchrun`` (DistributedDataParallel).

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is one process.
Each rank trains on ``plan batch // world size`` samples per step, drawn from its own stream (seeded
with the run seed and the rank), so the global batch stays the plan's. A different world size therefore
draws different batches: runs are repeatable for a fixed seed, device and world size only.
Rank 0 alone writes checkpoints, logs and the final validation; the loss and pseudo-Dice statistics
are summed over ranks first, so every rank sees the same numbers.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from clinix.device import resolve_device
from clinix.errors import ClinixError

DDP_MIN_WEIGHT = 1e-6  # the weight given to a zero-weight output under DDP (reference §5.5)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the job; rank 0 of 1 for a plain run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_environment() -> DistributedContext:
    """The context ``torchrun`` describes in the environment (a single process when it says nothing)."""
    try:
        return DistributedContext(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as error:
        raise ClinixError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({error})") from None


def training_device(requested: str, context: DistributedContext) -> torch.device:
    """The device of ``--device`` (``auto``: CUDA, then MPS, then CPU; one that is absent is a ClinixError).

    Under torchrun each process takes CUDA device ``LOCAL_RANK``.
    """
    device = resolve_device(requested)
    if device.type != "cuda":
        return device
    torch.cuda.set_device(context.local_rank)
    return torch.device("cuda", context.local_rank)


def start_process_group(context: DistributedContext, device: torch.device) -> None:
    """Join the job's process group: NCCL between CUDA devices, gloo otherwise. Nothing for one process."""
    if context.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size)


def stop_process_group(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if context.enabled:
        dist.barrier()


def sum_over_ranks(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The element-wise sum of ``values`` over all ranks (``values`` itself for one process)."""
    if context.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def rank_batch_size(batch_size: int, context: DistributedContext) -> int:
    """Each rank's share of the plan's batch: ``batch // world`` but at least 1 (with a warning)."""
    share = max(batch_size // context.world_size, 1)
    if batch_size % context.world_size:
        warnings.warn(
            f"batch size {batch_size} does not split evenly over {context.world_size} processes: "
            f"each trains on {share}, a global batch of {share * context.world_size}",
            stacklevel=2,
        )
    return share


def ddp_loss_weights(weights: list[float], context: DistributedContext) -> list[float]:
    """Deep-supervision weights under DDP: a 0 becomes ``DDP_MIN_WEIGHT``, then all are renormalised.

    DDP expects a gradient for every parameter; a skipped output would leave its head without one.
    """
    if not context.enabled:
        return weights
    lifted = [weight if weight > 0 else DDP_MIN_WEIGHT for weight in weights]
    return [weight / sum(lifted) for weight in lifted]


def wrap_model(network: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """``network`` under DistributedDataParallel when several processes train it."""
    if not context.enabled:
        return network
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=device_ids)
