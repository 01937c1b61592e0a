"""The CUDA path of clinix checked on one GPU, in one run of a few minutes; print one JSON document.

What a person with a CUDA machine runs once (``python bench/gpu_check.py``), and the test suite runs on
the CPU (``--device cpu --quick``) so that it keeps working:

1. ``scan``: clinix's selective scan on the device against mamba_ssm's ``selective_scan_fn`` when it
   imports (else against clinix's float64 sequential reference): largest relative error of the output
   and of every gradient.
2. ``mamba_module``: mamba_ssm's ``Mamba`` and clinix's on the same state_dict, loaded strictly both
   ways, and their outputs compared (only with mamba_ssm).
3. ``training``: the default plan of a paper-sized fingerprint (BraTS-like, 4 MRI channels, 24 GB; a
   CPU plan of a small one with ``--quick``) trained for a few steps in float32, under bf16 autocast, and
   under fp16 autocast with the gradient scaler: iterations per second, ``torch.cuda.max_memory_allocated``
   against the planner's estimate (on the CPU: the process's peak resident set), and whether a loss was
   NaN. The AMP factor of ``clinix.plan.memory`` is checked by ``memory_over_estimate`` under autocast.
4. ``torchrun``: one epoch of one iteration of ``clinix train`` under ``torchrun --nproc_per_node 1``.
5. ``inference``: one volume through the sliding window with and without mirror TTA, seconds each.

    python bench/gpu_check.py [--device cuda|cpu] [--quick] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def section(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A section's result and seconds, or the error it stopped with (one failure must not hide the rest)."""
    began = time.perf_counter()
    try:
        result = run()
    except Exception as error:  # reported, not raised: this is a report
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
    return {**result, "section_seconds": round(time.perf_counter() - began, 1)}


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(device), "python": sys.version.split()[0]}
    if device.type == "cuda":
        info |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    for package in ("mamba_ssm", "causal_conv1d"):
        try:
            info[package] = __import__(package).__version__
        except Exception as error:
            info[package] = f"not importable ({type(error).__name__})"
    from clinix.net.scan import active_scan_backend

    info["clinix_scan_backend"] = active_scan_backend(device)
    return info


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def check_scan(device: torch.device, quick: bool) -> dict[str, Any]:
    from clinix.net.scan import selective_scan, selective_scan_reference

    generator = torch.Generator().manual_seed(0)
    batch, channels, length, state = (1, 8, 300, 16) if quick else (2, 128, 4096, 16)
    inputs = {
        "u": torch.randn(batch, channels, length, generator=generator),
        "delta": torch.rand(batch, channels, length, generator=generator) - 3.0,
        "A": -torch.rand(channels, state, generator=generator) - 0.5,
        "B": torch.randn(batch, state, length, generator=generator),
        "C": torch.randn(batch, state, length, generator=generator),
        "D": torch.randn(channels, generator=generator),
        "z": torch.randn(batch, channels, length, generator=generator),
        "delta_bias": torch.rand(channels, generator=generator) - 4.0,
    }
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as theirs

        against, their_device, dtype = "mamba_ssm.selective_scan_fn", device, torch.float32
    except Exception:
        theirs, against, their_device, dtype = (
            selective_scan_reference,
            "clinix float64 reference",
            "cpu",
            torch.float64,
        )

    def run(scan: Callable[..., torch.Tensor], on: torch.device | str, precision: torch.dtype) -> list[torch.Tensor]:
        leaves = {k: v.detach().to(on, precision).clone().requires_grad_(True) for k, v in inputs.items()}
        out = scan(**leaves, delta_softplus=True)
        out.square().sum().backward()
        return [out.detach().cpu(), *(leaves[k].grad.cpu() for k in inputs)]

    started = time.perf_counter()
    ours = run(selective_scan, device, torch.float32)
    seconds = time.perf_counter() - started
    reference = run(theirs, their_device, dtype)
    errors = dict(zip(["output", *(f"grad_{k}" for k in inputs)], map(_relative, ours, reference), strict=True))
    return {
        "against": against,
        "shape": [batch, channels, length, state],
        "max_relative_error": errors,
        "clinix_seconds": round(seconds, 3),
        "agrees": max(errors.values()) < 1e-3,
    }


def check_mamba_module(device: torch.device) -> dict[str, Any]:
    try:
        from mamba_ssm import Mamba as TheirMamba
    except Exception as error:
        return {"skipped": f"mamba_ssm does not import ({type(error).__name__})"}
    from clinix.net.mamba import Mamba

    torch.manual_seed(0)
    theirs, ours = TheirMamba(d_model=64).to(device), Mamba(64).to(device)
    u = torch.randn(2, 1000, 64, device=device)
    result = {}
    for name, (source, target) in {"theirs_to_ours": (theirs, ours), "ours_to_theirs": (ours, theirs)}.items():
        target.load_state_dict(source.state_dict(), strict=True)
        with torch.no_grad():
            result[name] = _relative(target(u), source(u))
    return {"max_relative_error": result, "agrees": max(result.values()) < 1e-3}


def paper_sized_plan(quick: bool, device: torch.device) -> Any:
    from clinix.fingerprint import CaseFingerprint, Fingerprint
    from clinix.plan import PROFILES, make_plan

    shape, channels, memory_gb = ([16, 32, 32], 1, 8.0) if quick else ([138, 170, 138], 4, 24.0)
    identity = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    case = CaseFingerprint("c", shape, [1.0] * 3, [0.0] * 3, identity, [[0, s] for s in shape], shape, 1.0, {}, {})
    labels = {"background": 0, "edema": 1, "necrosis": 2, "enhancing": 3}
    fingerprint = Fingerprint(
        dataset={"root": "/synthetic", "name": "BraTS-like", "labels": labels, "ignore_label": None,
                 "channel_names": [f"MR{c}" for c in range(channels)]},
        cases=[case] * 100,
        intensity={str(c): {"name": f"MR{c}", "mean": 0, "std": 1, "percentile_00_5": -3, "percentile_99_5": 3}
                   for c in range(channels)},
        labels={n: {"values": [v], "voxels": 1000, "cases_present": 100} for n, v in labels.items()},
        median_relative_size_after_crop=1.0,
    )  # fmt: skip
    from clinix.net.scan import active_scan_backend

    profile = PROFILES["cpu" if quick else "cuda"]
    backend = active_scan_backend(device)
    return make_plan(fingerprint, profile, memory_gb, "mambaclinix", "ce-dice-trs", scan_backend=backend)


def check_training(device: torch.device, quick: bool, steps: int) -> dict[str, Any]:
    from clinix.train.distributed import DistributedContext
    from clinix.train.run import TrainingOptions, build_run
    from clinix.train.trainer import train_step

    plan = paper_sized_plan(quick, device)
    modes = {"float32": (None, False), "bf16_autocast": (torch.bfloat16, False)}
    if device.type == "cuda":
        modes["fp16_autocast_scaler"] = (torch.float16, True)
    rows = {}
    for name, (amp_dtype, scaled) in modes.items():
        with tempfile.TemporaryDirectory() as folder:
            run = build_run(plan, 0, Path(folder), TrainingOptions(echo=False), DistributedContext(), device)
        run.amp_dtype = amp_dtype
        run.scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        generator = torch.Generator().manual_seed(0)
        data = torch.randn(plan.batch_size, plan.num_channels, *plan.patch_size, generator=generator)
        target = torch.randint(0, plan.num_classes, (plan.batch_size, 1, *plan.patch_size), generator=generator)
        target = target.to(torch.int16)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        losses, seconds = [], []
        for _ in range(steps + 1):
            began = time.perf_counter()
            losses.append(float(train_step(run, data, target)))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - began)
        measured = torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else _peak_rss_gb()
        rows[name] = {
            "iterations_per_second": round(1 / float(np.median(seconds[1:])), 3),
            "peak_memory_gb": round(measured, 3),
            "memory_over_estimate": round(measured / plan.memory_estimate_gb, 3),
            "any_loss_nan": any(math.isnan(loss) or math.isinf(loss) for loss in losses),
            "losses": [round(loss, 4) for loss in losses],
        }
        del run
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "patch_size": plan.patch_size,
        "batch_size": plan.batch_size,
        "stages": len(plan.network["features"]),
        "planned_for_gb": plan.memory_gb,
        "planner_estimate_gb": plan.memory_estimate_gb,
        "measured": "CUDA: max_memory_allocated; CPU: peak resident set of this process",
        "modes": rows,
    }


def _peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def tiny_workdir(root: Path) -> Path:
    """A tiny phantom, planned for the CPU and preprocessed (the torchrun and inference checks use it)."""
    from clinix.data import write_phantom_dataset
    from clinix.plan import plan_experiment
    from clinix.preprocess import preprocess_dataset

    dataset = write_phantom_dataset(root / "dataset", cases=2, test_cases=1, size="tiny")
    plan_experiment(dataset, root / "work", device="cpu", workers=1)
    preprocess_dataset(root / "work", workers=1)
    return root / "work"


def check_torchrun(workdir: Path, device: torch.device, quick: bool) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--standalone", "-m", "clinix",
        "train", "--fold", "all", "-w", str(workdir), "--device", device.type, "--epochs", "1", "--iters", "1",
        "--val-iters", "1", "--no-validation", "--overwrite", "-j", "0",
    ]  # fmt: skip
    began = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ})
    final = workdir / "results" / "3d_fullres" / "fold_all" / "checkpoint_final.pt"
    return {
        "exit_code": completed.returncode,
        "seconds": round(time.perf_counter() - began, 1),
        "checkpoint_written": final.is_file(),
        "stderr_tail": completed.stderr.strip().splitlines()[-3:],
    }


def check_inference(workdir: Path, device: torch.device, quick: bool) -> dict[str, Any]:
    from clinix.infer import Predictor
    from clinix.net.network import NetworkConfig
    from clinix.net.registry import build_network
    from clinix.plan.model import load_plan

    plan = load_plan(workdir) if quick else paper_sized_plan(False, device)
    torch.manual_seed(0)
    network = build_network(plan.arch, NetworkConfig.from_dict(plan.network)).to(device)
    shape = tuple(plan.patch_size) if quick else (160, 240, 240)  # one tile when quick; else a brain MRI
    volume = np.random.default_rng(0).normal(size=(plan.num_channels, *shape)).astype(np.float32)
    result: dict[str, Any] = {"volume": list(shape), "patch_size": plan.patch_size}
    for tta in (False, True):
        predictor = Predictor(plan, [network], device=device, tta=tta)
        began = time.perf_counter()
        probabilities = predictor.predict_preprocessed(volume)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result["seconds_with_tta" if tta else "seconds_without_tta"] = round(time.perf_counter() - began, 2)
        result["probabilities_sum_to_one"] = bool(np.allclose(probabilities.sum(0), 1.0, atol=1e-3))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="small sizes (the test suite runs it on the CPU)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per precision")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device here; use --device cpu --quick to exercise the script"}))
        sys.exit(2)
    device = torch.device(args.device)
    started = time.perf_counter()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "environment": section(lambda: environment(device))}
    report["scan"] = section(lambda: check_scan(device, args.quick))
    report["mamba_module"] = section(lambda: check_mamba_module(device))
    report["training"] = section(lambda: check_training(device, args.quick, args.steps))
    with tempfile.TemporaryDirectory(prefix="clinix-gpu-check-") as folder:
        prepared = section(lambda: {"workdir": tiny_workdir(Path(folder))})
        for name, check in (("torchrun", check_torchrun), ("inference", check_inference)):
            if "error" in prepared:
                report[name] = {"error": f"the tiny phantom could not be prepared: {prepared['error']}"}
            else:
                report[name] = section(lambda check=check: check(prepared["workdir"], device, args.quick))
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
