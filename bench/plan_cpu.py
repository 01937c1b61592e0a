"""What the CPU plan costs on the phantom: seconds per training iteration, measured against the plan's model.

Generates the phantom, plans it twice — ``--device cpu`` and the default GPU plan — and times one
forward+backward+optimizer step of each planned network on this CPU, at its planned patch and batch.
The GPU plan is the baseline measured in the same run: the ratio says how much the CPU profile saves.
Prints JSON.

    python bench/plan_cpu.py [--repeats 3] [--cases 8]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from clinix.data import write_phantom_dataset
from clinix.net.network import NetworkConfig
from clinix.net.registry import build_network
from clinix.plan import Plan, plan_experiment
from clinix.plan.cost import CPU_EFFECTIVE_FLOPS, TRAINING_FLOPS_FACTOR, measure_cost
from clinix.train.losses import build_loss, deep_supervision_weights


def time_iteration(plan: Plan, repeats: int) -> list[float]:
    """Seconds of ``repeats`` training steps (after one warm-up) at the plan's patch and batch."""
    torch.manual_seed(0)
    network = build_network(plan.arch, NetworkConfig.from_dict(plan.network))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    n_outputs = len(plan.network["features"]) - 1
    loss_fn = build_loss(plan.loss, batch_dice=False, deep_supervision_weights=deep_supervision_weights(n_outputs))
    data = torch.randn(plan.batch_size, plan.num_channels, *plan.patch_size)
    target = torch.randint(0, plan.num_classes, (plan.batch_size, 1, *plan.patch_size))
    seconds = []
    for step in range(repeats + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(data), target)
        loss.backward()
        optimizer.step()
        if step:
            seconds.append(time.perf_counter() - start)
    return seconds


def describe(plan: Plan, seconds: list[float]) -> dict:
    cost = measure_cost(plan.arch, NetworkConfig.from_dict(plan.network))
    median = statistics.median(seconds)
    training_flops = TRAINING_FLOPS_FACTOR * cost.forward_flops_per_voxel * plan.batch_size * math.prod(plan.patch_size)
    return {
        "patch_size": plan.patch_size,
        "batch_size": plan.batch_size,
        "features": plan.network["features"],
        "parameters": cost.parameters,
        "seconds_per_iteration": round(median, 3),
        "seconds_all": [round(s, 3) for s in seconds],
        "modelled_seconds": round(cost.cpu_seconds_per_iteration(plan.patch_size, plan.batch_size), 3),
        "effective_gflops": round(training_flops / median / 1e9, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_phantom_dataset(Path(tmp) / "phantom", cases=args.cases, test_cases=0)
        cpu_plan, _ = plan_experiment(root, Path(tmp) / "cpu", device="cpu", workers=1)
        gpu_plan, _ = plan_experiment(root, Path(tmp) / "gpu", device="cuda", workers=1)
        cpu = describe(cpu_plan, time_iteration(cpu_plan, args.repeats))
        gpu = describe(gpu_plan, time_iteration(gpu_plan, max(1, args.repeats // 2)))
    result = {
        "benchmark": "plan_cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_effective_flops_assumed_gflops": CPU_EFFECTIVE_FLOPS / 1e9,
        "seconds_per_iteration_budget": cpu_plan.seconds_per_iteration_budget,
        "cpu_plan": cpu,
        "gpu_plan_on_this_cpu": gpu,
        "speedup_cpu_plan_vs_gpu_plan": round(gpu["seconds_per_iteration"] / cpu["seconds_per_iteration"], 2),
        "measured_over_modelled": round(cpu["seconds_per_iteration"] / cpu["modelled_seconds"], 2),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
