"""The "cpu-kernel" backend: the fused C++ scan (``clinix/net/csrc``) behind a torch.autograd.Function.

Shapes: u, delta, z ``(B, D, L)``; A ``(D, N)``; B, C ``(B, N, L)``; D, delta_bias ``(D,)``; all
float32, contiguous, on the CPU; D, z and delta_bias may be None. Computes everything
``selective_scan`` does in one pass, with no ``(B, D, L)`` temporaries:

    Δ = softplus(delta + delta_bias),   h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,
    y_t = (<h_t, C_t> + D u_t) · SiLU(z_t)

Algorithm: one OpenMP task per (batch, channel) pair runs the recurrence over time, vectorised over
the N states. The forward pass stores the state before every block of ``CHECKPOINT_EVERY`` steps
(``(B, D, L / K, N)``, 4 MB at B 2, D 512, L 4096, N 16). The backward pass walks the blocks from the
last to the first: it recomputes the block's states from its checkpoint into a small buffer that
stays in L1, then runs the adjoint recursion ``g_{t-1} = exp(Δ_t A) (g_t + dy_t C_t)`` backwards
through the block, accumulating every gradient on the way. No ``(B, D, L, N)`` tensor is ever held.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

CHECKPOINT_EVERY = 64


def _address(tensor: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if tensor is None else tensor.data_ptr())


def _zeros_like(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else torch.zeros_like(tensor)


class KernelScan(torch.autograd.Function):
    """``y = selective_scan(u, delta, A, B, C, D, z, delta_bias, softplus)`` with the C++ kernel.

    ``handle`` is the loaded ctypes library (``clinix.net.scan.build``).
    """

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor | None,
        z: torch.Tensor | None,
        delta_bias: torch.Tensor | None,
        softplus: bool,
        handle: ctypes.CDLL,
    ) -> torch.Tensor:
        batch, channels, length = u.shape
        state = A.shape[1]
        # Time-major B and C: the N values of one step are contiguous for the inner loop.
        b_time = B.transpose(1, 2).contiguous()
        c_time = C.transpose(1, 2).contiguous()
        y = torch.empty_like(u)
        checkpoints = None
        if any(ctx.needs_input_grad):
            checkpoints = u.new_empty(batch, channels, -(-length // CHECKPOINT_EVERY), state)
        handle.clinix_scan_forward(
            *map(_address, (u, delta, delta_bias, A, b_time, c_time, D, z, y, checkpoints)),
            softplus,
            batch,
            channels,
            length,
            state,
            CHECKPOINT_EVERY,
            torch.get_num_threads(),
        )
        ctx.save_for_backward(u, delta, delta_bias, A, b_time, c_time, D, z, checkpoints)
        ctx.softplus, ctx.handle = softplus, handle
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, delta, delta_bias, A, b_time, c_time, D, z, checkpoints = ctx.saved_tensors
        batch, channels, length = u.shape
        grad_y = grad_y.contiguous()  # a name keeps the copy alive while the kernel reads it
        grad_u, grad_delta, grad_z = torch.empty_like(u), torch.empty_like(delta), _zeros_like(z)
        grad_b_time, grad_c_time = torch.empty_like(b_time), torch.empty_like(c_time)
        grad_A, grad_D, grad_bias = torch.zeros_like(A), _zeros_like(D), _zeros_like(delta_bias)
        ctx.handle.clinix_scan_backward(
            *map(_address, (u, delta, delta_bias, A, b_time, c_time, D, z, checkpoints, grad_y)),
            *map(_address, (grad_u, grad_delta, grad_A, grad_b_time, grad_c_time, grad_D, grad_z, grad_bias)),
            ctx.softplus,
            batch,
            channels,
            length,
            A.shape[1],
            CHECKPOINT_EVERY,
            torch.get_num_threads(),
        )
        grad_B, grad_C = grad_b_time.transpose(1, 2), grad_c_time.transpose(1, 2)
        return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_z, grad_bias, None, None
