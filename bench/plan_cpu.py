"""The CPU plan's seconds per iteration on this machine: the planner's target against real steps; print JSON.

The planner measures the machine once (``clinix.plan.speed``: effective FLOP/s of training steps of the
planned family, cached) and picks the patch whose step takes ``--seconds-per-iteration`` at that speed.
Here CPU plans are made at several targets (1, 2 and 4 s; 2 is the default) for fingerprints whose median
shape does not cap the patch (a chest CT of 58 × 186 × 191 voxels at 3 × 0.98 × 0.98 mm, an abdominal CT
of 150 × 490 × 490 at 2.5 × 0.8 × 0.8 mm), and each planned network takes real training steps (the
trainer's ``train_step``: deep-supervision loss, backward, clipping, Adam) at its planned patch and batch;
acceptance: the measured median within ±30 % of the target. The default GPU plan of the chest CT, timed
on this CPU, is the baseline measured in the same run: how much the CPU profile saves.

    python bench/plan_cpu.py [--repeats 3] [--targets 1,2,4] [--recalibrate]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from clinix.net.scan import active_scan_backend
from clinix.plan import PROFILES, Plan, make_plan
from clinix.plan.speed import cpu_training_flops


def time_iteration(plan: Plan, repeats: int) -> list[float]:
    """Seconds of ``repeats`` training steps (after one warm-up) at the plan's patch and batch."""
    from clinix.train.distributed import DistributedContext
    from clinix.train.run import TrainingOptions, build_run
    from clinix.train.trainer import train_step

    with tempfile.TemporaryDirectory() as folder:
        run = build_run(plan, 0, Path(folder), TrainingOptions(echo=False), DistributedContext(), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(plan.batch_size, plan.num_channels, *plan.patch_size, generator=generator)
    target = torch.randint(0, plan.num_classes, (plan.batch_size, 1, *plan.patch_size), generator=generator)
    run.model.train()
    seconds = []
    for step in range(repeats + 1):
        start = time.perf_counter()
        train_step(run, data, target.to(torch.int16))
        if step:
            seconds.append(time.perf_counter() - start)
    return seconds


def describe(plan: Plan, seconds: list[float]) -> dict:
    median = statistics.median(seconds)
    row = {
        "patch_size": plan.patch_size,
        "batch_size": plan.batch_size,
        "features": plan.network["features"],
        "seconds_per_iteration": round(median, 3),
        "seconds_all": [round(s, 3) for s in seconds],
    }
    if plan.seconds_per_iteration_budget is not None:
        row |= {
            "target_seconds": plan.seconds_per_iteration_budget,
            "planned_seconds": plan.seconds_per_iteration_estimate,
            "measured_over_target": round(median / plan.seconds_per_iteration_budget, 2),
            "within_30_percent": abs(median / plan.seconds_per_iteration_budget - 1) <= 0.3,
        }
    return row


FINGERPRINTS = {"chest CT": ([58, 186, 191], [3.0, 0.98, 0.98]), "abdominal CT": ([150, 490, 490], [2.5, 0.8, 0.8])}


def ct_fingerprint(shape: list[int], spacing: list[float]) -> Any:
    """100 cases of one CT shape, with the statistics a plan needs (tissue and one lesion class)."""
    from clinix.fingerprint import CaseFingerprint, Fingerprint

    identity = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    case = CaseFingerprint("c", shape, spacing, [0.0] * 3, identity, [[0, s] for s in shape], shape, 1.0, {}, {})
    labels = {"background": 0, "lesion": 1}
    return Fingerprint(
        dataset={"root": "/synthetic", "name": "CT", "labels": labels, "ignore_label": None, "channel_names": ["CT"]},
        cases=[case] * 100,
        intensity={"0": {"name": "CT", "mean": 40, "std": 30, "percentile_00_5": -1000, "percentile_99_5": 400}},
        labels={name: {"values": [value], "voxels": 1000, "cases_present": 100} for name, value in labels.items()},
        median_relative_size_after_crop=1.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--targets", default="1,2,4", help="seconds-per-iteration targets to plan for")
    parser.add_argument("--recalibrate", action="store_true", help="measure the machine's speed again first")
    args = parser.parse_args()
    started = time.perf_counter()
    flops = cpu_training_flops("mambaclinix", recalibrate=args.recalibrate)
    calibration_seconds = time.perf_counter() - started
    backend = active_scan_backend("cpu")
    rows = []
    for name, (shape, spacing) in FINGERPRINTS.items():
        for target in (float(t) for t in args.targets.split(",")):
            profile = dataclasses.replace(PROFILES["cpu"], seconds_per_iteration=target)
            plan = make_plan(ct_fingerprint(shape, spacing), profile, 8.0, "mambaclinix", "ce-dice-trs", None, flops,
                             backend)  # fmt: skip
            rows.append({"fingerprint": name, **describe(plan, time_iteration(plan, args.repeats))})
    gpu_plan = make_plan(ct_fingerprint(*FINGERPRINTS["chest CT"]), PROFILES["cuda"], 8.0, "mambaclinix", "ce-dice-trs")
    gpu = describe(gpu_plan, time_iteration(gpu_plan, max(1, args.repeats // 2)))
    default = next(row for row in rows if row["target_seconds"] == 2.0)
    result = {
        "benchmark": "plan_cpu",
        "torch_threads": torch.get_num_threads(),
        "measured_speed_gflops": round(flops / 1e9, 1),
        "calibration_seconds": round(calibration_seconds, 2),
        "cpu_plans": rows,
        "all_within_30_percent": all(row["within_30_percent"] for row in rows),
        "gpu_plan_of_the_chest_ct_on_this_cpu": gpu,
        "speedup_cpu_plan_vs_gpu_plan": round(gpu["seconds_per_iteration"] / default["seconds_per_iteration"], 2),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
