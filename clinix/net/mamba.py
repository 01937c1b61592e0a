"""The Mamba module and the residual Mamba layer (paper §2.3; SPEC §4.3, §4.5; reference §1.4).

``Mamba`` keeps the parameter names, shapes and initialisation of ``mamba_ssm.Mamba`` v2.1.0, so a
checkpoint written on one backend loads strictly on the other. The backend is chosen per call from the
input's device by ``clinix.net.scan.active_scan_backend``: on CUDA with mamba_ssm installed, its
``selective_scan_fn`` (and causal_conv1d's ``causal_conv1d_fn`` when that imports too); everywhere else
clinix's own selective scan and a PyTorch causal convolution.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clinix.net import scan
from clinix.net.scan.meta import meta_selective_scan

D_STATE = 16
D_CONV = 4
EXPAND = 2
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4
MAMBA_SSM_BACKEND = "mamba_ssm-cuda"  # the name ``scan.active_scan_backend`` gives mamba_ssm's kernel

ScanFn = Callable[..., torch.Tensor]


@functools.cache
def _causal_conv1d_kernel() -> Callable[..., torch.Tensor] | None:
    """causal_conv1d's CUDA ``causal_conv1d_fn``, or None when it does not import.

    Imported lazily and once: it needs CUDA, and a wheel built for another torch fails with an
    ImportError or OSError (undefined symbol), which means "not available" here too.
    """
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError, RuntimeError):
        return None
    return causal_conv1d_fn


def _kernels(device: torch.device) -> tuple[ScanFn, Callable[..., torch.Tensor] | None]:
    """The selective scan for tensors on ``device``, and the CUDA causal conv (None: PyTorch's conv)."""
    if device.type == "meta":  # planning: only the buffers of a backend (scan/meta.py)
        return meta_selective_scan, None
    if device.type == "cuda" and scan.active_scan_backend(device) == MAMBA_SSM_BACKEND:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # the dispatcher imported it

        return selective_scan_fn, _causal_conv1d_kernel()
    return scan.selective_scan, None


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """``softplus^-1(x) = x + log(1 - exp(-x))``."""
    return x + torch.log(-torch.expm1(-x))


class Mamba(nn.Module):
    """Selective state-space block (Mamba v1) on width C, with d_inner = 2C and dt_rank = ceil(C/16)::

        x, z = split(in_proj(u))                    # two branches of d_inner channels (eqs. 8, 9)
        x    = SiLU(causal depthwise conv_4(x))
        dt, B, C = split(x_proj(x))
        y    = scan(x, softplus(dt_proj(dt)), A = -exp(A_log), B, C, D) * SiLU(z)
        out  = out_proj(y)

    The scan is ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t``, ``y_t = <h_t, C_t> + D x_t``.
    Shapes: ``(B, L, C) -> (B, L, C)``; tokens are scanned in order, causally.
    """

    def __init__(self, d_model: int, d_state: int = D_STATE, d_conv: int = D_CONV, expand: int = EXPAND) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, padding=d_conv - 1, groups=self.d_inner, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))  # (d_inner, d_state), rows log(1..N)
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self._init_dt_proj()

    @torch.no_grad()
    def _init_dt_proj(self) -> None:
        """dt_proj as mamba_ssm: weight U(±dt_rank^-0.5); bias = softplus^-1(dt), dt ~ logU(1e-3, 1e-1) ≥ 1e-4."""
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(self.d_inner) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
        dt = torch.exp(log_dt).clamp(min=DT_FLOOR)
        self.dt_proj.bias.copy_(_inverse_softplus(dt))

    def _causal_conv_silu(self, x: torch.Tensor, causal_conv1d_fn: Callable[..., torch.Tensor] | None) -> torch.Tensor:
        """``(B, d_inner, L) -> (B, d_inner, L)``: depthwise conv that sees only past tokens, then SiLU."""
        if causal_conv1d_fn is not None:
            return causal_conv1d_fn(x, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu")
        return F.silu(self.conv1d(x)[..., : x.shape[-1]])  # padding d_conv-1 on both sides: keep the first L

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        selective_scan, causal_conv1d_fn = _kernels(hidden.device)
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # each (B, d_inner, L)
        x = self._causal_conv_silu(x.contiguous(), causal_conv1d_fn)
        dt, b, c = torch.split(self.x_proj(x.transpose(1, 2)), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2).contiguous()  # (B, d_inner, L); bias in scan
        y = selective_scan(
            x,
            delta,
            -torch.exp(self.A_log.float()),
            b.transpose(1, 2).contiguous(),  # (B, d_state, L)
            c.transpose(1, 2).contiguous(),
            self.D.float(),
            z=z.contiguous(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))


def _autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """A context with autocast off on ``device`` (meta tensors have no autocast to turn off)."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


class ResidualMambaLayer(nn.Module):
    """The residual Mamba layer of MambaClinix (SPEC §4.3)::

        t   = flatten(x) -> (B, N, C)          # voxels as tokens, raster order (last axis fastest)
        t   = Linear(LN(Mamba(LN(t))))         # the same LayerNorm module twice, as released (eq. 10)
        out = reshape(t) + x

    Runs in float32 with autocast off: half-precision inputs are cast up and the output is float32.
    Shapes: ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mamba = Mamba(channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast_disabled(x.device):
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
            tokens = self.proj(self.norm(self.mamba(self.norm(tokens))))
            return tokens.transpose(1, 2).reshape(x.shape) + x
