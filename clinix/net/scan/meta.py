"""The selective scan on ``meta`` tensors: no arithmetic, only the buffers a backend would allocate.

The planner runs whole training steps on the meta device to learn what they hold in memory
(``clinix.plan.memory``). The scan is the one part whose memory depends on the backend that will run it,
so ``simulated_scan(backend)`` chooses what a meta scan allocates and keeps for backward:

- ``"shape-only"`` (the default, for FLOP counting and shape checks): the output alone, no gradient.
- ``"chunked"``: what clinix's pure-PyTorch backend keeps: time-major copies of u, Δ ``(L, B, D)``, B, C
  ``(L, B, N)`` (L padded to whole 64-token chunks), the states at chunk starts ``(L / 64, B, D, N)``, the
  biased Δ, the ungated output and SiLU(z); backward adds a time-major gradient of y and a few
  ``(64, B, D, N)`` chunk buffers at a time.
- ``"chunked-ops"``: that backend's own code, operation by operation (exact, but ~10x the operations of
  a whole network: the tests use it to check ``"chunked"``).
- ``"cpu-kernel"``: what ``kernel.KernelScan`` keeps: its inputs, B and C time-major ``(B, L, N)``, the
  state every 64 steps ``(B, D, ceil(L/64), N)``, the output; backward allocates a gradient per input.
- ``"mamba_ssm-cuda"``: what mamba_ssm 2.x's ``SelectiveScanFn`` keeps with a gate ``z``: its inputs, the
  states at its 2048-token chunk starts ``(B, D, ceil(L/2048), 2N)``, the ungated and gated outputs.

Shapes as in ``dispatch.py``: u, delta, z ``(B, D, L)``; A ``(D, N)``; B, C ``(B, N, L)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from clinix.net.scan.chunked import CHUNK_TOKENS
from clinix.net.scan.dispatch import chunked_selective_scan
from clinix.net.scan.kernel import CHECKPOINT_EVERY

SIMULATED_BACKENDS = ("shape-only", "chunked", "chunked-ops", "cpu-kernel", "mamba_ssm-cuda")
MAMBA_SSM_CHUNK = 2048  # tokens per chunk of mamba_ssm's CUDA kernel (selective_scan_fwd_kernel.cuh)
CHUNK_BUFFERS = 6  # (64, B, D, N) tensors alive at once in the chunked backward (chunked._chunk_gradients)

_simulated: ContextVar[str] = ContextVar("clinix_simulated_scan", default="shape-only")


@contextmanager
def simulated_scan(backend: str) -> Iterator[None]:
    """Within the block, meta scans allocate what ``backend`` allocates (module docstring)."""
    if backend not in SIMULATED_BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; one of {', '.join(SIMULATED_BACKENDS)}")
    token = _simulated.set(backend)
    try:
        yield
    finally:
        _simulated.reset(token)


def meta_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """``selective_scan`` for meta tensors; same arguments."""
    backend = _simulated.get()
    if backend == "shape-only":
        return torch.empty_like(u)
    if backend == "chunked-ops":
        return chunked_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return _BufferedScan.apply(backend, u, delta, A, B, C, D, z, delta_bias)


class _BufferedScan(torch.autograd.Function):
    """Allocates and keeps the buffers of a compiled backend (module docstring); computes nothing."""

    @staticmethod
    def forward(ctx: Any, backend: str, u: torch.Tensor, *operands: torch.Tensor | None) -> torch.Tensor:
        A, B, C = operands[1:4]  # operands: delta, A, B, C, D, z, delta_bias
        batch, channels, length = u.shape
        state = A.shape[1]
        out = torch.empty_like(u)
        padded = -(-length // CHUNK_TOKENS) * CHUNK_TOKENS
        if backend == "chunked":
            extra = [
                torch.empty_like(u),  # Δ + bias (softplus keeps its input)
                *(u.new_empty(padded, batch, channels) for _ in range(2)),  # u, Δ time-major
                *(B.new_empty(padded, batch, state) for _ in range(2)),  # B, C time-major
                u.new_empty(padded // CHUNK_TOKENS, batch, channels, state),  # chunk-start states
                torch.empty_like(u),  # y + D·u, kept by the gate's product
                torch.empty_like(u),  # SiLU(z)
            ]
        elif backend == "cpu-kernel":
            extra = [
                B.new_empty(batch, length, state),  # B and C time-major
                C.new_empty(batch, length, state),
                u.new_empty(batch, channels, -(-length // CHECKPOINT_EVERY), state),
            ]
        else:  # mamba_ssm: chunk-start states, and the output before the gate
            extra = [u.new_empty(batch, channels, -(-length // MAMBA_SSM_CHUNK), 2 * state), torch.empty_like(u)]
        ctx.save_for_backward(*(t for t in (u, *operands) if t is not None), *extra)
        ctx.inputs = [None if t is None else (t.shape, t.dtype) for t in (u, *operands)]
        ctx.backend, ctx.padded, ctx.state = backend, padded, state
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """A gradient for every input (the backends allocate one each), nothing computed."""
        grads = tuple(
            None if spec is None else torch.empty(spec[0], dtype=spec[1], device="meta") for spec in ctx.inputs
        )
        if ctx.backend == "chunked":  # the time-major gradient of y, and one chunk's working buffers
            batch, channels = grad_out.shape[:2]
            working = [grad_out.new_empty(ctx.padded, batch, channels)]
            working += [grad_out.new_empty(CHUNK_TOKENS, batch, channels, ctx.state) for _ in range(CHUNK_BUFFERS)]
            del working
        return (None, *grads)
