"""``selective_scan``: mamba_ssm's ``selective_scan_fn`` for real inputs, on every device (SPEC §4.5).

Shapes ("variable B/C" form, B and C shared by all channels): u, delta, z ``(B, D, L)``; A ``(D, N)``;
B, C ``(B, N, L)``; D, delta_bias ``(D,)``. Returns y ``(B, D, L)`` in u's dtype, computed in
float32 (float64 when an input is float64):

    Δ = softplus(delta + delta_bias)                      (each step only when asked for)
    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t,   y_t = <h_t, C_t> + D u_t,   y ← y · SiLU(z)

It runs on one of three backends, each differentiable w.r.t. every tensor argument:
- "cpu-kernel": the C++ kernel (``kernel.py``, all of the above fused in one pass), for float32
  tensors on the CPU, compiled at first use;
- "chunked": pure PyTorch (``chunked.py``, the recurrence; bias, softplus, skip and gate are plain
  autograd around it), on any device and dtype; used when the kernel cannot be built (one warning
  says why) and for tensors the kernel does not take (CUDA, float64);
- "reference": the sequential loop (``reference.py``).
``$CLINIX_SCAN_BACKEND`` (reference | chunked | cpu-kernel | auto, default auto) forces one.
On CUDA the Mamba module calls mamba_ssm's kernels itself when they are installed; this function
then still runs "chunked" for whoever calls it directly.
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
import warnings

import torch
import torch.nn.functional as F

from clinix.errors import ClinixError
from clinix.net.scan.build import KernelLibrary, KernelUnavailable, load_kernel
from clinix.net.scan.chunked import ChunkedScan
from clinix.net.scan.kernel import KernelScan
from clinix.net.scan.reference import selective_scan_reference

BACKEND_ENV = "CLINIX_SCAN_BACKEND"
BACKEND_CHOICES = ("auto", "reference", "chunked", "cpu-kernel")


class _KernelState:
    """The process-wide outcome of loading the C++ kernel: the library, or why it is unavailable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.library: KernelLibrary | None = None
        self.failure: str | None = None


_kernel_state = _KernelState()


def cpu_kernel() -> KernelLibrary | None:
    """The loaded C++ kernel (built on first call), or None after one warning when it cannot be."""
    with _kernel_state.lock:
        if _kernel_state.library is None and _kernel_state.failure is None:
            try:
                _kernel_state.library = load_kernel()
            except KernelUnavailable as error:
                _kernel_state.failure = str(error)
                warnings.warn(
                    f"clinix: the C++ kernel is unavailable, the selective scan runs in pure PyTorch "
                    f"(slower; {BACKEND_ENV}=chunked skips this attempt): {error}",
                    RuntimeWarning,
                    stacklevel=4,  # the caller of selective_scan or active_scan_backend
                )
    return _kernel_state.library


def cpu_kernel_failure() -> str | None:
    """Why the C++ kernel is unavailable (None when it loaded or was not tried yet)."""
    return _kernel_state.failure


def reset_cpu_kernel() -> None:
    """Forget the loaded kernel or its failure, so that the next call tries again (tests, benches)."""
    with _kernel_state.lock:
        _kernel_state.library = None
        _kernel_state.failure = None


def requested_backend() -> str:
    """The backend asked for in ``$CLINIX_SCAN_BACKEND`` (default "auto")."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if value not in BACKEND_CHOICES:
        raise ClinixError(f"{BACKEND_ENV}={value!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    return value


@functools.cache
def mamba_ssm_cuda_available() -> bool:
    """Whether mamba_ssm's CUDA selective scan imports (it never does on a CPU-only install)."""
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception:  # a broken CUDA build raises ImportError, OSError or RuntimeError
        return False
    return True


def active_scan_backend(device: torch.device | str = "cpu") -> str:
    """The backend that runs the selective scan on ``device``.

    One of "cpu-kernel", "chunked", "reference", or "mamba_ssm-cuda" (CUDA, mamba_ssm installed,
    nothing forced). On CPU, "cpu-kernel" means float32 inputs take the kernel; others take "chunked".
    """
    device = torch.device(device)
    if device.type == "cuda" and requested_backend() == "auto" and mamba_ssm_cuda_available():
        return "mamba_ssm-cuda"
    return _own_backend(device)


def _own_backend(device: torch.device) -> str:
    """The clinix backend that ``selective_scan`` runs on ``device``: reference, cpu-kernel or chunked."""
    requested = requested_backend()
    if requested in ("reference", "chunked"):
        return requested
    if device.type == "cpu" and cpu_kernel() is not None:
        return "cpu-kernel"
    return "chunked"


def selective_scan(
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
    """The selective scan of the module docstring; same arguments as mamba_ssm's ``selective_scan_fn``."""
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    backend = _own_backend(u.device)
    if backend == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    dtype = functools.reduce(torch.promote_types, (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype), torch.float32)
    # One dtype and a contiguous layout for every operand, once, here: PyTorch's CPU kernels take other
    # code paths (vectorised or not) for strided tensors, and the result must not depend on the caller's
    # strides, bit for bit, on any instruction set.
    u_c, delta_c, A_c, B_c, C_c, D_c, z_c, bias_c = (
        None if t is None else t.to(dtype).contiguous() for t in (u, delta, A, B, C, D, z, delta_bias)
    )
    library = cpu_kernel() if backend == "cpu-kernel" and dtype == torch.float32 else None
    if library is not None:
        y = KernelScan.apply(u_c, delta_c, A_c, B_c, C_c, D_c, z_c, bias_c, delta_softplus, library.handle)
        return y.to(u.dtype)
    return chunked_selective_scan(u_c, delta_c, A_c, B_c, C_c, D_c, z_c, bias_c, delta_softplus).to(u.dtype)


def chunked_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> torch.Tensor:
    """The "chunked" backend: the recurrence (chunked.py) with bias, softplus, skip and gate as plain
    autograd around it. Operands of one dtype and contiguous (``selective_scan`` makes them so)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y = ChunkedScan.apply(u, delta, A, B, C)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y


def _check_shapes(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> None:
    """Raise ValueError unless the shapes are those of the module docstring and all are real."""
    if u.dim() != 3 or A.dim() != 2:
        raise ValueError(f"u must be (B, D, L) and A (D, N); got u {tuple(u.shape)}, A {tuple(A.shape)}")
    batch, channels, length = u.shape
    expected = {
        "u": (u, (batch, channels, length)),
        "delta": (delta, (batch, channels, length)),
        "A": (A, (channels, A.shape[1])),
        "B": (B, (batch, A.shape[1], length)),
        "C": (C, (batch, A.shape[1], length)),
        "D": (D, (channels,)),
        "z": (z, (batch, channels, length)),
        "delta_bias": (delta_bias, (channels,)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for u {tuple(u.shape)}; got {tuple(tensor.shape)}")
        if tensor.is_complex():
            raise ValueError(f"{name} is complex; only real selective scans are supported")
