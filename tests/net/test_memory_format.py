"""The channels-last CPU path gives PyTorch's channels-first results (clinix.net.layers, network.place).

Tolerances: float32 sums taken in another order differ by rounding only; 1e-5 on a layer's output. For
a whole network the gradients are compared per parameter by norm, ``|Δg| ≤ 1e-4·|g| + 1e-5·G`` with G
the largest parameter gradient's norm: the biases of convolutions followed by an InstanceNorm have a zero
gradient in exact arithmetic, so theirs is rounding noise (1e-8..1e-4) that no relative tolerance can
compare (measured: 2e-5 relative on every other parameter).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clinix.net.network as network_module
from clinix.net.decoder import DecoderLevel
from clinix.net.layers import InstanceNorm3d, instance_norm, is_channels_last, upsample_nearest
from clinix.net.registry import build_network, config_for_arch

CL = torch.channels_last_3d


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=CL).requires_grad_()


def test_instance_norm_on_a_channels_last_input_matches_pytorch_channels_first() -> None:
    torch.manual_seed(0)
    norm = instance_norm(6)
    reference = nn.InstanceNorm3d(6, eps=1e-5, affine=True)
    with torch.no_grad():
        for module in (norm, reference):
            module.weight.copy_(torch.linspace(0.5, 2.0, 6))
            module.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    x = torch.randn(3, 6, 4, 5, 7) * 3 + 2
    first, last = x.clone().requires_grad_(), _channels_last(x)
    grad = torch.randn(3, 6, 4, 5, 7)
    expected, got = reference(first), norm(last)
    assert is_channels_last(got)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    expected.backward(grad)
    got.backward(grad.contiguous(memory_format=CL))
    torch.testing.assert_close(last.grad, first.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.bias.grad, reference.bias.grad, rtol=1e-5, atol=1e-5)


def test_instance_norm_channels_last_keeps_float32_precision_on_offset_inputs() -> None:
    # a stem's output has a mean far from 0: a one-pass variance or sequential sums lose digits there
    torch.manual_seed(5)
    x = torch.randn(2, 8, 8, 16, 16, dtype=torch.float64) * 0.1 + 10.0
    grad = torch.randn_like(x)
    norm = instance_norm(8)

    def gradient(dtype: torch.dtype, layout: torch.memory_format) -> torch.Tensor:
        leaf = x.to(dtype).contiguous(memory_format=layout).detach().requires_grad_()
        norm.to(dtype)(leaf).backward(grad.to(dtype))
        return leaf.grad.double()

    exact = gradient(torch.float64, torch.contiguous_format)
    error = (gradient(torch.float32, CL) - exact).norm() / exact.norm()
    assert error < 1e-4, f"relative error {error:.2g}"


def test_instance_norm_keeps_pytorch_kernel_for_channels_first_input() -> None:
    norm = instance_norm(4)
    x = torch.randn(2, 4, 3, 3, 3)
    assert isinstance(norm, nn.InstanceNorm3d) and type(norm) is InstanceNorm3d
    assert torch.equal(norm(x), F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps))


@pytest.mark.parametrize("size", [(8, 6, 10), (4, 6, 10), (8, 3, 10)])
def test_upsample_nearest_equals_interpolate_bit_for_bit(size: tuple[int, int, int]) -> None:
    x = torch.randn(2, 5, 4, 3, 5)
    first, last = x.clone().requires_grad_(), _channels_last(x)
    expected = F.interpolate(first, size=size, mode="nearest")
    got = upsample_nearest(last, size)
    assert is_channels_last(got) and torch.equal(got, expected)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad)
    torch.testing.assert_close(last.grad, first.grad, rtol=1e-6, atol=1e-6)


def test_upsample_nearest_refuses_fractional_factors() -> None:
    with pytest.raises(ValueError, match="integer factors"):
        upsample_nearest(_channels_last(torch.randn(1, 2, 4, 4, 4)), (6, 8, 8))


def test_decoder_level_convolves_before_upsampling_with_the_released_result() -> None:
    torch.manual_seed(1)
    level = DecoderLevel(8, 4, (3, 3, 3), num_classes=2)
    x, skip = torch.randn(2, 8, 2, 3, 3), torch.randn(2, 4, 4, 6, 6)
    released_up = level.up(F.interpolate(x, size=skip.shape[2:], mode="nearest"))  # the released order
    released = level.merge(torch.cat([released_up, level.skip_block(skip)], dim=1))
    torch.testing.assert_close(level(x, skip), released, rtol=1e-5, atol=1e-5)


def _tiny(arch: str, features: tuple[int, ...] = (32, 32, 32, 32)) -> nn.Module:
    """A 4-stage network, wide enough (32 first-stage features) to run channels-last on the CPU."""
    torch.manual_seed(2)
    config = config_for_arch(arch, 2, 3, list(features), [(3, 3, 3)] * 4, [(1, 1, 1)] + [(2, 2, 2)] * 3)
    return build_network(arch, config)


@pytest.mark.parametrize("arch", ["mambaclinix", "resunet"])
def test_network_on_cpu_runs_channels_last_with_the_channels_first_outputs_and_gradients(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = _tiny(arch)
    assert network.encoder.stem[0].weight.is_contiguous(memory_format=CL)
    with monkeypatch.context() as patched:  # the channels-first path: every layer takes PyTorch's kernels
        patched.setattr(network_module, "memory_format_for", lambda device, features: torch.contiguous_format)
        reference = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
        x = torch.randn(2, 2, 8, 16, 16)
        torch.manual_seed(3)  # the same drop-path draws in both runs
        expected = reference(x)
        assert not is_channels_last(expected[0])
    torch.manual_seed(3)
    got = network(x)
    assert all(is_channels_last(logits) for logits in got)
    for mine, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
    sum(logits.square().mean() for logits in got).backward()
    sum(logits.square().mean() for logits in expected).backward()
    assert_gradients_close(network, reference)


def assert_gradients_close(network: nn.Module, reference: nn.Module) -> None:
    """Per parameter, ``|Δg| ≤ 1e-4·|g| + 1e-5·G`` (module docstring)."""
    largest = max(p.grad.norm().item() for p in reference.parameters())
    for (name, mine), theirs in zip(network.named_parameters(), reference.parameters(), strict=True):
        difference, size = (mine.grad - theirs.grad).norm().item(), theirs.grad.norm().item()
        assert difference <= 1e-4 * size + 1e-5 * largest, f"{name}: |Δg| {difference:.3g} for |g| {size:.3g}"


def test_thin_networks_stay_channels_first_on_the_cpu() -> None:
    thin = _tiny("mambaclinix", (8, 16, 32, 32))
    assert thin.memory_format_on(torch.device("cpu")) == torch.contiguous_format
    assert thin.encoder.stem[0].weight.is_contiguous()
    assert not is_channels_last(thin(torch.randn(1, 2, 8, 16, 16))[0])
    wide = _tiny("mambaclinix")
    assert wide.memory_format_on(torch.device("cpu")) == CL
    assert wide.memory_format_on(torch.device("cuda")) == torch.contiguous_format


def test_a_channels_last_checkpoint_loads_into_a_channels_first_network() -> None:
    network = _tiny("mambaclinix").eval()
    reference = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
    reference.load_state_dict(network.state_dict())
    placed = reference.place("cpu")
    assert placed is reference and reference.encoder.stem[0].weight.is_contiguous(memory_format=CL)
    x = torch.randn(1, 2, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(reference(x)[0], network(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["mambaclinix", "resunet"])
def test_checkpointing_gives_the_gradients_of_a_plain_step_bit_for_bit(arch: str) -> None:
    network = _tiny(arch, (8, 16, 32, 32)).train()  # drop path on: the replayed RNG must draw the same masks
    reference = copy.deepcopy(network)
    network.checkpointing = True
    assert network.encoder.checkpointing and network.decoder.checkpointing
    x = torch.randn(2, 2, 8, 16, 16)
    for model in (reference, network):
        torch.manual_seed(4)
        sum(logits.square().mean() for logits in model(x)).backward()
    for (name, mine), theirs in zip(network.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(mine.grad, theirs.grad), name


def test_checkpointing_is_a_config_field_and_idle_without_gradients() -> None:
    config = config_for_arch("mambaclinix", 1, 2, [8, 16], [(3, 3, 3)] * 2, [(1, 1, 1), (2, 2, 2)], checkpointing=True)
    network = build_network("mambaclinix", config)
    assert network.checkpointing and type(config).from_dict(config.to_dict()).checkpointing
    with torch.no_grad():
        assert network(torch.randn(1, 1, 4, 8, 8))[0].shape == (1, 2, 4, 8, 8)
