"""The "chunked" backend: a selective scan in pure PyTorch that runs on any device.

Shapes: u, delta ``(B, D, L)``; A ``(D, N)``; B, C ``(B, N, L)``; one floating dtype and device.
Computes only the linear recurrence (reference §1.4)

    h_t = a_t ⊙ h_{t-1} + x_t,   a_t = exp(Δ_t A),   x_t = Δ_t u_t B_t,   y_t = <h_t, C_t>;

``clinix.net.scan.dispatch`` adds the skip term D, the gate z, the Δ bias and softplus around it.

Algorithm: the sequence is cut into chunks of T tokens (T = 64, a power of two; the last chunk is
zero-padded, Δ = 0 leaves the state unchanged). Chunks run one after the other, carrying only the
state ``(B, D, N)`` across the boundary; within a chunk every token is computed at once in closed
form, ``h_t = P_t h_start + Σ_{s≤t} (a_{s+1} ⋯ a_t) x_s`` with ``P_t = a_1 ⋯ a_t``, by a log2(T)-step
prefix scan (Sklansky) over the time axis. Every coefficient is a product of decays, in [0, 1] when
Δ ≥ 0 and A ≤ 0 as in Mamba, so nothing can overflow however large Δ·|A| is. (Forming them as exp
of differences of a cumulative sum of Δ·A is equally stable but costs one exp per element per step
of the prefix scan: measured 1.5× slower on CPU.) Tensors are time-major ``(T, B, D, N)`` so that
every step of the prefix scan works on large contiguous slabs.

The forward pass keeps only the states at chunk starts, ``(L / T, B, D, N)``. The backward pass
visits the chunks from last to first: it recomputes the chunk's states from its start state, runs
the adjoint recursion ``g_t = dy_t C_t + a_{t+1} g_{t+1}`` over the chunk with the same prefix scan
reversed, and forms every gradient from ``h`` and ``g``. At most a few ``(T, B, D, N)`` tensors are
alive at a time; ``(B, D, L, N)`` is never materialised.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

CHUNK_TOKENS = 64


def prefix_scan_(decay: torch.Tensor, x: torch.Tensor, reverse: bool = False) -> None:
    """Solve ``x_t ← x_t + decay_t · x_{t∓1}`` along dim 0 in place, in log2(T) steps.

    ``decay`` and ``x`` are ``(T, ...)`` with T a power of two. Forward: afterwards
    ``x_t = Σ_{s≤t} (decay_{s+1} ⋯ decay_t) x_s`` and ``decay_t = decay_0 ⋯ decay_t``. Reverse:
    ``x_t = Σ_{s≥t} (decay_t ⋯ decay_{s-1}) x_s`` and ``decay_t = decay_t ⋯ decay_{T-1}``.
    At each step, pairs of neighbouring spans of length ``span`` merge: the receiving span adds the
    sending span's boundary element, weighted by its own accumulated decay products.
    """
    steps = x.shape[0]
    receive, send = (0, 1) if reverse else (1, 0)
    span = 1
    while span < steps:
        x_pairs = x.view(steps // (2 * span), 2, span, *x.shape[1:])
        decay_pairs = decay.view(steps // (2 * span), 2, span, *decay.shape[1:])
        edge = slice(0, 1) if reverse else slice(span - 1, span)
        x_pairs[:, receive].addcmul_(decay_pairs[:, receive], x_pairs[:, send, edge])
        decay_pairs[:, receive] *= decay_pairs[:, send, edge]
        span *= 2


def _time_major(tensor: torch.Tensor, padded_length: int) -> torch.Tensor:
    """``(B, X, L)`` → zero-padded ``(padded_length, B, X)``."""
    out = tensor.new_zeros(padded_length, *tensor.shape[:2])
    out[: tensor.shape[2]] = tensor.permute(2, 0, 1)
    return out


def _chunk_states(start: torch.Tensor, decay: torch.Tensor, drive: torch.Tensor, b_chunk: torch.Tensor) -> torch.Tensor:
    """States ``(T, B, D, N)`` of one chunk from its start state ``(B, D, N)``.

    ``decay`` (T, B, D, N) holds a_t and is overwritten with the products a_1 ⋯ a_t; ``drive``
    (T, B, D) is Δ_t u_t and ``b_chunk`` (T, B, N) is B_t.
    """
    states = drive[..., None] * b_chunk[:, :, None, :]
    prefix_scan_(decay, states)
    states.addcmul_(decay, start)
    return states


def _batch_major(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """``(padded_length, B, X)`` → ``(B, X, length)`` (a view)."""
    return tensor[:length].permute(1, 2, 0)


class ChunkGradients(NamedTuple):
    """Gradients from one chunk: time-major u, Δ ``(T, B, D)``, B, C ``(T, B, N)``; A's share ``(D, N)``;
    and ``carry``, dL/dh at the end of the previous chunk ``(B, D, N)``."""

    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    carry: torch.Tensor


def _chunk_gradients(
    start: torch.Tensor,
    carry: torch.Tensor,
    A: torch.Tensor,
    chunk_inputs: tuple[torch.Tensor, ...],
    grad_y: torch.Tensor,
) -> ChunkGradients:
    """Backward pass through one chunk, given its start state and dL/dh at its end (``carry``).

    ``chunk_inputs`` are the time-major u, Δ ``(T, B, D)``, B and C ``(T, B, N)``; ``grad_y`` ``(T, B, D)``.
    """
    u, delta, b, c = chunk_inputs
    drive = delta * u
    decay = torch.exp(delta[..., None] * A)
    states = _chunk_states(start, decay.clone(), drive, b)
    # g_t = dy_t C_t + a_{t+1} g_{t+1}: a reverse prefix scan with the decays shifted by one.
    adjoint = grad_y[..., None] * c[:, :, None, :]
    shifted = torch.ones_like(decay)
    shifted[:-1] = decay[1:]
    prefix_scan_(shifted, adjoint, reverse=True)
    adjoint.addcmul_(shifted, carry)
    grad_log_decay = adjoint * decay  # times h_{t-1}: dL/d(Δ_t A)
    grad_log_decay[1:] *= states[:-1]
    grad_log_decay[0] *= start
    adjoint_dot_b = (adjoint @ b[..., None]).squeeze(-1)
    return ChunkGradients(
        u=delta * adjoint_dot_b,
        delta=(grad_log_decay * A).sum(-1) + u * adjoint_dot_b,
        A=(grad_log_decay * delta[..., None]).sum((0, 1)),
        B=(drive[:, :, None, :] @ adjoint).squeeze(-2),
        C=(grad_y[:, :, None, :] @ states).squeeze(-2),
        carry=decay[0] * adjoint[0],
    )


class ChunkedScan(torch.autograd.Function):
    """``y = scan(u, delta, A, B, C)`` by chunks; see the module docstring."""

    @staticmethod
    def forward(
        ctx: Any, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
    ) -> torch.Tensor:
        batch, channels, length = u.shape
        chunk = min(CHUNK_TOKENS, 1 << (length - 1).bit_length())
        padded = -(-length // chunk) * chunk
        u_t, delta_t, b_t, c_t = (_time_major(t, padded) for t in (u, delta, B, C))
        starts = u.new_empty(padded // chunk, batch, channels, A.shape[1])
        state = u.new_zeros(batch, channels, A.shape[1])
        y_t = u.new_empty(padded, batch, channels)
        for index, begin in enumerate(range(0, padded, chunk)):
            window = slice(begin, begin + chunk)
            starts[index] = state
            decay = torch.exp(delta_t[window, ..., None] * A)
            states = _chunk_states(state, decay, delta_t[window] * u_t[window], b_t[window])
            y_t[window] = (states @ c_t[window, ..., None]).squeeze(-1)
            state = states[-1]
        ctx.save_for_backward(u_t, delta_t, A, b_t, c_t, starts)
        ctx.length = length
        return _batch_major(y_t, length).contiguous()

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        u_t, delta_t, A, b_t, c_t, starts = ctx.saved_tensors
        padded, chunk = u_t.shape[0], u_t.shape[0] // starts.shape[0]
        grad_y_t = _time_major(grad_y, padded)
        grad_u, grad_delta = torch.empty_like(u_t), torch.empty_like(delta_t)
        grad_b, grad_c = torch.empty_like(b_t), torch.empty_like(c_t)
        grad_A = torch.zeros_like(A)
        carry = torch.zeros_like(starts[0])
        for index in reversed(range(starts.shape[0])):
            window = slice(index * chunk, (index + 1) * chunk)
            chunk_inputs = (u_t[window], delta_t[window], b_t[window], c_t[window])
            grads = _chunk_gradients(starts[index], carry, A, chunk_inputs, grad_y_t[window])
            grad_u[window], grad_delta[window], grad_b[window], grad_c[window] = grads.u, grads.delta, grads.B, grads.C
            grad_A += grads.A
            carry = grads.carry
        length = ctx.length
        return (
            _batch_major(grad_u, length),
            _batch_major(grad_delta, length),
            grad_A,
            _batch_major(grad_b, length),
            _batch_major(grad_c, length),
        )
