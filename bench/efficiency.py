"""Achieved GFLOP/s of clinix's networks against a plain U-Net of the same topology; print JSON.

The baseline is written here after nnU-Net's PlainConvUNet (shared/reference/nnunet-reference.md): per
stage two (conv, InstanceNorm, LeakyReLU 0.01), the first conv strided for downsampling; the decoder
upsamples with a transposed conv, concatenates the skip and applies two such convs; a 1×1×1 head per
decoder level (deep supervision). clinix's ``--arch`` networks get the same features, kernels and
strides through ``clinix.net.registry.config_for_arch``.

``plain-cl`` is the same baseline given clinix's CPU levers (channels-last 3D weights and input, clinix's
channels-last InstanceNorm): what those levers are worth to a network that has no other changes.

For each topology (``cpu-plan`` 40×64×64 with 8..128 features, ``5-stage`` 32×64×64 with 32..320,
``6-stage`` 48×128×160 with 32..320; batch 2, one input channel, 3 classes) and each network, in a fresh
process:

- inference: seconds of a forward without gradients (the median of ``--steps`` after one untimed), FLOPs
  from ``torch.utils.flop_counter`` plus the selective scan counted analytically (forward
  ``9·B·L·d_inner·d_state``, backward twice that; the counter does not see it), achieved GFLOP/s, peak
  memory (the kernel's ``VmHWM`` after a reset, minus the resident set at the reset;
  ``max_memory_allocated`` on CUDA);
- training: the same for a step (forward with deep supervision, CE + Dice in float32, backward, Adam);
- ``training_bf16`` (``--bf16``): the step with the forward under bfloat16 autocast (``clinix train
  --precision bf16``); ``speedup`` is fp32 seconds / bf16 seconds of the same network;
- ``training_checkpointed`` (``--checkpointing``, clinix's networks): the step with activation
  checkpointing; ``time_ratio`` is its seconds / the fp32 step's of the same network;
- ``blocks`` (``--blocks``): each kind of block (stem, ResidualBlockD, HGCN, Mamba, decoder level) run
  alone on an input of the shape it gets inside the network, forward+backward: seconds, FLOPs, GFLOP/s
  and its share of the summed block time.

Ratios are against the plain U-Net measured in the same run (``ratio`` > 1: more GFLOP/s than it;
``memory_ratio``: peak memory over the plain U-Net's fp32 training or inference peak). Every child runs
with ``THP_MEM_ALLOC_ENABLE`` as ``--huge-pages`` says (on: what clinix sets for itself on import).

    python bench/efficiency.py [--topologies cpu-plan,5-stage,6-stage] [--archs mambaclinix,resunet]
                               [--steps 3] [--threads 2] [--blocks] [--bf16] [--checkpointing]
                               [--huge-pages on|off] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

TOPOLOGIES = {
    "cpu-plan": {"patch": [40, 64, 64], "features": [8, 16, 32, 64, 128]},
    "5-stage": {"patch": [32, 64, 64], "features": [32, 64, 128, 256, 320]},
    "6-stage": {"patch": [48, 128, 160], "features": [32, 64, 128, 256, 320, 320]},
}
BATCH, CLASSES = 2, 3
PLAIN = "plain"
PLAIN_CL = "plain-cl"
SCAN_FLOPS_PER_ELEMENT = 9  # exp(ΔA), ΔB·x, the state update (2), <h, C> (2), the skip and gate (2)


class ConvBlock(nn.Sequential):
    def __init__(
        self, cin: int, cout: int, kernel: list[int], stride: list[int] | int = 1, norm: type = nn.InstanceNorm3d
    ) -> None:
        padding = [k // 2 for k in kernel]
        super().__init__(
            nn.Conv3d(cin, cout, kernel, stride, padding),
            norm(cout, eps=1e-5, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class PlainUNet(nn.Module):
    """nnU-Net's PlainConvUNet: ``(B, C, *S) -> [(B, K, *S), (B, K, *S/2), ...]`` (deep supervision)."""

    def __init__(
        self, features: list[int], kernels: list[list[int]], strides: list[list[int]], channels_last: bool = False
    ) -> None:
        super().__init__()
        from clinix.net.layers import InstanceNorm3d

        norm = InstanceNorm3d if channels_last else nn.InstanceNorm3d
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        cin, self.encoder = 1, nn.ModuleList()
        for width, kernel, stride in zip(features, kernels, strides, strict=True):
            self.encoder.append(
                nn.Sequential(ConvBlock(cin, width, kernel, stride, norm), ConvBlock(width, width, kernel, norm=norm))
            )
            cin = width
        self.up, self.decoder, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in range(len(features) - 1, 0, -1):
            low, high, stride = features[level], features[level - 1], strides[level]
            self.up.append(nn.ConvTranspose3d(low, high, stride, stride))
            kernel = kernels[level - 1]
            self.decoder.append(
                nn.Sequential(ConvBlock(2 * high, high, kernel, norm=norm), ConvBlock(high, high, kernel, norm=norm))
            )
            self.heads.append(nn.Conv3d(high, CLASSES, 1))
        self.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.contiguous(memory_format=self.memory_format)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        outputs = []
        for up, block, head, skip in zip(self.up, self.decoder, self.heads, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([up(x), skip], 1))
            outputs.append(head(x))
        return outputs[::-1]


def topology(name: str) -> tuple[list[int], list[int], list[list[int]], list[list[int]]]:
    from clinix.plan.topology import pool_and_kernel_topology

    patch, features = TOPOLOGIES[name]["patch"], TOPOLOGIES[name]["features"]
    found = pool_and_kernel_topology([1.0, 1.0, 1.0], patch, max_stages=len(features))
    kernels = [list(k) for k in found.kernel_sizes][: len(features)]
    strides = [list(s) for s in found.strides][: len(features)]
    return list(found.patch_size), features, kernels, strides


def build(arch: str, name: str) -> nn.Module:
    _, features, kernels, strides = topology(name)
    if arch in (PLAIN, PLAIN_CL):
        return PlainUNet(features, kernels, strides, channels_last=arch == PLAIN_CL)
    from clinix.net.registry import build_network, config_for_arch

    return build_network(arch, config_for_arch(arch, 1, CLASSES, features, kernels, strides))


def scan_flops(model: nn.Module, data: torch.Tensor) -> float:
    """Forward FLOPs of every selective scan in one forward of ``model`` on ``data`` (analytic)."""
    from clinix.net.mamba import Mamba

    total = [0.0]

    def count(module: Mamba, inputs: tuple[torch.Tensor, ...]) -> None:
        batch, tokens = inputs[0].shape[0], inputs[0].shape[1]
        total[0] += SCAN_FLOPS_PER_ELEMENT * batch * tokens * module.d_inner * module.d_state

    handles = [m.register_forward_pre_hook(count) for m in model.modules() if isinstance(m, Mamba)]
    with torch.no_grad():
        model(data)
    for handle in handles:
        handle.remove()
    return total[0]


def loss_of(outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    from clinix.train.losses import build_loss, deep_supervision_weights

    loss = build_loss("ce-dice", batch_dice=False, deep_supervision_weights=deep_supervision_weights(len(outputs)))
    return loss(outputs, target)


def peak_reset() -> float:
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def timed(step: Callable[[], Any], steps: int, device: torch.device) -> float:
    step()  # warm-up (allocator, oneDNN primitives)
    seconds = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def measure(arch: str, name: str, steps: int, device: torch.device, options: argparse.Namespace) -> dict[str, Any]:
    """One network at one topology: inference and training rows (the variants and the block breakdown)."""
    torch.manual_seed(0)
    patch, *_ = topology(name)
    model = build(arch, name).to(device)
    data = torch.randn(BATCH, 1, *patch, device=device)
    target = torch.randint(0, CLASSES, (BATCH, 1, *patch), device=device, dtype=torch.int16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scan = scan_flops(model, data) if arch not in (PLAIN, PLAIN_CL) else 0.0

    def train_step(autocast: torch.dtype | None = None) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            outputs = model(data)
        loss_of([o.float() for o in outputs], target).backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.no_grad():
            model(data)

    def checkpointed_step() -> None:
        model.checkpointing = True
        try:
            train_step()
        finally:
            model.checkpointing = False

    kinds: list[tuple[str, Callable[[], None], float]] = [("inference", infer_step, 1.0), ("training", train_step, 3.0)]
    if options.bf16:
        kinds.append(("training_bf16", lambda: train_step(torch.bfloat16), 3.0))
    if options.checkpointing and hasattr(model, "checkpointing"):
        kinds.append(("training_checkpointed", checkpointed_step, 3.0))
    rows = {}
    for kind, step, scan_factor in kinds:
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops() + scan_factor * scan
        before = peak_reset() if device.type == "cpu" else 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(step, steps, device)
        peak = _status_mb("VmHWM") - before if device.type == "cpu" else torch.cuda.max_memory_allocated() / 2**20
        rows[kind] = {
            "seconds": round(seconds, 4),
            "gflop": round(flops / 1e9, 2),
            "scan_gflop": round(scan_factor * scan / 1e9, 3),
            "gflops_per_s": round(flops / seconds / 1e9, 1),
            "peak_mb": round(peak, 0),
        }
    if "training_bf16" in rows:
        rows["training_bf16"]["speedup"] = round(rows["training"]["seconds"] / rows["training_bf16"]["seconds"], 3)
    if "training_checkpointed" in rows:
        ratio = rows["training_checkpointed"]["seconds"] / rows["training"]["seconds"]
        rows["training_checkpointed"]["time_ratio"] = round(ratio, 3)
    result: dict[str, Any] = {"arch": arch, "topology": name, "patch": patch, **rows}
    if options.blocks:
        result["blocks"] = block_breakdown(model, data, steps, device)
    return result


def block_kind(module: nn.Module) -> str | None:
    from clinix.net.decoder import DecoderLevel
    from clinix.net.hgconv import HGCNBlock
    from clinix.net.layers import ConvNormAct
    from clinix.net.mamba import ResidualMambaLayer
    from clinix.net.residual import BasicBlockD

    kinds = (
        (ConvNormAct, "stem"),
        (BasicBlockD, "ResidualBlockD"),
        (HGCNBlock, "HGCN"),
        (ResidualMambaLayer, "Mamba"),
        (DecoderLevel, "decoder"),
        (ConvBlock, "conv-IN-LReLU"),
    )
    for cls, name in kinds:
        if isinstance(module, cls):
            return name
    return None


def block_breakdown(model: nn.Module, data: torch.Tensor, steps: int, device: torch.device) -> dict[str, Any]:
    """Each top-most block run alone, forward+backward, on the inputs it gets in the network."""
    calls: list[tuple[str, nn.Module, tuple[torch.Tensor, ...]]] = []
    seen: set[int] = set()

    def record(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        kind = block_kind(module)
        inside = any(id(parent) in seen for parent in _parents.get(id(module), []))
        if kind and not inside and all(isinstance(i, torch.Tensor) for i in inputs):
            calls.append((kind, module, tuple(i.detach().clone() for i in inputs)))

    _parents = _parent_map(model)
    handles = [m.register_forward_pre_hook(record) for m in model.modules() if block_kind(m)]
    seen.update(id(m) for m in model.modules() if block_kind(m))
    with torch.no_grad():
        model(data)
    for handle in handles:
        handle.remove()
    totals: dict[str, dict[str, float]] = {}
    for kind, module, inputs in calls:
        leaves = [x.requires_grad_(x.is_floating_point()) for x in inputs]

        def step(module: nn.Module = module, leaves: list[torch.Tensor] = leaves) -> None:
            out = module(*leaves)
            out = out[0] if isinstance(out, (list, tuple)) else out
            out.float().square().mean().backward()

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        if kind == "Mamba":
            flops += 3 * scan_flops(module, leaves[0].detach())
        seconds = timed(step, steps, device)
        entry = totals.setdefault(kind, {"count": 0, "seconds": 0.0, "gflop": 0.0})
        entry["count"] += 1
        entry["seconds"] += seconds
        entry["gflop"] += flops / 1e9
    summed = sum(entry["seconds"] for entry in totals.values()) or math.nan
    return {
        kind: {
            "count": int(entry["count"]),
            "seconds": round(entry["seconds"], 4),
            "gflop": round(entry["gflop"], 2),
            "gflops_per_s": round(entry["gflop"] / entry["seconds"], 1),
            "share": round(entry["seconds"] / summed, 3),
        }
        for kind, entry in totals.items()
    }


def _parent_map(model: nn.Module) -> dict[int, list[nn.Module]]:
    parents: dict[int, list[nn.Module]] = {}

    def walk(module: nn.Module, ancestors: list[nn.Module]) -> None:
        parents[id(module)] = ancestors
        for child in module.children():
            walk(child, [*ancestors, module])

    walk(model, [])
    return parents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument("--archs", default="mambaclinix,resunet")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blocks", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--huge-pages", choices=("on", "off"), default="on")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # arch:topology, in the child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.one:
        arch, name = args.one.split(":")
        print(json.dumps(measure(arch, name, args.steps, device, args)))
        return
    rows = []
    flags = [f"--{flag}" for flag in ("blocks", "bf16", "checkpointing") if getattr(args, flag)]
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if args.huge_pages == "on" else "0"}
    for name in args.topologies.split(","):
        for arch in [PLAIN, *args.archs.split(",")]:
            command = [sys.executable, __file__, "--one", f"{arch}:{name}", "--steps", str(args.steps)]
            command += ["--threads", str(args.threads), "--device", args.device, *flags]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                rows.append({"arch": arch, "topology": name, "error": done.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for row in rows:
        base = next((r for r in rows if r["topology"] == row["topology"] and r["arch"] == PLAIN), None)
        for kind in ("inference", "training", "training_bf16", "training_checkpointed"):
            reference = "inference" if kind == "inference" else "training"
            if base and kind in row and reference in base:
                row[kind]["ratio"] = round(row[kind]["gflops_per_s"] / base[reference]["gflops_per_s"], 3)
                row[kind]["memory_ratio"] = round(row[kind]["peak_mb"] / max(base[reference]["peak_mb"], 1.0), 2)
    report = {
        "device": args.device,
        "threads": args.threads,
        "batch": BATCH,
        "huge_pages": args.huge_pages,
        "torch": torch.__version__,
        "rows": rows,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
