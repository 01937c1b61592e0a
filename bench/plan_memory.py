"""The planner's memory model against real training steps; print JSON.

For every ``--arch`` at three patch sizes (a CPU-plan network at 32 × 96 × 96, a GPU-width network at
40 × 128 × 128, and the paper-sized 48 × 128 × 160 patch of a 6-stage network, batch 2), a fresh process
builds the run as ``clinix train`` does (``clinix.train.run.build_run``) and takes two training steps
(``train_step``: deep-supervision loss, backward, clipping, Adam) on a random batch, on the CPU in
float32. Measured: the process's peak resident set (``VmHWM``, everything included), and its growth over
the resident set before the steps. The estimate is the planner's for the CPU (``clinix.plan.memory``,
the data loader's batches left out as there is no loader here); the old model's (model version 1, a
per-voxel figure from the smallest patch) is the baseline in the same run. Acceptance: every estimate
within ±20 % of its measured peak.

With ``--device cuda`` on a GPU, the steps run under AMP as in training and the estimate is the CUDA one,
compared with ``torch.cuda.max_memory_allocated`` plus the process's CUDA context.

    python bench/plan_memory.py [--quick] [--archs mambaclinix,resunet] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ARCHS = ("mambaclinix", "resunet", "mamba-only", "hgcn-only", "hgcn-uniform-3", "umamba-bot")  # order 3: fits width 8
GPU_FEATURES = [32, 64, 128, 256, 320, 320]
CPU_FEATURES = [8, 16, 32, 64, 128]
CHEST_CT_SPACING = [3.0, 0.98, 0.98]  # the spacing of the chest CT of the issue: anisotropic pooling
POINTS = {
    "cpu-plan": (CPU_FEATURES, [32, 96, 96]),
    "medium": (GPU_FEATURES, [40, 128, 128]),
    "paper-sized": (GPU_FEATURES, [48, 128, 160]),
}
QUICK_POINTS = {"cpu-plan": (CPU_FEATURES, [16, 64, 64]), "small": (CPU_FEATURES, [32, 96, 96])}
BATCH = 2
LABELS = {"background": 0, "lung": 1, "tumour": 2}


def network_config(arch: str, features: list[int], patch: list[int]) -> Any:
    from clinix.net.registry import config_for_arch
    from clinix.plan.topology import pool_and_kernel_topology

    topology = pool_and_kernel_topology(CHEST_CT_SPACING, patch, max_stages=len(features))
    stages = topology.n_stages
    return config_for_arch(arch, 1, 3, features[:stages], topology.kernel_sizes, topology.strides), topology.patch_size


def status_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024**2  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(arch: str, features: list[int], patch: list[int], device_name: str) -> dict[str, Any]:
    """In this (fresh) process: two real training steps; their peak memory."""
    from clinix.plan.model import ChannelNormalization, Plan, ResamplingSettings
    from clinix.train.distributed import DistributedContext, training_device
    from clinix.train.run import TrainingOptions, build_run
    from clinix.train.trainer import train_step

    config, patch = network_config(arch, features, patch)
    plan = Plan(
        dataset_root="", dataset={"labels": LABELS, "channel_names": ["CT"], "ignore_label": None},
        target_spacing=CHEST_CT_SPACING, median_shape=list(patch), normalization=[ChannelNormalization("CT", "none")],
        resampling=ResamplingSettings(), patch_size=list(patch), batch_size=BATCH, batch_dice=False, arch=arch,
        loss="ce-dice-trs", network=config.to_dict(), device=device_name,
    )  # fmt: skip
    device = training_device(device_name, DistributedContext())
    with tempfile.TemporaryDirectory() as folder:
        run = build_run(plan, 0, Path(folder), TrainingOptions(echo=False), DistributedContext(), device)
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(BATCH, 1, *patch, generator=generator)
    target = torch.randint(0, 3, (BATCH, 1, *patch), generator=generator, dtype=torch.int16)
    run.model.train()
    before = status_gb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        train_step(run, data, target)
    result = {"rss_before_gb": round(before, 3), "peak_rss_gb": round(status_gb("VmHWM"), 3)}
    if device.type == "cuda":
        result["max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 1024**3, 3)
    return result


def estimate(arch: str, features: list[int], patch: list[int], device: str) -> dict[str, Any]:
    from clinix.net.scan.dispatch import active_scan_backend
    from clinix.plan.cost import measure_cost
    from clinix.plan.memory import MODEL_VERSION, training_memory_gb
    from clinix.plan.model import OptimizerSettings

    config, patch = network_config(arch, features, patch)
    backend = active_scan_backend(device)
    new = training_memory_gb(arch, config, patch, BATCH, "ce-dice-trs", OptimizerSettings(), backend, device)
    old = version_1_estimate_gb(measure_cost(arch, config), patch, device)
    return {
        "patch": list(patch),
        "stages": config.num_stages,
        "features": config.features,
        "estimate_gb": round(new, 3),
        "model_version": MODEL_VERSION,
        "old_model_estimate_gb": round(old, 3),
        "scan_backend": backend,
    }


def version_1_estimate_gb(cost: Any, patch: list[int], device: str) -> float:
    """The model clinix planned with before (version 1): bytes saved per voxel at the smallest patch,
    extrapolated, plus twice the largest saved tensor, 16 bytes a parameter, AMP 0.6 and 1 GB on CUDA."""
    voxels = BATCH * math.prod(patch)
    activations = voxels * (cost.saved_bytes_per_voxel + 2 * cost.largest_saved_bytes_per_voxel)
    activations *= 0.6 if device == "cuda" else 1.0
    return (activations + 16 * cost.parameters) / 1024**3 + (1.0 if device == "cuda" else 0.0)


def run_point(name: str, arch: str, features: list[int], patch: list[int], device: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps([arch, features, patch]), "--device", device]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    row = {"point": name, "arch": arch, **estimate(arch, features, patch, device)}
    if completed.returncode != 0:
        return {**row, "error": completed.stderr.strip().splitlines()[-1]}
    row.update(json.loads(completed.stdout))
    measured = row["peak_rss_gb"] if device == "cpu" else row["max_memory_allocated_gb"]
    row["estimate_vs_measured"] = round(row["estimate_gb"] / measured, 3)
    row["old_model_vs_measured"] = round(row["old_model_estimate_gb"] / measured, 3)
    row["within_20_percent"] = abs(row["estimate_vs_measured"] - 1) <= 0.2
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU-plan networks at two small patches")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        arch, features, patch = json.loads(args.child)
        print(json.dumps(measure(arch, features, patch, args.device)))
        return
    points = QUICK_POINTS if args.quick else POINTS
    rows = [
        run_point(name, arch, features, patch, args.device)
        for name, (features, patch) in points.items()
        for arch in args.archs.split(",")
    ]
    report = {
        "device": args.device,
        "batch_size": BATCH,
        "spacing_for_the_topology": CHEST_CT_SPACING,
        "torch_threads": torch.get_num_threads(),
        "measured": "CPU: peak resident set of the process (VmHWM); CUDA: max_memory_allocated",
        "all_within_20_percent": all(row.get("within_20_percent", False) for row in rows),
        "points": rows,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
