"""Benchmark the selective-scan backends against the sequential per-token loop; print JSON.

Shapes as in a MambaClinix stage: batch 2, d_inner 512, d_state 16, L tokens (default 512, 1200, 4096),
float32 on the CPU, with the Mamba arguments (D, z, delta_bias, delta_softplus=True). For every L,
pass ("forward": inputs without grad; "forward+backward": ``y.backward`` with a random upstream grad)
and backend ("loop" = ``selective_scan_reference``, "chunked", "cpu-kernel", chosen through
``$CLINIX_SCAN_BACKEND``) it reports:
- ``seconds``: the median wall time of ``--repeats`` calls after one untimed warm-up call, and
  ``cpu_seconds`` the median CPU time of this process over the same calls;
- ``speedup_vs_loop`` (``cpu_speedup_vs_loop``): the loop's seconds (CPU seconds), measured in the
  same run, over the backend's;
- ``peak_extra_mb``: memory in MiB, measured during the warm-up call as the highest resident set size
  (``/proc/self/statm``, sampled every millisecond by a thread) minus the RSS just before the call.
  Every case runs in its own fresh interpreter, so no other case's freed memory hides allocations;
- ``rel_diff_vs_loop``: ``||y - y_loop|| / ||y_loop||``, to show that the backends agree.
Absolute seconds depend on the load of the machine (the 1-minute load average before and after is
reported); the ratios are the point. On a machine shared with other jobs, ``--threads 1`` and the CPU
ratios are the steadiest: a parallel torch op waits for its slowest thread, a thread that shares its
core waits long, and the CPU time of one thread counts none of that waiting.

    python bench/scan.py [--lengths 512,4096] [--repeats 3] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from clinix.net.scan import selective_scan
from clinix.net.scan.dispatch import BACKEND_ENV, cpu_kernel, cpu_kernel_failure

BACKENDS = {"loop": "reference", "chunked": "chunked", "cpu-kernel": "cpu-kernel"}
BATCH, D_INNER, D_STATE = 2, 512, 16


def rss_bytes() -> int:
    pages = Path("/proc/self/statm").read_text().split()[1]
    return int(pages) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_mib(call: Callable[[], object]) -> float:
    """Run ``call`` once while sampling the RSS; the highest sample above the starting RSS, in MiB."""
    start = rss_bytes()
    peak = start
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        call()
    finally:
        done.set()
        sampler.join()
    return (max(peak, rss_bytes()) - start) / 2**20


def scan_inputs(length: int, requires_grad: bool) -> dict[str, torch.Tensor]:
    """Random inputs at Mamba's scales: A = -(1..16) in every channel, Δ = softplus(·) around 1e-2."""
    generator = torch.Generator().manual_seed(length)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    tensors = {
        "u": normal(BATCH, D_INNER, length),
        "delta": normal(BATCH, D_INNER, length) * 0.5,
        "A": -torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(D_INNER, 1),
        "B": normal(BATCH, D_STATE, length),
        "C": normal(BATCH, D_STATE, length),
        "D": torch.ones(D_INNER),
        "z": normal(BATCH, D_INNER, length),
        "delta_bias": torch.full((D_INNER,), -4.6),  # softplus⁻¹(0.01)
    }
    return {name: t.requires_grad_(requires_grad) for name, t in tensors.items()}


def measure_case(backend: str, length: int, with_backward: bool, repeats: int) -> tuple[dict, torch.Tensor]:
    """Memory during a warm-up call, then the median time of ``repeats`` calls; also y."""
    os.environ[BACKEND_ENV] = BACKENDS[backend]
    inputs = scan_inputs(length, requires_grad=with_backward)
    upstream = torch.randn(BATCH, D_INNER, length, generator=torch.Generator().manual_seed(0))
    outputs = []

    def call() -> None:
        for tensor in inputs.values():
            tensor.grad = None
        y = selective_scan(**inputs, delta_softplus=True)
        if with_backward:
            y.backward(upstream)
        if not outputs:
            outputs.append(y.detach())

    memory = peak_extra_mib(call)
    wall, cpu = [], []
    for _ in range(repeats):
        wall_begin, cpu_begin = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - wall_begin)
        cpu.append(time.process_time() - cpu_begin)
    timing = {"seconds": statistics.median(wall), "cpu_seconds": statistics.median(cpu)}
    return {**{key: round(value, 4) for key, value in timing.items()}, "peak_extra_mb": round(memory, 1)}, outputs[0]


def child_main(case: str, repeats: int, loop_y_file: Path) -> None:
    """Measure one case in this (fresh) process; the loop saves its y, the others compare with it."""
    backend, length, with_backward = case.split(":")
    if backend == "cpu-kernel" and cpu_kernel() is None:
        print(json.dumps({"skipped": cpu_kernel_failure()}))
        return
    result, y = measure_case(backend, int(length), with_backward == "1", repeats)
    if backend == "loop":
        torch.save(y, loop_y_file)
    else:
        loop_y = torch.load(loop_y_file)
        result["rel_diff_vs_loop"] = float(f"{((y - loop_y).norm() / loop_y.norm()).item():.1e}")
    print(json.dumps(result))


def run_case_in_child(case: str, repeats: int, threads: int, loop_y_file: Path) -> dict:
    command = [sys.executable, __file__, "--case", case, "--loop-y", str(loop_y_file)]
    command += ["--repeats", str(repeats), "--threads", str(threads)]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def run(lengths: list[int], repeats: int, threads: int) -> dict:
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        loop_y_file = Path(folder) / "loop_y.pt"
        for length in lengths:
            for with_backward in (False, True):
                loop = None
                for backend in BACKENDS:  # the loop first: the others compare with it
                    case = f"{backend}:{length}:{int(with_backward)}"
                    result = run_case_in_child(case, repeats, threads, loop_y_file)
                    loop = loop or result
                    if "seconds" in result:
                        result["speedup_vs_loop"] = round(loop["seconds"] / result["seconds"], 2)
                        result["cpu_speedup_vs_loop"] = round(loop["cpu_seconds"] / result["cpu_seconds"], 2)
                    phase = "forward+backward" if with_backward else "forward"
                    rows.append({"length": length, "pass": phase, "backend": backend, **result})
    return {
        "config": {
            "batch": BATCH,
            "d_inner": D_INNER,
            "d_state": D_STATE,
            "dtype": "float32",
            "threads": threads,
            "cpu_count": os.cpu_count(),
            "repeats": repeats,
            "memory": "fresh process per case; peak RSS sampled every 1 ms minus RSS before the call, MiB",
            "load_average_before_after": [load_before, os.getloadavg()[0]],
        },
        "results": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,1200,4096", help="comma-separated sequence lengths")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (median reported)")
    parser.add_argument("--quick", action="store_true", help="L = 512 only, one timed call")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch (and kernel) threads [default: torch's]"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # backend:length:with_backward, in a child
    parser.add_argument("--loop-y", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        child_main(args.case, args.repeats, args.loop_y)
        return
    lengths = [512] if args.quick else [int(part) for part in args.lengths.split(",")]
    print(json.dumps(run(lengths, 1 if args.quick else args.repeats, args.threads), indent=2))


if __name__ == "__main__":
    main()
