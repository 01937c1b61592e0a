"""``--precision``: which arithmetic each choice resolves to, its refusals, and bf16 agreeing with fp32."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import clinix.device
from clinix.cli import app
from clinix.device import resolve_precision
from clinix.errors import ClinixError
from clinix.infer import Predictor
from clinix.net.network import NetworkConfig
from clinix.net.registry import build_network, config_for_arch
from tests.infer.test_cli import write_case
from tests.infer.test_predictor import save_checkpoint, tiny_network, tiny_plan

CPU = torch.device("cpu")


def pretend_cpu(monkeypatch: pytest.MonkeyPatch, has_bf16: bool, speedup: float = 2.0) -> None:
    monkeypatch.setattr(clinix.device, "cpu_has_bf16", lambda: has_bf16)
    monkeypatch.setattr(clinix.device, "cpu_bf16_speedup", lambda training=False: speedup)


def test_fp32_is_plain_float32_everywhere() -> None:
    assert resolve_precision("fp32", CPU) is None


def test_auto_takes_bf16_only_on_a_cpu_that_has_it_and_gains_from_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cpu(monkeypatch, has_bf16=True, speedup=2.0)
    assert resolve_precision("auto", CPU) is torch.bfloat16
    pretend_cpu(monkeypatch, has_bf16=True, speedup=1.05)  # the instructions are there but do not pay
    assert resolve_precision("auto", CPU) is None
    pretend_cpu(monkeypatch, has_bf16=False)
    assert resolve_precision("auto", CPU) is None


def test_bf16_on_a_cpu_without_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cpu(monkeypatch, has_bf16=False)
    with pytest.raises(ClinixError, match="no bf16 instructions"):
        resolve_precision("bf16", CPU)
    with pytest.raises(ClinixError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)


@pytest.mark.parametrize("training", [False, True])
def test_the_self_check_measures_a_real_ratio(training: bool) -> None:
    clinix.device.cpu_bf16_speedup.cache_clear()
    speedup = clinix.device.cpu_bf16_speedup(training)
    assert 0.01 < speedup < 100 and speedup == clinix.device.cpu_bf16_speedup(training)  # cached: measured once


def test_predict_with_bf16_on_a_cpu_without_it_exits_2_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tiny_plan()
    work = tmp_path / "work"
    save_checkpoint(work / "results" / "3d_fullres" / "fold_0" / "checkpoint_final.pt", plan, tiny_network(plan))
    write_case(tmp_path / "in", "case")
    pretend_cpu(monkeypatch, has_bf16=False)
    arguments = ["predict", str(tmp_path / "in"), str(tmp_path / "out"), "-w", str(work), "--device", "cpu"]
    result = CliRunner().invoke(app, [*arguments, "--precision", "bf16"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --precision bf16: this CPU has no bf16 instructions (AVX-512 BF16 or AMX), where bf16 is slower "
        "than float32; use --precision fp32 or auto"
    ]
    assert not (tmp_path / "out" / "case.nii.gz").exists()
    result = CliRunner().invoke(app, [*arguments, "--precision", "fp32", "--no-tta"])
    assert result.exit_code == 0, result.output
    assert "fp32" in result.stdout


def blob_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``(1, 24, 40, 40)`` noisy image with three bright ellipsoids, and their ``(24, 40, 40)`` mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:24, :40, :40]
    mask = np.zeros((24, 40, 40), dtype=np.int64)
    for _ in range(3):
        centre, radii = rng.uniform((5, 8, 8), (19, 32, 32)), rng.uniform((2.5, 4, 4), (5, 8, 8))
        mask |= (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
                 + ((x - centre[2]) / radii[2]) ** 2 <= 1)  # fmt: skip
    image = mask + rng.normal(0, 0.45, mask.shape)
    return image[None].astype(np.float32), mask


def trained_mambaclinix() -> tuple[torch.nn.Module, object]:
    """A 3-stage mambaclinix (HGCN, HGCN, Mamba) trained for 60 Adam steps on blob cases: a real segmenter."""
    config = config_for_arch("mambaclinix", 1, 2, [8, 16, 32], [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]])
    config = dataclasses.replace(config, deep_supervision=False)
    torch.manual_seed(0)
    network = build_network("mambaclinix", config)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    cases = [blob_case(seed) for seed in range(4)]
    rng = np.random.default_rng(0)
    for _ in range(60):
        starts = [(rng.integers(0, 9), rng.integers(0, 9), rng.integers(0, 9)) for _ in range(2)]
        picks = [cases[rng.integers(0, len(cases))] for _ in range(2)]
        crop = lambda a, s: a[..., s[0] : s[0] + 16, s[1] : s[1] + 32, s[2] : s[2] + 32]  # noqa: E731
        images = torch.from_numpy(np.stack([crop(image, s) for (image, _), s in zip(picks, starts, strict=True)]))
        masks = torch.from_numpy(np.stack([crop(mask, s) for (_, mask), s in zip(picks, starts, strict=True)]))
        optimizer.zero_grad()
        F.cross_entropy(network(images), masks).backward()
        optimizer.step()
    return network.eval(), config


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_bf16_agrees_with_fp32_on_the_argmax_of_a_trained_model(monkeypatch: pytest.MonkeyPatch) -> None:
    network, config = trained_mambaclinix()
    plan = dataclasses.replace(
        tiny_plan(labels={"background": 0, "blob": 1}, patch=(16, 32, 32)),
        arch="mambaclinix",
        network=NetworkConfig.to_dict(config),  # type: ignore[arg-type]
    )
    pretend_cpu(monkeypatch, has_bf16=True)  # bf16 arithmetic runs on any CPU, fast or not
    image, mask = blob_case(seed=7)  # a case the network never saw
    labels = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor(plan, [network], device="cpu", tta=True, precision=precision)
        assert predictor.precision == precision
        labels[precision] = predictor.predict_preprocessed(image).argmax(axis=0)
    assert dice(labels["fp32"] == 1, mask == 1) > 0.8  # the model has learnt the task
    assert (labels["bf16"] == labels["fp32"]).mean() >= 0.99
    assert dice(labels["bf16"] == 1, labels["fp32"] == 1) >= 0.97
