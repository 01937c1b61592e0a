"""The memory model: a training step simulated on meta tensors allocates what the real step allocates."""

from __future__ import annotations

import pytest
import torch

from clinix.net.layers import InstanceNorm3d
from clinix.net.network import NetworkConfig
from clinix.net.registry import build_network, config_for_arch
from clinix.net.scan import dispatch
from clinix.net.scan.meta import meta_selective_scan, simulated_scan
from clinix.plan.memory import (
    AMP_ACTIVATION_FACTOR,
    CPU_PROCESS_GB,
    CUDA_OVERHEAD_GB,
    GIB,
    HEAP_BLOCK_LIMIT,
    HEAP_RETENTION,
    LiveTensorBytes,
    StepMemory,
    fit_memory_model,
    simulate_training_step,
)
from clinix.plan.model import OptimizerSettings
from clinix.train.losses import build_loss, deep_supervision_weights

ADAM = OptimizerSettings()
STRIDES = [(1, 1, 1), (2, 2, 2), (2, 2, 2)]


def tiny(arch: str) -> NetworkConfig:
    return config_for_arch(arch, 1, 3, [8, 16, 32], [(3, 3, 3)] * 3, STRIDES)


def real_step_peak(arch: str, config: NetworkConfig, patch: tuple[int, ...], batch: int) -> int:
    """The same step on CPU tensors, its live bytes counted the same way (weights included)."""
    torch.manual_seed(0)
    network = build_network(arch, NetworkConfig.from_dict({**config.to_dict(), "deep_supervision": True})).train()
    loss_fn = build_loss("ce-dice-trs", batch_dice=False, deep_supervision_weights=deep_supervision_weights(2))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4, weight_decay=1e-5, eps=1e-5)
    data, target = torch.randn(batch, 1, *patch), torch.randint(0, 3, (batch, 1, *patch), dtype=torch.int16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(network(data), target).backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
        optimizer.step()

    step()  # the first step makes Adam's moments
    tracker = LiveTensorBytes()
    with tracker:
        step()  # a step as every later one is: the moments held throughout
    state = [t for values in optimizer.state.values() for t in values.values()]
    return tracker.peak + sum(t.untyped_storage().nbytes() for t in (*network.parameters(), *network.buffers(), *state))


def test_live_bytes_follow_allocations_and_frees() -> None:
    tracker = LiveTensorBytes()
    with tracker:
        a = torch.empty(1000, device="meta") * 2  # 4000 bytes
        b = (a + 1) * 3  # a temporary of 4000 bytes, freed, then 4000 kept: peak 12000
        view = b.view(10, 100)  # no new storage
        del a
        c = torch.empty(500, device="meta") + 1  # 2000 more while 4000 live
    assert tracker.peak == 12_000
    assert tracker.live == 6_000
    del b, view, c
    assert tracker.live == 0


@pytest.mark.parametrize("arch", ["resunet", "hgcn-only", "mambaclinix"])
def test_a_simulated_step_allocates_what_a_real_cpu_step_allocates(arch: str, monkeypatch) -> None:
    monkeypatch.setenv(dispatch.BACKEND_ENV, "chunked")  # the backend "chunked-ops" simulates op for op
    config, patch = tiny(arch), (8, 16, 16)
    simulated = simulate_training_step(arch, config, patch, 2, "ce-dice-trs", ADAM, "chunked-ops").peak
    real = real_step_peak(arch, config, patch, 2)
    # to the byte, but for Adam's step counters (4 bytes a parameter), which meta steps copy, and the
    # per-sample statistics of the channels-last instance norms (at most 8 bytes a sample and channel),
    # which the meta batch-norm kernel keeps longer than the CPU's
    network = build_network(arch, config)
    norm_channels = sum(m.num_features for m in network.modules() if isinstance(m, InstanceNorm3d))
    tolerance = 4 * len(list(network.parameters())) + 8 * 2 * norm_channels
    assert simulated == pytest.approx(real, abs=tolerance)
    assert simulated >= real - 4 * len(list(network.parameters()))  # never under what a step takes


def test_the_kernel_backend_is_simulated_by_its_buffers(monkeypatch) -> None:
    config, patch = tiny("mambaclinix"), (8, 16, 16)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "cpu-kernel")
    if dispatch.cpu_kernel() is None:
        pytest.skip("no C++ compiler: the kernel backend cannot run here")
    simulated = simulate_training_step("mambaclinix", config, patch, 2, "ce-dice-trs", ADAM, "cpu-kernel").peak
    assert simulated == pytest.approx(real_step_peak("mambaclinix", config, patch, 2), rel=0.05)


def test_the_chunked_backend_s_buffers_stand_for_its_operations() -> None:
    config, patch = tiny("mambaclinix"), (32, 64, 64)  # thousands of tokens: the 64-token padding is small
    ops = simulate_training_step("mambaclinix", config, patch, 2, "ce-dice-trs", ADAM, "chunked-ops")
    buffers = simulate_training_step("mambaclinix", config, patch, 2, "ce-dice-trs", ADAM, "chunked")
    assert buffers.peak == pytest.approx(ops.peak, rel=0.01)


def test_the_scan_buffers_depend_on_the_backend() -> None:
    batch, channels, length, state = 2, 64, 4096, 16
    u = torch.empty(batch, channels, length, device="meta", requires_grad=True)
    a, b = torch.empty(channels, state, device="meta"), torch.empty(batch, state, length, device="meta")
    kept = {}
    for backend in ("shape-only", "cpu-kernel", "mamba_ssm-cuda"):
        tracker = LiveTensorBytes()
        with simulated_scan(backend), tracker:
            out = meta_selective_scan(u, u, a, b, b, z=u)
        kept[backend] = tracker.live
        del out
    vector = batch * channels * length * 4  # the output
    time_major = 2 * batch * length * state * 4  # B and C, time-major
    every_64 = batch * channels * (length // 64) * state * 4
    chunk_starts = batch * channels * (length // 2048) * 2 * state * 4
    assert kept == {
        "shape-only": vector,
        "cpu-kernel": vector + time_major + every_64,
        "mamba_ssm-cuda": vector + chunk_starts + vector,  # and the output before the gate
    }


def test_the_model_predicts_other_batches_and_patches_of_the_network() -> None:
    config = tiny("mambaclinix")
    model = fit_memory_model("mambaclinix", config, (16, 32, 32), "ce-dice-trs", ADAM, "chunked")
    with torch.device("meta"):
        parameters = sum(p.numel() for p in build_network("mambaclinix", config).parameters())
    assert model.fixed == 16 * parameters  # weights, gradients and Adam's two moments, float32
    for patch, batch in (((16, 32, 32), 3), ((32, 32, 64), 2)):
        exact = simulate_training_step("mambaclinix", config, patch, batch, "ce-dice-trs", ADAM, "chunked")
        # not exact: the loss's region grid and the scan's 64-token chunks do not scale with the voxels
        assert model.step(patch, batch).peak == pytest.approx(exact.peak, rel=0.05)


def test_sgd_keeps_one_buffer_a_parameter() -> None:
    config = tiny("resunet")
    adam = simulate_training_step("resunet", config, (8, 16, 16), 2, "ce-dice", ADAM, "chunked")
    sgd = simulate_training_step("resunet", config, (8, 16, 16), 2, "ce-dice", OptimizerSettings(name="sgd"), "chunked")
    with torch.device("meta"):
        parameters = sum(p.numel() for p in build_network("resunet", config).parameters())
    assert adam.fixed - sgd.fixed == 4 * parameters


def test_the_heaps_count_only_blocks_under_the_mmap_limit() -> None:
    tracker = LiveTensorBytes()
    with tracker:
        small = torch.empty(1024, device="meta")
        large = torch.empty(HEAP_BLOCK_LIMIT // 4, device="meta")  # exactly the limit: mmapped
    assert (tracker.peak, tracker.heap_peak) == (4096 + HEAP_BLOCK_LIMIT, 4096)
    del small, large


def test_device_terms() -> None:
    step = StepMemory(peak=3 * GIB, fixed=1 * GIB, heap_peak=0.5 * GIB)
    assert step.device_gb("cuda") == pytest.approx(1 + AMP_ACTIVATION_FACTOR * 2 + CUDA_OVERHEAD_GB)
    assert step.device_gb("cpu") == pytest.approx(CPU_PROCESS_GB + 3 + HEAP_RETENTION * 0.5)
