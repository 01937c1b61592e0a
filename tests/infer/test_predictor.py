from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from clinix import __version__
from clinix.errors import ClinixError
from clinix.infer import Predictor, resolve_device
from clinix.net.network import NetworkConfig
from clinix.net.registry import build_network, config_for_arch
from clinix.plan.model import ChannelNormalization, Plan
from tests.preprocess.test_case import make_plan

LABELS = {"background": 0, "organ": 1, "tumour": 2}
NO_NORMALIZATION = [ChannelNormalization("CT", "none")]


def tiny_plan(
    target_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    patch: tuple[int, int, int] = (8, 8, 8),
    labels: dict[str, Any] | None = None,
) -> Plan:
    """A hand-made plan: no normalisation, a 2-stage ``resunet`` of widths 2 and 4 on an 8³ patch."""
    labels = labels or LABELS
    network = config_for_arch(
        "resunet", 1, len(labels), [2, 4], [[3, 3, 3], [3, 3, 3]], [[1, 1, 1], [2, 2, 2]]
    ).to_dict()
    plan = make_plan(target_spacing, NO_NORMALIZATION, labels=labels)
    return dataclasses.replace(plan, patch_size=list(patch), arch="resunet", network=network)


def tiny_network(plan: Plan, seed: int = 0) -> nn.Module:
    """The plan's network, randomly initialised from ``seed`` (deep supervision on, as in training)."""
    torch.manual_seed(seed)
    return build_network(plan.arch, NetworkConfig.from_dict(plan.network))


def save_checkpoint(path: Path, plan: Plan, network: nn.Module, fold: int | str = 0, **extra: Any) -> Path:
    """A checkpoint with the keys of clinix.checkpoint, as the trainer writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": network.state_dict(),
        "plan": plan.to_json(),
        "epoch": 1,
        "clinix_version": __version__,
        "fold": fold,
        "mirror_axes": [0, 1, 2],
        **extra,
    }
    torch.save(state, path)
    return path


class ConstantLogits(nn.Module):
    """Logits ``values[k]`` at every voxel of every tile: ``(B, C, *S) -> (B, K, *S)``."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = torch.tensor(values, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.values.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[2:]).clone()


class OneHotOfImage(nn.Module):
    """A perfect model for an image that *is* a label map: logits = 10 · one_hot(round(image))."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, 0].round().long().clamp(0, self.num_classes - 1)
        return 10.0 * nn.functional.one_hot(labels, self.num_classes).permute(0, 4, 1, 2, 3).float()


def test_fold_ensemble_averages_probabilities_not_logits() -> None:
    plan = tiny_plan(labels={"background": 0, "organ": 1})
    # softmax([0, 0]) = (1/2, 1/2) and softmax([0, ln 3]) = (1/4, 3/4): the mean is (3/8, 5/8); the mean
    # of the logits, [0, ln(3)/2], would give (1/(1+√3), √3/(1+√3)) = (0.366, 0.634) instead
    models = [ConstantLogits([0.0, 0.0]), ConstantLogits([0.0, math.log(3.0)])]
    probabilities = Predictor(plan, models, device="cpu", tta=False).predict_preprocessed(np.zeros((1, 9, 10, 11)))
    assert probabilities.shape == (2, 9, 10, 11) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities[0], 3 / 8, rtol=1e-6)
    np.testing.assert_allclose(probabilities[1], 5 / 8, rtol=1e-6)


def test_a_region_ensemble_averages_sigmoids_one_per_region() -> None:
    plan = tiny_plan(labels={"background": 0, "whole": [1, 2], "core": 2})
    plan = dataclasses.replace(plan, dataset={**plan.dataset, "regions_class_order": [1, 2]})
    assert plan.labels.activation == "sigmoid" and plan.num_classes == 2
    # sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4 average to 5/8 (sigmoid of the mean logit: 0.634);
    # sigmoid(-ln 3) = 1/4 and sigmoid(ln 3) = 3/4 to 1/2. Regions need not sum to one.
    models = [ConstantLogits([0.0, -math.log(3.0)]), ConstantLogits([math.log(3.0), math.log(3.0)])]
    probabilities = Predictor(plan, models, device="cpu", tta=False).predict_preprocessed(np.zeros((1, 8, 9, 10)))
    assert probabilities.shape == (2, 8, 9, 10)
    np.testing.assert_allclose(probabilities[0], 5 / 8, rtol=1e-6)
    np.testing.assert_allclose(probabilities[1], 1 / 2, rtol=1e-6)


def test_checkpoint_file_checkpoint_dict_state_dict_and_module_predict_the_same(tmp_path: Path) -> None:
    plan = tiny_plan()
    network = tiny_network(plan)
    path = save_checkpoint(tmp_path / "checkpoint_final.pt", plan, network)
    data = np.random.default_rng(0).normal(size=(1, 11, 9, 12)).astype(np.float32)
    network.deep_supervision = False
    entries = [path, torch.load(path, weights_only=True), network.state_dict(), network]
    results = [Predictor(plan, [entry], device="cpu", tta=False).predict_preprocessed(data) for entry in entries]
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0].sum(axis=0), 1.0, rtol=1e-5)


def test_a_given_module_gets_its_training_mode_and_deep_supervision_back() -> None:
    plan = tiny_plan()
    network = tiny_network(plan).train()
    assert network.deep_supervision
    Predictor(plan, [network], device="cpu", tta=False).predict_preprocessed(np.zeros((1, 8, 8, 8)))
    assert network.training and network.deep_supervision


def test_an_ensemble_of_one_architecture_builds_one_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clinix.net.registry

    plan = tiny_plan()
    paths = [save_checkpoint(tmp_path / f"fold_{f}.pt", plan, tiny_network(plan, seed=f), f) for f in range(3)]
    built = []
    original = clinix.net.registry.build_network
    monkeypatch.setattr(clinix.net.registry, "build_network", lambda *a: built.append(a) or original(*a))
    predictor = Predictor(plan, paths, device="cpu", tta=False)
    for _ in range(2):
        predictor.predict_preprocessed(np.zeros((1, 8, 8, 8), dtype=np.float32))
    assert len(built) == 1  # three folds on two cases: one network, the weights swapped in turn


def test_a_checkpoint_for_another_number_of_classes_is_refused(tmp_path: Path) -> None:
    plan = tiny_plan()
    two_class_plan = tiny_plan(labels={"background": 0, "organ": 1})
    path = save_checkpoint(tmp_path / "c.pt", two_class_plan, tiny_network(two_class_plan))
    with pytest.raises(ClinixError, match="predicts 2 classes, the plan has 3"):
        Predictor(plan, [path], device="cpu")


def test_a_corrupt_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_final.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ClinixError, match="cannot be loaded as a clinix checkpoint"):
        Predictor(tiny_plan(), [path], device="cpu")


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ClinixError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ClinixError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_step_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ClinixError, match=r"--step must be in \(0, 1\]"):
        Predictor(tiny_plan(), [ConstantLogits([0.0, 0.0, 0.0])], device="cpu", step=1.5)
