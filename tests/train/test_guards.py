"""The guards of a training run: a NaN loss or weights stop it, naming the epoch and the last good checkpoint,
without writing over that checkpoint; a re-plan is refused before a resumed run trains on other data."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from clinix.errors import ClinixError
from clinix.io.atomic import write_json
from clinix.plan.model import load_plan
from clinix.train import trainer
from clinix.train.guards import TrainingDiverged, first_nonfinite_parameter
from clinix.train.trainer import train_fold
from clinix.workdir import WorkDir
from tests.train.test_trainer import TINY_RUN


def latest(workdir: Path) -> Path:
    return WorkDir(workdir).results() / "fold_0" / "checkpoint_latest.pt"


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(workdir: Path, monkeypatch) -> None:
    real_step, steps = trainer.train_step, []

    def nan_in_epoch_1(run, data, target):
        loss = real_step(run, data, target)
        steps.append(run.progress.epoch)
        return torch.tensor(math.nan) if run.progress.epoch == 1 and steps.count(1) == 2 else loss

    monkeypatch.setattr(trainer, "train_step", nan_in_epoch_1)
    with pytest.raises(TrainingDiverged) as raised:
        train_fold(workdir, 0, **TINY_RUN)
    assert str(raised.value) == (
        "training diverged: the training loss is nan at iteration 1 of epoch 1; nothing of that epoch was saved and "
        f"the last good checkpoint is {latest(workdir)} (after epoch 0); lower the learning rate (plans.json "
        "'optimizer') or check the data"
    )
    saved = torch.load(latest(workdir), weights_only=True)
    assert saved["epoch"] == 1
    assert all(bool(torch.isfinite(t).all()) for t in saved["model"].values() if t.is_floating_point())
    assert not (latest(workdir).parent / "checkpoint_final.pt").exists()
    assert "error: training diverged" in (latest(workdir).parent / "log.txt").read_text()


def test_weights_that_turned_nan_stop_the_run_before_any_checkpoint(workdir: Path, monkeypatch) -> None:
    real_step, steps = trainer.train_step, []

    def poison_the_weights_at_the_last_step(run, data, target):
        loss = real_step(run, data, target)
        steps.append(1)
        if len(steps) == run.plan.iterations_per_epoch:  # the loss was finite; the weights no longer are
            with torch.no_grad():
                next(run.network.parameters()).fill_(math.inf)
        return loss

    monkeypatch.setattr(trainer, "train_step", poison_the_weights_at_the_last_step)
    with pytest.raises(TrainingDiverged, match=r"^training diverged: the validation loss of epoch 0 is nan; "):
        train_fold(workdir, 0, **TINY_RUN)
    assert not latest(workdir).exists()


def test_the_weights_check_names_the_first_non_finite_parameter() -> None:
    network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert first_nonfinite_parameter(network) is None
    with torch.no_grad():
        network[1].bias[0] = math.nan
    assert first_nonfinite_parameter(network) == "1.bias"


def test_resuming_after_a_replan_is_refused_before_any_step(workdir: Path, monkeypatch) -> None:
    real_step, steps = trainer.train_step, []

    def one_epoch_then_stop(run, data, target):
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt
        return real_step(run, data, target)

    monkeypatch.setattr(trainer, "train_step", one_epoch_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_fold(workdir, 0, **TINY_RUN)
    plan = load_plan(workdir)
    # re-plan and re-preprocess: the data no longer belongs to the plan the run started with
    replanned = dataclasses.replace(plan, target_spacing=[value * 1.5 for value in plan.target_spacing])
    write_json(workdir / "plans.json", replanned.to_json())
    from clinix.preprocess import preprocess_dataset

    preprocess_dataset(workdir, workers=1)
    steps.clear()
    with pytest.raises(ClinixError, match=r"not preprocessed for the plan this run was started with .+ --overwrite"):
        train_fold(workdir, 0, **TINY_RUN, resume=True)
    assert steps == []
