"""The models of an ensemble, and the one network that runs them in turn.

A model is a checkpoint file, a checkpoint dict (interfaces: "model", "plan", "mirror_axes", ...), a
bare ``state_dict`` (built with the predictor's plan), or a ready ``torch.nn.Module`` (the trainer's own
network, or a test double), which must already sit on the predictor's device. Files are opened
memory-mapped: the weights are read from disk when a fold runs, not held in RAM for every fold, and the
optimizer state stored beside them is never read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clinix.checkpoint import load_checkpoint
from clinix.errors import ClinixError
from clinix.plan.model import Plan

ALL_AXES = (0, 1, 2)
ModelEntry = str | Path | dict | nn.Module


@dataclass
class ModelSource:
    """One member of the ensemble: either weights with the network they belong to, or a module.

    Attributes:
        name: how errors refer to it (the checkpoint path, or "model N").
        arch / network: ``--arch`` family and ``NetworkConfig`` dict to build the network (weights only).
        weights: the network's ``state_dict`` (memory-mapped when read from a file).
        module: a ready network (used as is), instead of ``arch``/``network``/``weights``.
        mirror_axes: spatial axes (0 = z, 1 = y, 2 = x) test-time mirroring may flip.
    """

    name: str
    mirror_axes: tuple[int, ...]
    arch: str = ""
    network: dict[str, Any] | None = None
    weights: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None

    @property
    def num_classes(self) -> int | None:
        return None if self.network is None else int(self.network["num_classes"])


def model_source(entry: ModelEntry, plan: Plan, index: int) -> ModelSource:
    """Describe one ensemble member (module docstring); a checkpoint file is opened here."""
    if isinstance(entry, nn.Module):
        return ModelSource(f"model {index}", ALL_AXES, module=entry)
    if isinstance(entry, (str, Path)):
        return _checkpoint_source(load_checkpoint(entry, mmap=True), str(entry))
    if isinstance(entry.get("model"), dict):
        return _checkpoint_source(entry, f"model {index}")
    return ModelSource(f"model {index}", ALL_AXES, plan.arch, plan.network, weights=entry)


def _checkpoint_source(checkpoint: dict[str, Any], name: str) -> ModelSource:
    missing = [key for key in ("model", "plan") if key not in checkpoint]
    if missing:
        raise ClinixError(f"{name}: not a clinix checkpoint (missing {', '.join(missing)})")
    trained_plan = checkpoint["plan"]
    if not isinstance(trained_plan, dict) or not {"arch", "network"} <= trained_plan.keys():
        raise ClinixError(f"{name}: its 'plan' lacks the network ('arch' and 'network')")
    axes = tuple(int(a) for a in checkpoint.get("mirror_axes", ALL_AXES))
    return ModelSource(name, axes, trained_plan["arch"], trained_plan["network"], weights=checkpoint["model"])


class NetworkSlot:
    """Holds at most one network; each model's weights are loaded into it when that model runs.

    Consecutive models of the same architecture (the folds of one plan) reuse the built network, so an
    ensemble never has two networks in memory.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._network: nn.Module | None = None
        self._built_for = ""
        self._loaded: ModelSource | None = None

    @contextmanager
    def network(self, source: ModelSource) -> Iterator[nn.Module]:
        """Yield ``source``'s network in eval mode with deep supervision off (restored afterwards)."""
        network = source.module if source.module is not None else self._load(source)
        with _inference_setting(network):
            yield network

    def _load(self, source: ModelSource) -> nn.Module:
        from clinix.net.network import NetworkConfig
        from clinix.net.registry import build_network

        key = json.dumps([source.arch, source.network], sort_keys=True)
        if self._network is None or key != self._built_for:
            self._network = None  # free the previous network before building the next
            config = NetworkConfig.from_dict({**(source.network or {}), "deep_supervision": False})
            self._network = build_network(source.arch, config).place(self.device)
            self._built_for, self._loaded = key, None
        if self._loaded is not source:
            try:
                self._network.load_state_dict(source.weights or {}, strict=True)
            except RuntimeError as error:
                raise ClinixError(f"{source.name}: weights do not fit its network ({str(error)[:200]})") from None
            self._loaded = source
        return self._network


@contextmanager
def _inference_setting(network: nn.Module) -> Iterator[None]:
    """Eval mode and the full-resolution output only; the module's previous setting comes back on exit."""
    was_training = network.training
    deep_supervision = getattr(network, "deep_supervision", None)
    network.eval()
    if deep_supervision is not None:
        network.deep_supervision = False
    try:
        yield
    finally:
        network.train(was_training)
        if deep_supervision is not None:
            network.deep_supervision = deep_supervision
