"""The poly learning-rate schedule, the optimizer factory and the seeds of the random streams."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from clinix.errors import ClinixError
from clinix.plan.model import OptimizerSettings
from clinix.train.schedule import (
    GLOBAL_STREAM,
    INIT_STREAM,
    TRAIN_STREAM,
    VALIDATION_STREAM,
    build_optimizer,
    poly_lr,
    seed_global_generators,
    set_learning_rate,
    stream_seed,
)


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, 1e-4),  # the first epoch trains at lr0
        (500, 1e-4 * 0.5**0.9),  # 0.5^0.9 = 0.53589
        (999, 1e-4 * 0.001**0.9),  # 10^-2.7 · lr0 = 1.995e-7 (nnU-Net: 0.01 -> 2.0e-5)
    ],
)
def test_poly_lr_of_a_1000_epoch_run(epoch: int, expected: float) -> None:
    assert poly_lr(1e-4, epoch, 1000) == pytest.approx(expected, rel=1e-12)


def test_poly_lr_of_the_last_of_three_epochs_is_lr0_times_a_third_to_the_0_9() -> None:
    assert poly_lr(0.01, 2, 3, 0.9) == pytest.approx(0.01 * 0.37204, rel=1e-4)


def test_the_default_optimizer_is_adam_with_the_released_settings() -> None:
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimizerSettings())
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["eps"]) == (1e-4, 1e-5, 1e-5)


def test_sgd_uses_nesterov_momentum() -> None:
    settings = OptimizerSettings(name="sgd", lr=1e-2, weight_decay=3e-5, momentum=0.99)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], settings)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (1e-2, 0.99, True, 3e-5)


def test_an_unknown_optimizer_is_a_clinix_error() -> None:
    with pytest.raises(ClinixError, match="unknown optimizer 'adamw'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimizerSettings(name="adamw"))


def test_set_learning_rate_changes_every_group() -> None:
    optimizer = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))]}, {"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=1.0
    )
    set_learning_rate(optimizer, 0.25)
    assert [group["lr"] for group in optimizer.param_groups] == [0.25, 0.25]


def test_seed_streams_stay_apart_even_with_zero_keys() -> None:
    # numpy's SeedSequence([a, b]) equals SeedSequence([a, b, 0]); the stream key second avoids that
    seeds = {
        stream_seed(5, INIT_STREAM),
        stream_seed(5, TRAIN_STREAM, 0),
        stream_seed(5, VALIDATION_STREAM, 0),
        stream_seed(5, GLOBAL_STREAM, 0, 0),
    }
    assert len(seeds) == 4
    assert stream_seed(5, TRAIN_STREAM, 0) == stream_seed(5, TRAIN_STREAM)


def test_an_epoch_reseeds_torch_numpy_and_python_the_same_way_every_time() -> None:
    seed_global_generators(0, 0, 3)
    first = (torch.rand(1).item(), np.random.rand(), random.random())
    seed_global_generators(0, 0, 4)
    other_epoch = torch.rand(1).item()
    seed_global_generators(0, 0, 3)
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == first
    assert other_epoch != first[0]
