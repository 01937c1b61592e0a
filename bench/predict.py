"""Benchmark sliding-window inference; print JSON.

Phantom (setup not timed): 2 training + 2 test cases (``--quick``: the tiny phantom), planned for the
CPU, preprocessed, and a randomly initialised network of the plan saved as ``fold_0/checkpoint_final.pt``
(untrained weights run at the speed of trained ones). One fold:

- ``case`` / ``case_tta``: ``clinix.infer.predict_folder`` over ``imagesTs`` (read, preprocess, sliding
  window, restore, write) without and with mirror TTA, seconds per case from its summary;
- ``window``: ``Predictor.predict_preprocessed`` on the preprocessed training cases, no TTA (batched
  tiles, one ``(K, z, y, x)`` accumulator, slab-wise softmax in place);
- ``naive``: the baseline, measured in the same run on the same cases: the same tiles one at a time, a
  separate accumulator per class, a stacked copy for the division and NumPy's softmax. Mirror TTA runs
  the same 8 forwards per tile in both, so the pair is compared without it.

The phantom has 3 classes on small grids, so the network's activations dominate its memory. The
``accumulate`` pair shows the accumulators alone: 14 classes on a 128 × 256 × 256 grid (``--quick``:
64 × 128 × 128) with a pointwise network (a 1×1×1 convolution), no TTA, clinix versus naive.

Each variant runs in a fresh process (glibc told to map every block over 64 KiB, so freed arrays leave
the resident set). Memory: the kernel's peak resident set ``VmHWM``, reset (``/proc/self/clear_refs``) just
before the timed part; ``peak_above_start_mb`` is that peak minus the resident set at the reset (torch
imported, network built, cases loaded). Seconds depend on the machine's load; the ratios are the point.

``--ct``: instead, the CT-sized lesion phantom (``clinix phantom --kind lesion``: 512 × 512 × 40–80 at
0.6–0.8 × 5 mm, int16 HU), 4 training cases for the plan and 2 test cases predicted by ``predict_folder``
with the CPU plan's randomly initialised network: ``ct_<precision>[_tta]`` for fp32 and bf16, without
and with mirror TTA, with the seconds of every stage (read, preprocess, network, restore, write), the
peak resident set and ``clinix.infer.memory``'s estimate of it. The baseline, in the same run:
``ct_baseline``, the same network and patch on yesterday's preprocessing (crop to nonzero, nnU-Net's
target spacing, no CPU coarsening) in fp32, without TTA (with TTA it takes about 15 minutes per case);
its TTA time is estimated from the TTA/no-TTA ratio of fp32.

    python bench/predict.py [--quick] [--ct [--ct-variants ct_fp32,ct_bf16_tta,...]] [--device cpu|cuda|mps|auto]
                            [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

PHANTOM_VARIANTS = ("case", "window", "naive", "case_tta")
CT_VARIANTS = ("ct_baseline", "ct_fp32", "ct_bf16", "ct_fp32_tta", "ct_bf16_tta")
ACCUMULATE_VARIANTS = ("accumulate", "accumulate_naive")
ACCUMULATE_CLASSES = 14
ACCUMULATE_SHAPE = {False: (128, 256, 256), True: (64, 128, 128)}  # by --quick
ACCUMULATE_PATCH = {False: (64, 128, 128), True: (32, 64, 64)}
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMemory:
    """The peak resident set from now on: ``VmHWM`` after resetting it (Linux ≥ 4.0)."""

    def __init__(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")
        self.start_mb = status_mb("VmRSS")

    def report(self) -> dict[str, float]:
        peak = status_mb("VmHWM")
        return {"peak_rss_mb": round(peak, 1), "peak_above_start_mb": round(peak - self.start_mb, 1)}


def setup(root: Path, quick: bool) -> dict[str, Any]:
    """Phantom, plan, preprocessed cases and a random fold-0 checkpoint under ``root``."""
    from clinix.data import write_phantom_dataset
    from clinix.plan import plan_experiment
    from clinix.preprocess import preprocess_dataset

    dataset = write_phantom_dataset(root / "dataset", cases=2, test_cases=2, size="tiny" if quick else "default")
    work = root / "work"
    plan, _ = plan_experiment(dataset, work, device="cpu", workers=1)
    preprocess_dataset(work, workers=1)
    save_random_checkpoint(work, plan)
    return {"arch": plan.arch, "patch_size": plan.patch_size, "num_classes": plan.num_classes}


def run_phantom_variant(work: Path, variant: str, device: str) -> dict[str, Any]:
    """``case``, ``case_tta``, ``window`` or ``naive`` in this process."""
    from clinix.infer import load_predictor, predict_folder
    from clinix.preprocess import load_case
    from clinix.workdir import WorkDir

    if variant.startswith("case"):
        memory = PeakMemory()
        images, out_dir = work.parent / "dataset" / "imagesTs", work.parent / variant
        summary = predict_folder(work, images, out_dir, tta=variant == "case_tta", device=device)
        return {"seconds_per_case": summary.seconds, **memory.report()}
    predictor = load_predictor(work, device=device, tta=False, precision="fp32")  # the naive baseline is fp32
    case_ids = sorted(p.stem for p in (WorkDir(work).preprocessed()).glob("*.json"))
    cases = [np.array(load_case(work, case_id)[0]) for case_id in case_ids]
    if variant == "window":
        return timed(predictor.predict_preprocessed, cases)
    network, plan, target = fold_network(work, predictor.device), predictor.plan, predictor.device
    return timed(lambda data: naive_probabilities(network, data, plan.patch_size, plan.num_classes, target), cases)


def setup_ct(root: Path) -> dict[str, Any]:
    """The lesion phantom, its CPU plan (and the baseline's) and a random fold-0 checkpoint of each."""
    from clinix.data.lesion import write_lesion_dataset
    from clinix.plan import plan_experiment
    from clinix.plan.topology import target_spacing

    dataset = write_lesion_dataset(root / "dataset", cases=4, test_cases=2)
    plan, _ = plan_experiment(dataset, root / "work", device="cpu", workers=1)
    fingerprint = json.loads((root / "work" / "fingerprint.json").read_text())
    spacings = np.array([case["spacing"] for case in fingerprint["cases"]])
    shapes = np.array([case["shape_after_crop"] for case in fingerprint["cases"]])
    baseline = dataclasses.replace(plan, crop="nonzero", target_spacing=target_spacing(spacings, shapes))
    for work, variant_plan in ((root / "work", plan), (root / "baseline", baseline)):
        save_random_checkpoint(work, variant_plan)
    return {
        "spacing": plan.target_spacing,
        "baseline_spacing": baseline.target_spacing,
        "crop": plan.crop,
        "patch_size": plan.patch_size,
        "features": plan.network["features"],
    }


def save_random_checkpoint(work: Path, plan: Any) -> None:
    """A randomly initialised network of ``plan`` as ``work``'s fold-0 final checkpoint (trained weights run at
    the same speed)."""
    from clinix import __version__
    from clinix.net.network import NetworkConfig
    from clinix.net.registry import build_network

    torch.manual_seed(0)
    network = build_network(plan.arch, NetworkConfig.from_dict(plan.network))
    checkpoint = work / "results" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    checkpoint.parent.mkdir(parents=True)
    state = {"model": network.state_dict(), "plan": plan.to_json(), "epoch": 0, "clinix_version": __version__}
    torch.save({**state, "fold": 0, "mirror_axes": [0, 1, 2], "best_ema": None}, checkpoint)


def run_ct_variant(root: Path, variant: str, device: str) -> dict[str, Any]:
    """One ``CT_VARIANTS`` entry: ``predict_folder`` over the test cases, stage times and peak memory."""
    from clinix.infer import load_predictor, predict_cases
    from clinix.infer.inputs import discover_inputs
    from clinix.infer.memory import prediction_peak_bytes
    from clinix.io.image import read_geometry

    baseline = variant == "ct_baseline"
    precision = "fp32" if baseline or "fp32" in variant else "bf16"
    work = root / ("baseline" if baseline else "work")
    predictor = load_predictor(work, device=device, tta=variant.endswith("_tta"), precision=precision)
    cases = discover_inputs(root / "dataset" / "imagesTs")
    estimates = []
    for case in cases:
        shape, channels, geometry = read_geometry(case.files[0])
        estimates.append(prediction_peak_bytes(shape, geometry.spacing, channels, predictor.plan) / 2**20)
    memory = PeakMemory()
    summary = predict_cases(predictor, cases, root / variant)
    return {
        "precision": summary.precision,
        "seconds_per_case": [round(s, 2) for s in summary.seconds],
        "stages_seconds": {stage: round(value, 2) for stage, value in summary.stages.seconds.items()},
        "memory_estimate_mb": round(max(estimates), 1),
        **memory.report(),
    }


def ct_ratios(results: dict[str, Any]) -> dict[str, float]:
    """Speed-ups against the baseline and of bf16 over fp32; the baseline's TTA time is estimated."""
    seconds = {name: mean(result["seconds_per_case"]) for name, result in results.items()}
    formulas = {  # each needs the variants it names (--ct-variants may leave some out)
        "fp32_tta_over_no_tta": ("ct_fp32_tta", "ct_fp32"),
        "bf16_speedup_no_tta": ("ct_fp32", "ct_bf16"),
        "bf16_speedup_tta": ("ct_fp32_tta", "ct_bf16_tta"),
        "baseline_over_fp32_no_tta": ("ct_baseline", "ct_fp32"),
        "baseline_over_bf16_no_tta": ("ct_baseline", "ct_bf16"),
    }
    out = {key: seconds[a] / seconds[b] for key, (a, b) in formulas.items() if a in seconds and b in seconds}
    if {"ct_baseline", "ct_fp32_tta", "ct_fp32"} <= set(seconds):
        out["baseline_tta_seconds_estimate"] = seconds["ct_baseline"] * out["fp32_tta_over_no_tta"]
    if "ct_bf16_tta" in seconds:
        out["bf16_tta_seconds_per_case"] = seconds["ct_bf16_tta"]
    return {key: round(value, 3) for key, value in out.items()}


def run_accumulate_variant(variant: str, quick: bool, device: str) -> dict[str, Any]:
    """Accumulators alone: 14 classes on a large grid with a pointwise network."""
    from clinix.device import resolve_device
    from clinix.infer.predictor import add_probabilities, default_batch_tiles
    from clinix.infer.sliding_window import sliding_window_logits

    target = resolve_device(device)
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, ACCUMULATE_CLASSES, 1).to(target).eval()
    data = np.random.default_rng(0).normal(size=(1, *ACCUMULATE_SHAPE[quick])).astype(np.float32)
    patch = ACCUMULATE_PATCH[quick]
    if variant == "accumulate_naive":
        return timed(lambda volume: naive_probabilities(network, volume, patch, ACCUMULATE_CLASSES, target), [data])

    def clinix_probabilities(volume: np.ndarray) -> np.ndarray:
        image = torch.from_numpy(volume).to(target)
        with torch.inference_mode():
            logits = sliding_window_logits(network, image, patch, ACCUMULATE_CLASSES, 0.5, default_batch_tiles(target))
            return add_probabilities(None, logits)

    return timed(clinix_probabilities, [data])


def timed(predict: Callable[[np.ndarray], np.ndarray], cases: list[np.ndarray]) -> dict[str, Any]:
    """Seconds per case, peak memory, and the foreground probability mass (the same for both windows)."""
    memory = PeakMemory()
    seconds, masses = [], []
    for data in cases:
        start = time.perf_counter()
        probabilities = predict(data)
        seconds.append(time.perf_counter() - start)
        masses.append(float(probabilities[1:].sum(dtype=np.float64)))  # no temporary copy
        del probabilities
    shapes = [list(data.shape[1:]) for data in cases]
    return {"seconds_per_case": seconds, "shapes": shapes, "foreground_mass": masses, **memory.report()}


def fold_network(work: Path, device: torch.device) -> torch.nn.Module:
    """Fold 0's network with its weights, deep supervision off, in eval mode."""
    from clinix.net.network import NetworkConfig
    from clinix.net.registry import build_network

    checkpoint = torch.load(work / "results" / "3d_fullres" / "fold_0" / "checkpoint_final.pt", weights_only=True)
    plan = checkpoint["plan"]
    network = build_network(plan["arch"], NetworkConfig.from_dict({**plan["network"], "deep_supervision": False}))
    network.load_state_dict(checkpoint["model"])
    return network.to(device).eval()


def naive_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor],
    data: np.ndarray,
    patch: Any,
    num_classes: int,
    device: torch.device,
    step: float = 0.5,
) -> np.ndarray:
    """The baseline: one tile per forward, one accumulator per class, full-size copies for the division."""
    from clinix.infer.sliding_window import gaussian_importance_map, pad_to_patch, tile_slices

    padded, region = pad_to_patch(torch.from_numpy(data).to(device), patch)
    gaussian = gaussian_importance_map(tuple(patch))
    per_class = [np.zeros(padded.shape[1:], dtype=np.float32) for _ in range(num_classes)]
    weights = np.zeros(padded.shape[1:], dtype=np.float32)
    with torch.inference_mode():
        for tile in tile_slices(padded.shape[1:], patch, step):
            logits = forward(padded[(None, slice(None), *tile)])[0].float().cpu().numpy()
            for k in range(num_classes):
                per_class[k][tile] += logits[k] * gaussian
            weights[tile] += gaussian
    averaged = np.stack([accumulator / weights for accumulator in per_class])
    exponentials = np.exp(averaged - averaged.max(axis=0, keepdims=True))
    return (exponentials / exponentials.sum(axis=0, keepdims=True))[(slice(None), *region)]


def run_in_subprocess(*arguments: str) -> dict[str, Any]:
    command = [sys.executable, __file__, *arguments]
    result = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, **MALLOC_ENV})
    return json.loads(result.stdout.strip().splitlines()[-1])


def mean(values: list[float]) -> float:
    return float(np.mean(values))


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Naive over clinix for seconds and for peak memory above the start; TTA over none for whole cases."""
    out = {}
    pairs = {"window": ("naive", "window"), "accumulate": ("accumulate_naive", "accumulate")}
    for name, (naive_name, clinix_name) in pairs.items():
        naive, clinix = results[naive_name], results[clinix_name]
        out[f"{name}_naive_over_clinix_seconds"] = mean(naive["seconds_per_case"]) / mean(clinix["seconds_per_case"])
        out[f"{name}_naive_over_clinix_peak_above_start"] = naive["peak_above_start_mb"] / clinix["peak_above_start_mb"]
        difference = np.abs(np.subtract(naive["foreground_mass"], clinix["foreground_mass"]))
        out[f"{name}_foreground_mass_relative_difference"] = float(max(difference / clinix["foreground_mass"]))
    case, case_tta = results["case"]["seconds_per_case"], results["case_tta"]["seconds_per_case"]
    out["case_tta_over_no_tta_seconds"] = mean(case_tta) / mean(case)
    return {key: round(value, 6) for key, value in out.items()}


def ct_report(common: list[str], variants: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        report: dict[str, Any] = {"device": common[1], "torch_threads": torch.get_num_threads(), **setup_ct(root)}
        report["memory"] = "VmHWM (kernel peak RSS) reset before the timed part, one fresh process per variant"
        results: dict[str, Any] = {}
        for variant in variants:
            results[variant] = run_in_subprocess("--variant", variant, "--work", str(root), *common)
            print(f"{variant}: {json.dumps(results[variant])}", file=sys.stderr, flush=True)
        report["results"] = results
        report["ratios"] = ct_ratios(results)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny phantom and a smaller accumulation grid")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads in every variant (default: torch's)")
    parser.add_argument("--ct", action="store_true", help="the CT-sized lesion phantom, per stage, fp32 vs bf16")
    parser.add_argument(
        "--variant", choices=PHANTOM_VARIANTS + ACCUMULATE_VARIANTS + CT_VARIANTS, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--ct-variants", default=",".join(CT_VARIANTS), help="with --ct: the variants to run (the baseline is slow)"
    )
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant in ACCUMULATE_VARIANTS:
        print(json.dumps(run_accumulate_variant(args.variant, args.quick, args.device)))
        return
    if args.variant in CT_VARIANTS:
        print(json.dumps(run_ct_variant(args.work, args.variant, args.device)))
        return
    if args.variant:
        print(json.dumps(run_phantom_variant(args.work, args.variant, args.device)))
        return
    common = ["--device", args.device, *(["--quick"] if args.quick else [])]
    common += ["--threads", str(args.threads)] if args.threads else []
    if args.ct:
        variants = args.ct_variants.split(",")
        unknown = sorted(set(variants) - set(CT_VARIANTS))
        if unknown:
            parser.error(f"unknown --ct-variants {unknown}; choose from {', '.join(CT_VARIANTS)}")
        print(json.dumps(ct_report(common, variants), indent=2))
        return
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        report: dict[str, Any] = {"device": args.device, "torch_threads": torch.get_num_threads()}
        report |= {"phantom": "tiny" if args.quick else "default", **setup(root, args.quick)}
        report["memory"] = "VmHWM (kernel peak RSS) reset before the timed part, one fresh process per variant"
        results: dict[str, Any] = {}
        for variant in PHANTOM_VARIANTS + ACCUMULATE_VARIANTS:
            results[variant] = run_in_subprocess("--variant", variant, "--work", str(root / "work"), *common)
            print(f"{variant}: {json.dumps(results[variant])}", file=sys.stderr, flush=True)
        report["accumulate"] = {"classes": ACCUMULATE_CLASSES, "shape": ACCUMULATE_SHAPE[args.quick]}
        report["accumulate"]["patch"] = ACCUMULATE_PATCH[args.quick]
        report["results"] = results
        report["ratios"] = ratios(results)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
