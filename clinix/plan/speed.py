"""How fast this CPU trains: the effective FLOP/s of a training step, measured once per machine.

The CPU plan picks the patch whose training step takes ``seconds_per_iteration`` (2 s by default). A
step's FLOPs follow from the network (``clinix.plan.cost``); how many seconds they take depends on the
machine: the build machines' two cores reach 60-150 GFLOP/s in a step, an older laptop a fraction of
that. So the planner measures: a reference network of the planned family at the CPU plan's width
(5 stages, features 8..128) takes three training steps (forward with deep supervision, the loss,
backward, Adam) at a 32 × 64 × 64 patch, batch 2 (about 3 s in all on two cores), and
``3 × forward FLOPs / the fastest step after the first`` is the machine's speed (the first step warms up;
the fastest of the others is the least disturbed by other work, the steadiest of the measures tried
within ±8 % from run to run here). It is kept in clinix's cache (``cpu-speed.json``) under the machine's
identity, the torch version, the thread count and the family; ``clinix plan --recalibrate`` measures
again.
"""

from __future__ import annotations

import math
import time

import torch

from clinix.cache import machine_key, read_store, write_store
from clinix.net.network import NetworkConfig
from clinix.net.registry import build_network, config_for_arch
from clinix.plan.topology import pool_and_kernel_topology

SPEED_FILE = "cpu-speed.json"
REFERENCE_PATCH = (32, 64, 64)
REFERENCE_FEATURES = (8, 16, 32, 64, 128)
REFERENCE_BATCH = 2
MIN_TIMED_STEPS = 2
TRAINING_FLOPS_FACTOR = 3.0  # forward + backward ≈ 3 forwards
ASSUMED_CPU_FLOPS = 60e9  # the speed make_plan assumes when none was measured (the low end of the build machines)


def cpu_training_flops(arch: str, recalibrate: bool = False) -> float:
    """Effective FLOP/s of training steps of ``arch`` on this CPU (cached; module docstring)."""
    key = machine_key(f"threads {torch.get_num_threads()}", arch)
    known = read_store(SPEED_FILE)
    if not recalibrate and key in known:
        return float(known[key]["flops_per_second"])
    flops, seconds = _measure(arch)
    known[key] = {"flops_per_second": flops, "step_seconds": seconds, "measured": time.strftime("%Y-%m-%d")}
    write_store(SPEED_FILE, known)
    return flops


def _measure(arch: str) -> tuple[float, float]:
    """``(FLOP/s, median step seconds)`` of the reference network of ``arch`` (module docstring)."""
    from clinix.plan.cost import measure_cost

    topology = pool_and_kernel_topology([1.0, 1.0, 1.0], list(REFERENCE_PATCH), max_stages=len(REFERENCE_FEATURES))
    features = list(REFERENCE_FEATURES[: topology.n_stages])
    config = config_for_arch(arch, 1, 3, features, topology.kernel_sizes, topology.strides)
    forward_flops = measure_cost(arch, config).forward_flops_per_voxel * math.prod(topology.patch_size)
    seconds = time_training_steps(arch, config.to_dict(), topology.patch_size, REFERENCE_BATCH, "ce-dice", 1, 3)
    step = min(seconds[1:])  # the first step warms up; the fastest of the others is the least disturbed
    return TRAINING_FLOPS_FACTOR * forward_flops * REFERENCE_BATCH / step, step


def time_training_steps(
    arch: str,
    network: dict,
    patch: tuple[int, ...] | list[int],
    batch: int,
    loss: str,
    channels: int,
    classes: int,
    steps: int = MIN_TIMED_STEPS + 1,
    regions: list | None = None,
) -> list[float]:
    """Seconds of ``steps`` training steps (forward with deep supervision, ``loss``, backward, Adam) of the
    network ``network`` (a ``NetworkConfig`` dict) on random ``(batch, channels, *patch)`` data whose
    labels are drawn from ``0..classes-1`` (``regions``: a region dataset's label values per region).
    """
    from clinix.train.losses import build_loss, deep_supervision_weights  # train/ imports plan/

    torch.manual_seed(0)
    model = build_network(arch, NetworkConfig.from_dict({**network, "deep_supervision": True})).train()
    weights = deep_supervision_weights(len(network["features"]) - 1)
    loss_fn = build_loss(loss, batch_dice=False, deep_supervision_weights=weights, regions=regions)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = torch.randn(batch, channels, *patch)
    target = torch.randint(0, classes, (batch, 1, *patch), dtype=torch.int16)
    seconds: list[float] = []
    while len(seconds) < steps:
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(data), target).backward()
        optimizer.step()
        seconds.append(time.perf_counter() - began)
    return seconds
