"""The patch search: nnU-Net's shrink loop, judged by what the network that will train actually costs.

nnU-Net starts from a 256³-voxel patch shaped by the inverse spacing and clipped to the median shape,
and shrinks the axis most over its median size (topology.py) until a step at batch 2 fits. clinix walks
the same sequence of patches but judges "fits" for the network of the plan (the ``--arch`` family, the
user's ``--orders`` where they fit the topology): the memory of its training step, simulated exactly on
the meta device for the scan backend that will run (memory.py), within ``--memory-gb``; on a CPU also
the step's FLOPs at this machine's measured speed (speed.py) within the seconds-per-iteration budget.
Both fall along the sequence, so the first patch that fits is found by bisection: a handful of
simulations (each a fraction of a second) instead of one per step. The batch then grows while the
affine memory model of the chosen network (fitted from the simulations at batch 1 and 2) says it fits,
and the final batch is simulated exactly too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from clinix.errors import ClinixError
from clinix.net.network import NetworkConfig
from clinix.net.registry import block_map_for_arch, config_for_arch
from clinix.plan.cost import measure_cost
from clinix.plan.memory import fit_memory_model, loader_gb, training_memory_gb
from clinix.plan.model import OptimizerSettings
from clinix.plan.speed import TRAINING_FLOPS_FACTOR
from clinix.plan.topology import (
    MIN_FEATURE_MAP_EDGE,
    Topology,
    initial_patch,
    pool_and_kernel_topology,
    shrink_patch,
)

MIN_BATCH_SIZE = 2


@dataclass(frozen=True)
class Budget:
    """What a training step may cost: ``memory_gb`` on ``device``; on a CPU also ``seconds`` at
    ``flops_per_second`` (both None on a GPU)."""

    device: str
    memory_gb: float
    seconds: float | None = None
    flops_per_second: float | None = None


@dataclass(frozen=True)
class Candidate:
    """A patch of the shrink sequence and the network on its topology (``with_orders``: the user's orders)."""

    topology: Topology
    config: NetworkConfig
    with_orders: bool


@dataclass(frozen=True)
class SearchResult:
    candidate: Candidate
    batch_size: int
    memory_gb: float  # the exact simulation of the chosen patch and batch
    seconds_per_iteration: float | None


class PatchSearch:
    """One search (module docstring). ``features_of(n_stages)`` gives the widths of an n-stage network."""

    def __init__(
        self,
        arch: str,
        loss: str,
        optimizer: OptimizerSettings,
        in_channels: int,
        num_classes: int,
        features_of: Callable[[int], list[int]],
        orders: list[int] | None,
        budget: Budget,
        scan_backend: str,
        checkpointing: bool = False,
    ) -> None:
        self.arch, self.loss, self.optimizer, self.budget = arch, loss, optimizer, budget
        self.in_channels, self.num_classes, self.features_of, self.orders = (
            in_channels,
            num_classes,
            features_of,
            orders,
        )
        self.scan_backend = scan_backend
        self.checkpointing = checkpointing

    def run(self, spacing: list[float], median_shape: list[int], max_batch: Callable[[list[int]], int]) -> SearchResult:
        """The first patch of the shrink sequence within the budget (then the batch, at most ``max_batch``)."""
        sequence = self._sequence(spacing, median_shape)
        if not self.fits(sequence[-1], MIN_BATCH_SIZE):
            raise ClinixError(self._nothing_fits(sequence[-1]))
        first, last = 0, len(sequence) - 1  # invariant: sequence[last] fits, everything before first does not
        while first < last:
            middle = (first + last) // 2
            if self.fits(sequence[middle], MIN_BATCH_SIZE):
                last = middle
            else:
                first = middle + 1
        candidate = sequence[last]
        if self.budget.seconds is not None and last > 0:  # a CPU: use the time the step left
            candidate = self._grown(candidate, spacing, median_shape)
        if not candidate.with_orders:  # the user's orders do not fit the chosen topology: say how
            self._config(candidate.topology, self.orders)
        batch = MIN_BATCH_SIZE
        if self.budget.seconds is None:  # a GPU: fill the memory with samples
            model = fit_memory_model(  # from the simulation at batch 2 the bisection made
                self.arch, candidate.config, candidate.topology.patch_size, self.loss, self.optimizer, self.scan_backend
            )
            limit = max(MIN_BATCH_SIZE, max_batch(list(candidate.topology.patch_size)))
            patch = candidate.topology.patch_size
            while batch < limit and model.device_gb(patch, batch + 1, self.budget.device) <= self.budget.memory_gb:
                batch += 1
            while batch > MIN_BATCH_SIZE and not self.fits(candidate, batch):
                batch -= 1
        return SearchResult(candidate, batch, self.memory_gb(candidate, batch), self.seconds(candidate, batch))

    def _grown(self, candidate: Candidate, spacing: list[float], median_shape: list[int]) -> Candidate:
        """``candidate`` grown one pooling divisor at a time, the axis with most room first, while its step
        stays within the time budget and the patch within the median shape (one shrink step of the
        sequence is coarse: up to a third of the patch; this gets the step close to its budget)."""
        grown = True
        while grown:
            grown = False
            patch = list(candidate.topology.patch_size)
            for axis in sorted(range(3), key=lambda a: patch[a] / median_shape[a]):
                trial = list(patch)
                trial[axis] += candidate.topology.divisor[axis]
                if trial[axis] > max(median_shape[axis], patch[axis]):
                    continue
                larger = self.candidate(pool_and_kernel_topology(spacing, trial))
                if self.fits(larger, MIN_BATCH_SIZE):
                    candidate, grown = larger, True
                    break
        return candidate

    def _sequence(self, spacing: list[float], median_shape: list[int]) -> list[Candidate]:
        """nnU-Net's shrink sequence, from the initial patch to the smallest with two stages."""
        topology = pool_and_kernel_topology(spacing, initial_patch(spacing, median_shape))
        if topology.n_stages < 2:  # images smaller than one pooling step: pad so the U-Net has 2 stages
            padded = [max(p, 2 * MIN_FEATURE_MAP_EDGE) for p in topology.patch_size]
            topology = pool_and_kernel_topology(spacing, padded)
        sequence = [self.candidate(topology)]
        while True:
            smaller = shrink_patch(topology, spacing, median_shape)
            if min(smaller) < MIN_FEATURE_MAP_EDGE or pool_and_kernel_topology(spacing, smaller).n_stages < 2:
                return sequence
            topology = pool_and_kernel_topology(spacing, smaller)
            sequence.append(self.candidate(topology))

    def candidate(self, topology: Topology) -> Candidate:
        """The plan's network on ``topology``, with the user's orders when their number fits its HGCN stages."""
        orders = self.orders
        if orders is not None and len(orders) != block_map_for_arch(self.arch, topology.n_stages).count("hgcn"):
            orders = None  # refused by run() if the chosen topology is such a one
        return Candidate(topology, self._config(topology, orders), orders == self.orders)

    def _config(self, topology: Topology, orders: list[int] | None) -> NetworkConfig:
        features = self.features_of(topology.n_stages)
        kernels, strides = topology.kernel_sizes, topology.strides
        return config_for_arch(
            self.arch, self.in_channels, self.num_classes, features, kernels, strides, orders,
            checkpointing=self.checkpointing,
        )  # fmt: skip

    def memory_gb(self, candidate: Candidate, batch: int) -> float:
        """A training step's memory on the budget's device (simulated exactly), the loader's included on a CPU."""
        patch, device = candidate.topology.patch_size, self.budget.device
        step = (self.arch, candidate.config, patch, batch, self.loss, self.optimizer, self.scan_backend)
        gb = training_memory_gb(*step, device)
        return gb + (loader_gb(patch, batch, self.in_channels) if device == "cpu" else 0.0)

    def seconds(self, candidate: Candidate, batch: int) -> float | None:
        """A training step's seconds on this CPU (None on a GPU); checkpointing adds a forward's recompute."""
        if self.budget.flops_per_second is None:
            return None
        forward_per_voxel = measure_cost(self.arch, candidate.config).forward_flops_per_voxel
        factor = TRAINING_FLOPS_FACTOR + (1.0 if candidate.config.checkpointing else 0.0)
        flops = factor * forward_per_voxel * math.prod(candidate.topology.patch_size) * batch
        return flops / self.budget.flops_per_second

    def fits(self, candidate: Candidate, batch: int) -> bool:
        seconds = self.seconds(candidate, batch)
        if seconds is not None and self.budget.seconds is not None and seconds > self.budget.seconds:
            return False  # the cheap test first: no simulation for a patch too slow anyway
        return self.memory_gb(candidate, batch) <= self.budget.memory_gb

    def _nothing_fits(self, smallest: Candidate) -> str:
        patch = list(smallest.topology.patch_size)
        budget = self.budget
        seconds = self.seconds(smallest, MIN_BATCH_SIZE)
        if seconds is not None and budget.seconds is not None and seconds > budget.seconds:
            return (
                f"the smallest plan of {self.arch} (patch {patch}, batch {MIN_BATCH_SIZE}) takes {seconds:.1f} s per "
                f"iteration on this CPU, over the {budget.seconds:g} s budget; raise --seconds-per-iteration"
            )
        needed = self.memory_gb(smallest, MIN_BATCH_SIZE)
        return (
            f"the smallest plan of {self.arch} (patch {patch}, batch {MIN_BATCH_SIZE}) needs {needed:.2f} GB on "
            f"{budget.device}, over --memory-gb {budget.memory_gb:g}; give at least {math.ceil(needed * 10) / 10:g}"
        )
