"""The sequential selective scan: one step per token. Exact, slow; the yardstick for the fast backends."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
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
    """``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t``, ``y_t = <h_t, C_t> + D u_t``, then ``y · SiLU(z)``.

    Shapes: u, delta, z ``(B, D, L)``; A ``(D, N)``; B, C ``(B, N, L)``; D, delta_bias ``(D,)``.
    Returns y ``(B, D, L)`` in u's dtype (computed in u's dtype; pass float64 for a reference).
    """
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d_inner, _ = u.shape
    state = u.new_zeros(batch, d_inner, A.shape[1])
    outputs = []
    # unbind once: indexing [..., t] inside the loop would make the backward pass O(L²) (every
    # index's gradient is a zero-filled tensor of the full input's size).
    for u_t, delta_t, B_t, C_t in zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1), strict=True):
        decay = torch.exp(delta_t[:, :, None] * A)  # (B, D, N)
        state = decay * state + (delta_t * u_t)[:, :, None] * B_t[:, None, :]
        outputs.append((state * C_t[:, None, :]).sum(-1))
    y = torch.stack(outputs, dim=-1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y
