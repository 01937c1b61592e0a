"""The Mamba module and the residual Mamba layer (SPEC §4.3, §4.5; reference §1.4, §1.7)."""

from __future__ import annotations

import importlib.util
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clinix.net import mamba as mamba_module
from clinix.net import scan
from clinix.net.mamba import MAMBA_SSM_BACKEND, Mamba, ResidualMambaLayer

MAMBA_SSM_NAMES = {
    "in_proj.weight": lambda c: (4 * c, c),
    "conv1d.weight": lambda c: (2 * c, 1, 4),
    "conv1d.bias": lambda c: (2 * c,),
    "x_proj.weight": lambda c: (math.ceil(c / 16) + 32, 2 * c),
    "dt_proj.weight": lambda c: (2 * c, math.ceil(c / 16)),
    "dt_proj.bias": lambda c: (2 * c,),
    "A_log": lambda c: (2 * c, 16),
    "D": lambda c: (2 * c,),
    "out_proj.weight": lambda c: (c, 2 * c),
}


class CudaStyleMamba(nn.Module):
    """Stands in for ``mamba_ssm.Mamba`` v2.1.0 (d_state 16, d_conv 4, expand 2): the same parameter
    names and shapes, and a forward written token by token from reference §1.4."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        d_inner, rank = 2 * d_model, math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, 4, groups=d_inner, padding=3)
        self.x_proj = nn.Linear(d_inner, rank + 32, bias=False)
        self.dt_proj = nn.Linear(rank, d_inner)
        self.A_log = nn.Parameter(torch.randn(d_inner, 16))
        self.D = nn.Parameter(torch.randn(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        batch, length, _ = u.shape
        d_inner, rank = self.D.shape[0], self.dt_proj.in_features
        x, z = self.in_proj(u).split(d_inner, dim=-1)  # (B, L, d_inner) each
        weight = self.conv1d.weight[:, 0]  # (d_inner, 4)
        padded = F.pad(x, (0, 0, 3, 0))  # three zero tokens before the first
        conv = torch.stack([(padded[:, t : t + 4] * weight.T).sum(1) for t in range(length)], 1)
        x = F.silu(conv + self.conv1d.bias)
        dt, b, c = self.x_proj(x).split([rank, 16, 16], dim=-1)
        dt = F.softplus(self.dt_proj(dt))
        a = -torch.exp(self.A_log)
        state = torch.zeros(batch, d_inner, 16)
        ys = []
        for t in range(length):
            state = torch.exp(dt[:, t, :, None] * a) * state + (dt[:, t] * x[:, t])[:, :, None] * b[:, t, None, :]
            ys.append((state * c[:, t, None, :]).sum(-1) + self.D * x[:, t])
        return self.out_proj(torch.stack(ys, 1) * F.silu(z))


def test_mamba_has_the_parameter_names_and_shapes_of_mamba_ssm() -> None:
    shapes = {name: tuple(p.shape) for name, p in Mamba(40).named_parameters()}
    assert shapes == {name: shape(40) for name, shape in MAMBA_SSM_NAMES.items()}


def test_mamba_initialisation_follows_mamba_ssm() -> None:
    torch.manual_seed(0)
    m = Mamba(64)  # d_inner 128, dt_rank 4
    assert torch.equal(m.A_log, torch.log(torch.arange(1.0, 17.0)).repeat(128, 1))
    assert torch.equal(m.D, torch.ones(128))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min().item() >= 1e-3 * (1 - 1e-5) and dt.max().item() <= 1e-1 * (1 + 1e-5)
    assert m.dt_proj.weight.abs().max().item() <= 4**-0.5


@pytest.mark.parametrize("ours_saves", [False, True], ids=["cuda-style-to-ours", "ours-to-cuda-style"])
def test_a_checkpoint_loads_strictly_across_backends_and_gives_the_same_output(ours_saves: bool) -> None:
    torch.manual_seed(int(ours_saves))
    ours, theirs = Mamba(8), CudaStyleMamba(8)
    source, target = (ours, theirs) if ours_saves else (theirs, ours)
    target.load_state_dict(source.state_dict(), strict=True)
    u = torch.randn(2, 12, 8)
    with torch.no_grad():
        torch.testing.assert_close(target(u), source(u), rtol=1e-5, atol=1e-5)


def test_mamba_is_causal_over_tokens() -> None:
    torch.manual_seed(0)
    m = Mamba(8)
    u = torch.randn(1, 10, 8)
    changed = u.clone()
    changed[:, 6] += 1.0
    with torch.no_grad():
        a, b = m(u), m(changed)
    assert torch.equal(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6], b[:, 6])


@pytest.mark.parametrize(("channels", "expected"), [(256, 504_064), (320, 778_560)])
def test_residual_mamba_layer_parameter_counts_have_no_skip_scale(channels: int, expected: int) -> None:
    rank = math.ceil(channels / 16)
    formula = (
        2 * channels  # one LayerNorm, used twice
        + 4 * channels**2
        + 10 * channels
        + 2 * channels * (rank + 32)
        + 2 * channels * rank
        + 2 * channels
        + 32 * channels
        + 2 * channels
        + 2 * channels**2  # Mamba (reference §1.7)
        + channels**2
        + channels  # the output Linear
    )
    with torch.device("meta"):
        layer = ResidualMambaLayer(channels)
    assert formula == expected  # the released 504,065 / 778,561 less the unused skip_scale
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert not any("skip_scale" in name for name, _ in layer.named_parameters())


def test_residual_mamba_layer_scans_voxels_in_raster_order_with_one_shared_layer_norm() -> None:
    torch.manual_seed(0)
    layer = ResidualMambaLayer(8)
    x = torch.randn(1, 8, 2, 3, 4)
    tokens = x.permute(0, 2, 3, 4, 1).reshape(1, 24, 8)  # z slowest, x fastest
    with torch.no_grad():
        mixed = layer.proj(layer.norm(layer.mamba(layer.norm(tokens))))
        expected = mixed.reshape(1, 2, 3, 4, 8).permute(0, 4, 1, 2, 3) + x
        torch.testing.assert_close(layer(x), expected)
    assert [name for name, _ in layer.named_children()] == ["norm", "mamba", "proj"]


def test_residual_mamba_layer_runs_in_float32_under_bfloat16_autocast() -> None:
    torch.manual_seed(0)
    layer = ResidualMambaLayer(8)
    x = torch.randn(1, 8, 2, 2, 4).bfloat16()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        expected = layer(x.float())
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)


def test_cuda_tensors_scan_with_mamba_ssm_when_the_dispatcher_picks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def kernel(*args: object, **kwargs: object) -> None:
        return None

    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = kernel
    for name in ("mamba_ssm", "mamba_ssm.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, interface.__name__, interface)
    monkeypatch.setattr(scan, "active_scan_backend", lambda device: MAMBA_SSM_BACKEND)
    assert mamba_module._kernels(torch.device("cuda"))[0] is kernel
    assert mamba_module._kernels(torch.device("cpu")) == (scan.selective_scan, None)
    monkeypatch.setattr(scan, "active_scan_backend", lambda device: "chunked")  # e.g. $CLINIX_SCAN_BACKEND
    assert mamba_module._kernels(torch.device("cuda")) == (scan.selective_scan, None)


def test_meta_tensors_skip_the_scan_but_keep_its_shape() -> None:
    with torch.device("meta"):
        layer = ResidualMambaLayer(16)
        out = layer(torch.empty(2, 16, 4, 4, 4))
    assert out.shape == (2, 16, 4, 4, 4) and out.dtype == torch.float32


@pytest.mark.skipif(importlib.util.find_spec("causal_conv1d") is not None, reason="causal_conv1d is installed")
def test_missing_causal_conv1d_means_the_pytorch_causal_conv() -> None:
    mamba_module._causal_conv1d_kernel.cache_clear()
    assert mamba_module._causal_conv1d_kernel() is None
