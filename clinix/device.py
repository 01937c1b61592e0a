"""Device and arithmetic precision: one place below training and inference that both ask.

``resolve_device`` turns ``--device`` into a ``torch.device``; ``resolve_precision`` turns ``--precision``
into the autocast dtype of a forward pass (None: plain float32), for inference or for training (whose
losses and Mamba layers stay in float32 either way).

Precision on the CPU: bfloat16 autocast doubles the speed of clinix's convolutions on CPUs with AVX-512 BF16
or AMX (oneDNN uses their bf16 dot-product instructions), and makes them slower on CPUs without (the bf16
values are converted in software). ``auto`` therefore asks two things: does the CPU report the instructions
(torch's own cpuinfo query), and is a bf16 convolution really faster here (a self-check of about 0.1 s, run
once per process; for training the convolution's backward is timed too, once per machine). On CUDA ``auto`` is float16
autocast for inference (nnU-Net's) and for training bfloat16 where the GPU has it, else float16 with a
gradient scaler; on MPS float32.
"""

from __future__ import annotations

import contextlib
import time
from functools import lru_cache

import torch
import torch.nn.functional as F

from clinix.cache import machine_key, read_store, write_store
from clinix.errors import ClinixError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
BF16_MIN_SPEEDUP = 1.25  # auto picks bf16 on the CPU only when the self-check runs at least this much faster
BF16_TRAINING_FILE = "bf16-training.json"  # the training self-check's result per machine (clinix.cache)


def resolve_device(name: str) -> torch.device:
    """``auto`` = cuda if available, else mps if available, else cpu; a named device must be available."""
    if name not in DEVICES:
        raise ClinixError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ClinixError(f"--device {name} was asked for but this machine has no {name.upper()} device")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX-512 BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, check, lambda: False)()) for check in checks)


@lru_cache(maxsize=2)
def cpu_bf16_speedup(training: bool = False) -> float:
    """float32 time / bf16-autocast time of a 3D convolution like clinix's early stages.

    Two 32→32-channel 3×3×3 convolutions of a 16×32×32 tile, channels-last as the network runs (1.8 GFLOP,
    oneDNN's path in both precisions), best of five after a warm-up: for inference once per process; for
    training forward and backward, measured once per machine and kept in clinix's cache
    (``bf16-training.json``), so that two runs on one machine never train in different precisions because
    a timing came out differently.
    """
    if not training:
        return _measure_bf16_speedup(training=False)
    key, known = machine_key(), read_store(BF16_TRAINING_FILE)
    if isinstance(known.get(key), int | float):
        return float(known[key])
    known[key] = speedup = _measure_bf16_speedup(training=True)
    with contextlib.suppress(OSError):  # a read-only home: measured again next time
        write_store(BF16_TRAINING_FILE, known)
    return speedup


def _measure_bf16_speedup(training: bool) -> float:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 16, 32, 32, generator=generator).contiguous(memory_format=torch.channels_last_3d)
    weight = torch.randn(32, 32, 3, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last_3d)
    weight.requires_grad_(training)

    def run(dtype: torch.dtype | None) -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = F.conv3d(x, weight, padding=1)
        if training:
            out.float().sum().backward()

    def best_time(dtype: torch.dtype | None) -> float:
        times = []
        with torch.inference_mode(not training):
            for _ in range(6):
                start = time.perf_counter()
                run(dtype)
                times.append(time.perf_counter() - start)
        return min(times[1:])

    return best_time(None) / best_time(torch.bfloat16)


def resolve_precision(name: str, device: torch.device, training: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``--precision name`` on ``device``; None means float32 without autocast.

    ``fp32``: None everywhere. ``bf16``: bfloat16 where the hardware has it, else a ClinixError. ``auto``:
    on CUDA float16 (inference) or bfloat16 where supported, else float16 (``training``); bfloat16 on a
    CPU with bf16 instructions that passes the self-check; else None.
    """
    if name not in PRECISIONS:
        raise ClinixError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "fp32" or device.type == "mps":
        if name == "bf16":
            raise ClinixError("--precision bf16 is not supported on MPS; use --precision fp32")
        return None
    if device.type == "cuda":
        if name == "auto":
            return torch.bfloat16 if training and torch.cuda.is_bf16_supported() else torch.float16
        if not torch.cuda.is_bf16_supported():
            raise ClinixError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support")
        return torch.bfloat16
    if name == "bf16":
        if not cpu_has_bf16():
            raise ClinixError(
                "--precision bf16: this CPU has no bf16 instructions (AVX-512 BF16 or AMX), where bf16 is slower "
                "than float32; use --precision fp32 or auto"
            )
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_bf16() and cpu_bf16_speedup(training) >= BF16_MIN_SPEEDUP else None


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16``: how a resolved precision is shown to the user."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
