"""Benchmark one training iteration of every ``--arch`` at the same plan topology; print JSON.

The plan (setup not timed): the phantom (``--quick``: the tiny phantom) planned for the CPU. Its network
topology (features, kernels, strides) is kept and only the family swapped with
``clinix.net.registry.config_for_arch``, so every architecture sees the same patch and batch. One
iteration is the trainer's own ``train_step``: forward with deep supervision, the plan's loss, backward,
gradient clipping, optimizer step (AMP on CUDA as in training), on a fixed random batch; data loading is
left out (it does not depend on the architecture).

For each architecture, in a fresh process: ``seconds_per_iteration`` is the median of ``--iterations``
steps after ``--warmup`` untimed ones; memory is the peak during warm-up and timed steps, on the CPU the
kernel's peak resident set ``VmHWM`` (reset through ``/proc/self/clear_refs`` after the network is built)
minus the resident set at the reset, on CUDA ``torch.cuda.max_memory_allocated``. Ratios are against
``resunet`` measured in the same run. Seconds depend on the machine's load; the ratios are the point.

    python bench/train_step.py [--quick] [--device cpu|cuda|mps|auto] [--archs mambaclinix,resunet] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ARCHS = ("mambaclinix", "resunet", "mamba-only", "hgcn-only", "umamba-bot")
BASELINE = "resunet"


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def make_plan(root: Path, quick: bool) -> Path:
    """Plan the phantom for the CPU under ``root``; returns the plans.json path."""
    from clinix.data import write_phantom_dataset
    from clinix.plan import plan_experiment

    dataset = write_phantom_dataset(root / "dataset", cases=2, test_cases=0, size="tiny" if quick else "default")
    _, path = plan_experiment(dataset, root / "work", device="cpu", workers=1)
    return path


def plan_for_arch(plan_file: Path, arch: str) -> Any:
    """The plan with its network rebuilt as family ``arch`` on the same topology."""
    from clinix.net.registry import config_for_arch
    from clinix.plan.model import Plan

    plan = Plan.from_json(json.loads(plan_file.read_text()))
    network = plan.network
    config = config_for_arch(
        arch, network["in_channels"], network["num_classes"], network["features"], network["kernel_sizes"],
        network["strides"],
    )  # fmt: skip
    return dataclasses.replace(plan, arch=arch, network=config.to_dict())


def measure_arch(plan_file: Path, arch: str, device_name: str, warmup: int, iterations: int) -> dict[str, Any]:
    """Build the run of ``arch`` and time ``train_step`` on one fixed batch, in this process."""
    from clinix.train.distributed import DistributedContext, training_device
    from clinix.train.run import TrainingOptions, build_run
    from clinix.train.trainer import train_step

    plan = plan_for_arch(plan_file, arch)
    device = training_device(device_name, DistributedContext())
    with tempfile.TemporaryDirectory() as folder:
        run = build_run(plan, 0, Path(folder), TrainingOptions(echo=False), DistributedContext(), device)
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(plan.batch_size, plan.num_channels, *plan.patch_size, generator=generator).to(device)
    target = torch.randint(0, plan.num_classes, (plan.batch_size, 1, *plan.patch_size), generator=generator)
    target = target.to(device)
    run.model.train()
    start_mb = reset_peak_memory(device)
    seconds = []
    for step in range(warmup + iterations):
        began = time.perf_counter()
        train_step(run, data, target)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            seconds.append(time.perf_counter() - began)
    return {
        "arch": arch,
        "parameters": sum(p.numel() for p in run.network.parameters()),
        "seconds_per_iteration": round(statistics.median(seconds), 4),
        "peak_memory_mb": round(peak_memory_mb(device) - start_mb, 1),
    }


def reset_peak_memory(device: torch.device) -> float:
    """Start a new peak; returns the baseline the peak is measured from (MiB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return status_mb("VmHWM")


def run_in_child(plan_file: Path, arch: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", arch, "--plan-file", str(plan_file), "--device", args.device,
        "--warmup", str(args.warmup), "--iterations", str(args.iterations), "--threads", str(args.threads),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        return {"arch": arch, "error": completed.stderr.strip().splitlines()[-1]}
    return json.loads(completed.stdout)


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    baseline = next((row for row in rows if row["arch"] == BASELINE and "error" not in row), None)
    if baseline is None:
        return rows
    for row in rows:
        if "error" not in row:
            row["time_vs_resunet"] = round(row["seconds_per_iteration"] / baseline["seconds_per_iteration"], 2)
            row["memory_vs_resunet"] = round(row["peak_memory_mb"] / max(baseline["peak_memory_mb"], 1e-6), 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny phantom's plan, 1 warm-up, 3 timed steps")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated families to compare")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--iterations", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # measure this arch in this process
    parser.add_argument("--plan-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure_arch(args.plan_file, args.child, args.device, args.warmup, args.iterations)))
        return
    if args.quick:
        args.warmup, args.iterations = 1, 3
    archs = args.archs.split(",")
    if BASELINE not in archs:
        archs.append(BASELINE)
    with tempfile.TemporaryDirectory() as folder:
        plan_file = make_plan(Path(folder), args.quick)
        plan = json.loads(plan_file.read_text())
        rows = with_ratios([run_in_child(plan_file, arch, args) for arch in archs])
    report = {
        "config": {
            "phantom": "tiny" if args.quick else "default",
            "patch_size": plan["patch_size"],
            "batch_size": plan["batch_size"],
            "features": plan["network"]["features"],
            "strides": ["x".join(map(str, stride)) for stride in plan["network"]["strides"]],
            "loss": plan["loss"],
            "device": args.device,
            "torch_threads": args.threads,
            "cpu_count": os.cpu_count(),
            "warmup": args.warmup,
            "iterations": args.iterations,
            "memory": "CPU: peak RSS (VmHWM) minus RSS after building; CUDA: max_memory_allocated, MiB",
        },
        "results": rows,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
