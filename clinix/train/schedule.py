"""What changes from epoch to epoch: the polynomial learning rate of the plan's optimizer (SPEC §6,
reference §3.1) and the seeds of the random streams.

Every random stream of a run is a function of the run seed and a few keys: the initial weights
``(seed, INIT)``, the training and validation batch streams ``(seed, TRAIN|VALIDATION, rank)`` (the loader
derives batch i of epoch e from them), and the global torch/numpy/python generators, reseeded at each
epoch start with ``(seed, GLOBAL, rank, epoch)`` (dropout, drop-path). Nothing depends on how many epochs
ran in this process, so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np
import torch

from clinix.errors import ClinixError
from clinix.plan.model import OptimizerSettings

OPTIMIZER_NAMES = ("adam", "sgd")
TRAIN_STREAM, VALIDATION_STREAM, GLOBAL_STREAM, INIT_STREAM = 0, 1, 2, 3  # keys that keep the streams apart


def poly_lr(initial_lr: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """``lr0 · (1 − epoch / epochs)^exponent``: the rate of a whole epoch, set when it starts.

    Epoch 0 trains at ``lr0``; the last epoch (``epochs − 1``) at ``lr0 · (1/epochs)^exponent``.
    """
    return initial_lr * (1 - epoch / epochs) ** exponent


def build_optimizer(parameters: Iterable[torch.nn.Parameter], settings: OptimizerSettings) -> torch.optim.Optimizer:
    """Adam with coupled L2 weight decay (the released MambaClinix trainer) or SGD with Nesterov momentum."""
    if settings.name == "adam":
        return torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.weight_decay, eps=settings.eps)
    if settings.name == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            momentum=settings.momentum,
            nesterov=True,
        )
    raise ClinixError(f"plans.json: unknown optimizer {settings.name!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def stream_seed(seed: int, stream: int, *keys: int) -> int:
    """A 32-bit seed that is a function of ``(seed, stream, *keys)`` only (numpy's SeedSequence hashing).

    ``stream`` comes second so streams never collide: SeedSequence ignores trailing zero keys.
    """
    return int(np.random.SeedSequence([seed, stream, *keys]).generate_state(1)[0])


def seed_global_generators(seed: int, rank: int, epoch: int) -> None:
    """Reseed torch (CPU and CUDA), numpy and python ``random`` for ``epoch`` (dropout, drop-path)."""
    value = stream_seed(seed, GLOBAL_STREAM, rank, epoch)
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)
