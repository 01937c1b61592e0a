"""The selective-scan backends against the float64 sequential reference (SPEC §4.5).

Accuracy is measured norm-wise: ``||result - reference|| / ||reference||`` over the whole tensor, for
the output and for the gradient of ``sum(y * w)`` (random w) w.r.t. every input. The backends run in
float32; the reference in float64; the bound is 1e-5.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import pytest
import torch

from clinix.errors import ClinixError
from clinix.net.scan import active_scan_backend, dispatch, selective_scan, selective_scan_reference
from clinix.net.scan.build import KernelUnavailable, find_compiler, load_kernel
from clinix.net.scan.chunked import CHUNK_TOKENS, prefix_scan_
from clinix.net.scan.kernel import CHECKPOINT_EVERY

TOLERANCE = 1e-5


def _has_compiler() -> bool:
    try:
        find_compiler()
    except KernelUnavailable:
        return False
    return True


NEEDS_COMPILER = pytest.mark.skipif(not _has_compiler(), reason="no C++ compiler ($CXX, c++, g++, clang++)")


@dataclass(frozen=True)
class Case:
    """Shapes and value ranges of one accuracy case; ``delta`` is drawn uniformly in ``delta_range``."""

    batch: int
    channels: int
    length: int
    state: int
    delta_range: tuple[float, float]
    a_range: tuple[float, float] = (1.0, 16.0)  # -A is drawn uniformly in this range
    optional: tuple[str, ...] = ("D", "z", "delta_bias")  # delta_softplus comes with delta_bias

    @property
    def softplus(self) -> bool:
        return "delta_bias" in self.optional


CASES = {
    # L = 200 is a multiple of neither the chunk (64) nor the checkpoint interval (64).
    "random": Case(2, 3, 200, 5, (-3.0, 1.0)),
    "bare_recurrence": Case(2, 3, 130, 4, (0.01, 0.5), optional=()),
    "skip_without_gate": Case(2, 3, 70, 4, (0.01, 0.5), optional=("D",)),
    "gate_without_skip": Case(2, 3, 70, 4, (0.01, 0.5), optional=("z",)),
    "long_sequence": Case(1, 2, 4096, 16, (-5.0, -3.0)),
    # Δ·|A| from 16 to 96: decays from 1e-7 down to below float32's smallest normal number (1e-38).
    "decays_near_zero": Case(2, 3, 150, 8, (4.0, 6.0), a_range=(4.0, 16.0), optional=()),
    # Δ·|A| from 5e-6 to 2e-4: decays within 2e-4 of 1, so the state sums hundreds of inputs.
    "decays_near_one": Case(2, 3, 300, 8, (1e-5, 1e-4), a_range=(0.5, 2.0), optional=()),
    "single_token": Case(2, 3, 1, 4, (-3.0, 1.0)),
    # softplus far into both tails: Δ from e^-30 (below its log1p rounding) to 30 (above its threshold 20).
    "softplus_tails": Case(2, 3, 100, 4, (-30.0, 30.0)),
}
BACKENDS = [
    "chunked",
    pytest.param("cpu-kernel", marks=NEEDS_COMPILER),
]


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    """``||result - reference|| / ||reference||`` in float64 (0 when both are zero)."""
    difference = (result.double() - reference).norm().item()
    return difference / max(reference.norm().item(), 1e-300)


def case_inputs(case: Case) -> dict[str, torch.Tensor]:
    """Float64 inputs of a case, the same on every call."""
    generator = torch.Generator().manual_seed(case.length * 7 + case.state)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    batch, channels, length, state = case.batch, case.channels, case.length, case.state
    inputs = {
        "u": normal(batch, channels, length),
        "delta": uniform(*case.delta_range, batch, channels, length),
        "A": -uniform(*case.a_range, channels, state),
        "B": normal(batch, state, length),
        "C": normal(batch, state, length),
    }
    optional = {"D": (channels,), "z": (batch, channels, length), "delta_bias": (channels,)}
    return inputs | {name: normal(*optional[name]) for name in case.optional}


def output_and_grads(inputs: dict[str, torch.Tensor], dtype: torch.dtype, softplus: bool, scan=selective_scan):
    """y and the gradients of ``sum(y * w)``, as float64 tensors keyed by name ("y", "u", ...)."""
    leaves = {name: tensor.to(dtype).requires_grad_() for name, tensor in inputs.items()}
    y = scan(**leaves, delta_softplus=softplus)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (y * weights.to(dtype)).sum().backward()
    return {"y": y.detach().double()} | {name: leaf.grad.double() for name, leaf in leaves.items()}


@functools.cache
def reference_results(case_name: str) -> dict[str, torch.Tensor]:
    case = CASES[case_name]
    return output_and_grads(case_inputs(case), torch.float64, case.softplus, scan=selective_scan_reference)


@pytest.fixture
def fresh_kernel_state():
    """Forget the loaded kernel (or its failure) before and after the test."""
    dispatch.reset_cpu_kernel()
    yield
    dispatch.reset_cpu_kernel()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_name", list(CASES))
def test_float32_backend_matches_float64_reference_in_output_and_every_gradient(case_name, backend, monkeypatch):
    monkeypatch.setenv(dispatch.BACKEND_ENV, backend)
    assert active_scan_backend("cpu") == backend, dispatch.cpu_kernel_failure()
    case = CASES[case_name]
    results = output_and_grads(case_inputs(case), torch.float32, case.softplus)
    reference = reference_results(case_name)
    errors = {name: relative_error(results[name], reference[name]) for name in reference}
    assert max(errors.values()) < TOLERANCE, errors


def test_cases_cover_partial_chunks_and_checkpoint_blocks():
    assert CASES["random"].length % CHUNK_TOKENS != 0
    assert CASES["random"].length % CHECKPOINT_EVERY != 0


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_two_tokens_give_the_hand_computed_output(backend, monkeypatch):
    # decay exp(1 · -ln 2) = 1/2: h_0 = 1·1·1 = 1, h_1 = 1/2 · 1 + 1·2·1 = 2.5; y = h + D·u.
    monkeypatch.setenv(dispatch.BACKEND_ENV, backend)
    y = selective_scan(
        u=torch.tensor([[[1.0, 2.0]]]),
        delta=torch.ones(1, 1, 2),
        A=torch.tensor([[-math.log(2.0)]]),
        B=torch.ones(1, 1, 2),
        C=torch.ones(1, 1, 2),
        D=torch.ones(1),
    )
    assert y.flatten().tolist() == pytest.approx([2.0, 4.5], abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs_give_the_same_result_as_contiguous_ones(backend, monkeypatch):
    monkeypatch.setenv(dispatch.BACKEND_ENV, backend)
    inputs = {name: t.float() for name, t in case_inputs(CASES["random"]).items()}
    strided = {name: t.transpose(0, -1).contiguous().transpose(0, -1) for name, t in inputs.items()}
    assert not strided["u"].is_contiguous()
    expected = selective_scan(**inputs, delta_softplus=True)
    assert torch.equal(selective_scan(**strided, delta_softplus=True), expected)


def test_float64_inputs_run_in_float64_to_reference_precision(monkeypatch):
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    case = CASES["random"]
    results = output_and_grads(case_inputs(case), torch.float64, case.softplus)
    reference = reference_results("random")
    assert results["y"].dtype == torch.float64
    assert max(relative_error(results[name], reference[name]) for name in reference) < 1e-12


def test_prefix_scan_forward_and_reverse_give_the_running_sums_and_decay_products():
    decay, x = torch.full((4, 1), 0.5), torch.ones(4, 1)
    prefix_scan_(decay, x)
    assert x.flatten().tolist() == [1.0, 1.5, 1.75, 1.875]
    assert decay.flatten().tolist() == [0.5, 0.25, 0.125, 0.0625]
    decay, x = torch.full((4, 1), 0.5), torch.ones(4, 1)
    prefix_scan_(decay, x, reverse=True)
    assert x.flatten().tolist() == [1.875, 1.75, 1.5, 1.0]
    assert decay.flatten().tolist() == [0.0625, 0.125, 0.25, 0.5]


def test_missing_compiler_falls_back_to_chunked_with_one_warning(monkeypatch, tmp_path, fresh_kernel_state):
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    monkeypatch.setenv("CLINIX_CACHE_DIR", str(tmp_path))  # an empty cache
    monkeypatch.setenv("CXX", "/nonexistent/clinix-test-c++")
    case = CASES["random"]
    with pytest.warns(RuntimeWarning, match="C\\+\\+ kernel is unavailable"):
        assert active_scan_backend("cpu") == "chunked"
    assert "/nonexistent/clinix-test-c++" in dispatch.cpu_kernel_failure()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail here
        results = output_and_grads(case_inputs(case), torch.float32, case.softplus)
    reference = reference_results("random")
    assert max(relative_error(results[name], reference[name]) for name in reference) < TOLERANCE


@NEEDS_COMPILER
def test_second_load_reuses_the_cached_kernel_without_compiling(monkeypatch, tmp_path):
    monkeypatch.setenv("CLINIX_CACHE_DIR", str(tmp_path))
    first = load_kernel()
    built_at = first.path.stat().st_mtime_ns
    second = load_kernel()
    assert (first.compiled, second.compiled) == (True, False)
    assert second.path == first.path
    assert second.path.stat().st_mtime_ns == built_at
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [first.path.name]  # no temporary file left


def test_backend_names_follow_the_environment_and_the_device(monkeypatch):
    monkeypatch.setenv(dispatch.BACKEND_ENV, "reference")
    assert active_scan_backend("cpu") == "reference"
    monkeypatch.setenv(dispatch.BACKEND_ENV, "chunked")
    assert active_scan_backend("cuda") == "chunked"
    monkeypatch.setenv(dispatch.BACKEND_ENV, "cpu-kernel")
    assert active_scan_backend("cuda") == "chunked"  # the C++ kernel is CPU-only
    monkeypatch.setenv(dispatch.BACKEND_ENV, "fastest")
    with pytest.raises(ClinixError, match="CLINIX_SCAN_BACKEND"):
        active_scan_backend("cpu")


def test_mismatched_shapes_are_rejected_with_the_argument_name():
    u = torch.zeros(2, 3, 10)
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan(u, u, torch.zeros(3, 4), torch.zeros(2, 4, 9), torch.zeros(2, 4, 10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_are_bit_identical_from_run_to_run(backend, monkeypatch):
    # Exact resume of training needs a deterministic backward pass, threads included.
    monkeypatch.setenv(dispatch.BACKEND_ENV, backend)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inputs = {name: t.float() for name, t in case_inputs(Case(2, 64, 300, 16, (-3.0, 1.0))).items()}
        gradients = []
        for _ in range(3):
            leaves = {name: t.clone().requires_grad_(True) for name, t in inputs.items()}
            selective_scan(**leaves, delta_softplus=True).square().sum().backward()
            gradients.append([leaves[name].grad for name in sorted(leaves)])
    finally:
        torch.set_num_threads(previous_threads)
    for repeat in gradients[1:]:
        assert all(torch.equal(a, b) for a, b in zip(gradients[0], repeat, strict=True))
