"""The training loop on a tiny phantom: files, checkpoints, exact resumption, the CLI."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from clinix.checkpoint import CHECKPOINT_KEYS, save_checkpoint
from clinix.cli import app
from clinix.crossval import train_and_validate
from clinix.data import write_phantom_dataset
from clinix.errors import ClinixError
from clinix.io.atomic import write_json
from clinix.plan import load_plan, plan_experiment
from clinix.preprocess import preprocess_dataset
from clinix.train import TrainingOptions, trainer
from clinix.train.distributed import DistributedContext
from clinix.train.run import starting_checkpoint
from clinix.train.trainer import train_fold
from clinix.workdir import WorkDir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3
TINY_RUN = {"device": "cpu", "workers": 1, "echo": False}


def build_tiny_workdir(root: Path) -> Path:
    """A planned, preprocessed 5-case phantom whose plan is shrunk to a 3-stage, 16×32×32-patch network.

    Built once under ``root`` and reused (tests copy it before training in it).
    """
    workdir = root / "work"
    if (workdir / "preprocessed").is_dir():
        return workdir
    dataset = write_phantom_dataset(root / "dataset", cases=5, test_cases=0, size="tiny")
    plan, _ = plan_experiment(dataset, workdir, device="cpu", workers=1)
    network = {
        **plan.network,
        "features": [4, 8, 16],
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "block_map": ["hgcn", "hgcn", "mamba"],
        "orders": [2, 3, None],
    }
    plan = dataclasses.replace(
        plan, network=network, patch_size=[16, 32, 32], batch_size=2, epochs=EPOCHS,
        iterations_per_epoch=2, val_iterations=1,
    )  # fmt: skip
    write_json(workdir / "plans.json", plan.to_json())
    preprocess_dataset(workdir, workers=1)
    return workdir


@pytest.fixture(scope="module")
def straight_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fold 0 trained for 3 epochs without interruption, validated without TTA; returns the workdir."""
    workdir = Path(shutil.copytree(prepared, tmp_path_factory.mktemp("straight") / "work"))
    train_and_validate(workdir, 0, TrainingOptions(**TINY_RUN), tta=False)
    return workdir


def _fold_folder(workdir: Path, fold: int | str = 0) -> Path:
    return WorkDir(workdir).fold(fold)


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (_fold_folder(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_a_tiny_run_writes_every_file_of_the_fold_folder(straight_run: Path) -> None:
    folder = _fold_folder(straight_run)
    for name in ("checkpoint_latest.pt", "checkpoint_best.pt", "checkpoint_final.pt", "log.txt"):
        assert (folder / name).is_file(), name
    assert (folder / "progress.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (folder / "validation" / "phantom_000.nii.gz").is_file()  # RandomState(12345).permutation(5)[0] = 0
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    assert [case["case"] for case in summary["metric_per_case"]] == ["phantom_000"]
    log_lines = (folder / "log.txt").read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: ", line) for line in log_lines)
    assert not list(folder.glob(".*tmp*"))  # no temporary file left by an atomic write


def test_metrics_hold_one_line_per_epoch_with_the_poly_rate_and_the_ema(straight_run: Path) -> None:
    metrics = _metrics(straight_run)
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert set(metrics[0]) == {"epoch", "train_loss", "val_loss", "pseudo_dice", "mean", "ema", "lr", "seconds"}
    assert set(metrics[0]["pseudo_dice"]) == {"organ", "tumour"}
    lr0 = load_plan(straight_run).optimizer.lr
    assert [m["lr"] for m in metrics] == pytest.approx([lr0, lr0 * (2 / 3) ** 0.9, lr0 * (1 / 3) ** 0.9])
    assert metrics[0]["ema"] == metrics[0]["mean"]
    assert metrics[1]["ema"] == pytest.approx(0.9 * metrics[0]["ema"] + 0.1 * metrics[1]["mean"])


def test_the_checkpoint_loads_with_weights_only_and_holds_every_key(straight_run: Path) -> None:
    final = torch.load(_fold_folder(straight_run) / "checkpoint_final.pt", weights_only=True)
    assert set(CHECKPOINT_KEYS) <= set(final)
    assert (final["epoch"], final["fold"], final["seed"], final["mirror_axes"]) == (EPOCHS, 0, 0, [0, 1, 2])
    assert final["plan"]["network"]["features"] == [4, 8, 16]
    assert final["scaler"] is None  # no mixed precision on the CPU
    assert [record["epoch"] for record in final["history"]] == [0, 1, 2]
    assert final["ema"] == _metrics(straight_run)[-1]["ema"]


def test_the_best_checkpoint_is_the_epoch_of_the_highest_ema(straight_run: Path) -> None:
    emas = [m["ema"] for m in _metrics(straight_run)]
    best = torch.load(_fold_folder(straight_run) / "checkpoint_best.pt", weights_only=True)
    assert best["best_ema"] == max(emas)
    assert best["epoch"] == emas.index(max(emas)) + 1  # the first epoch reaching it (strict improvement)


class SimulatedKill(Exception):
    """Stands for a kill -9: the run stops in the middle of an epoch."""


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(straight_run: Path, workdir: Path, monkeypatch) -> None:
    steps = []
    real_step = trainer.train_step

    def step_then_die(run, data, target):
        steps.append(run.progress.epoch)
        if len(steps) == 4:  # epoch 0's two steps, then one step into epoch 1
            raise SimulatedKill
        return real_step(run, data, target)

    monkeypatch.setattr(trainer, "train_step", step_then_die)
    with pytest.raises(SimulatedKill):
        train_fold(workdir, 0, **TINY_RUN)
    assert torch.load(_fold_folder(workdir) / "checkpoint_latest.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(trainer, "train_step", real_step)
    result = train_fold(workdir, 0, **TINY_RUN, resume=True)

    assert result.epochs == EPOCHS
    resumed = torch.load(_fold_folder(workdir) / "checkpoint_final.pt", weights_only=True)["model"]
    straight = torch.load(_fold_folder(straight_run) / "checkpoint_final.pt", weights_only=True)["model"]
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[name], straight[name]) for name in straight)
    assert [m["train_loss"] for m in _metrics(workdir)] == [m["train_loss"] for m in _metrics(straight_run)]
    assert "resuming at epoch 1" in (_fold_folder(workdir) / "log.txt").read_text()


def test_resuming_a_finished_run_trains_nothing(straight_run: Path, tmp_path: Path) -> None:
    workdir = Path(shutil.copytree(straight_run, tmp_path / "finished"))
    before = (_fold_folder(workdir) / "metrics.jsonl").read_text()
    result = train_fold(workdir, 0, **TINY_RUN, resume=True)
    assert result.epochs == EPOCHS
    assert (_fold_folder(workdir) / "metrics.jsonl").read_text() == before
    assert "the run is finished (3 epochs)" in (_fold_folder(workdir) / "log.txt").read_text()


def test_a_finished_run_extended_with_more_epochs_trains_on_with_the_schedule_recomputed(
    straight_run: Path, tmp_path: Path
) -> None:
    workdir = Path(shutil.copytree(straight_run, tmp_path / "extended"))
    before = _metrics(workdir)
    result = train_fold(workdir, 0, **TINY_RUN, resume=True, epochs=5)
    assert result.epochs == 5
    metrics = _metrics(workdir)
    assert [m["epoch"] for m in metrics] == [0, 1, 2, 3, 4] and metrics[:3] == before
    lr0 = load_plan(workdir).optimizer.lr
    assert [m["lr"] for m in metrics[3:]] == pytest.approx([lr0 * (2 / 5) ** 0.9, lr0 * (1 / 5) ** 0.9])
    final = torch.load(_fold_folder(workdir) / "checkpoint_final.pt", weights_only=True)
    assert final["epoch"] == 5 and final["plan"]["epochs"] == 5
    log = (_fold_folder(workdir) / "log.txt").read_text()
    jump = f"from {lr0 * (1 / 3) ** 0.9:.3g} to {lr0 * (2 / 5) ** 0.9:.3g}"
    assert "extending the finished run from 3 to 5 epochs" in log and f"jumps back up {jump}" in log
    again = train_fold(workdir, 0, **TINY_RUN, resume=True)  # the same 5 epochs: finished, nothing trained
    assert again.epochs == 5 and _metrics(workdir) == metrics


def test_a_finished_run_cannot_be_shortened(straight_run: Path, tmp_path: Path) -> None:
    workdir = Path(shutil.copytree(straight_run, tmp_path / "shorter"))
    with pytest.raises(ClinixError, match=r"finished 3 epochs; --epochs 2 cannot shorten it"):
        train_fold(workdir, 0, **TINY_RUN, resume=True, epochs=2)


def test_resume_takes_the_latest_checkpoint_when_an_extension_got_further(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "checkpoint_final.pt", {"model": {}, "epoch": 3})
    save_checkpoint(tmp_path / "checkpoint_latest.pt", {"model": {}, "epoch": 4})
    context = DistributedContext()
    assert starting_checkpoint(tmp_path, TrainingOptions(resume=True), context).name == "checkpoint_latest.pt"
    save_checkpoint(tmp_path / "checkpoint_latest.pt", {"model": {}, "epoch": 3})
    assert starting_checkpoint(tmp_path, TrainingOptions(resume=True), context).name == "checkpoint_final.pt"


def test_only_latest_best_and_final_are_kept_unless_keep_every_asks(straight_run: Path, workdir: Path) -> None:
    assert not list(_fold_folder(straight_run).glob("checkpoint_epoch_*"))
    train_fold(workdir, 0, **TINY_RUN, keep_every=2)
    [kept] = _fold_folder(workdir).glob("checkpoint_epoch_*")
    assert kept.name == "checkpoint_epoch_2.pt"
    assert torch.load(kept, weights_only=True)["epoch"] == 2
    train_fold(workdir, 0, **TINY_RUN, overwrite=True)  # a fresh run removes the old snapshots
    assert not list(_fold_folder(workdir).glob("checkpoint_epoch_*"))


def test_resume_without_a_checkpoint_is_a_clinix_error(workdir: Path) -> None:
    with pytest.raises(ClinixError, match=r"holds no checkpoint_latest\.pt"):
        train_fold(workdir, 0, **TINY_RUN, resume=True)


def test_a_fresh_run_over_an_existing_one_is_refused_without_overwrite(straight_run: Path, tmp_path: Path) -> None:
    workdir = Path(shutil.copytree(straight_run, tmp_path / "again"))
    with pytest.raises(ClinixError, match=r"already holds a run.*--resume.*--overwrite"):
        train_fold(workdir, 0, **TINY_RUN)


def test_the_cli_trains_a_fold_and_exits_0(workdir: Path) -> None:
    arguments = ["train", "--fold", "all", "--workdir", str(workdir), "--device", "cpu", "--epochs", "1"]
    result = CliRunner().invoke(
        app, [*arguments, "--iters", "1", "--val-iters", "1", "--workers", "1", "--no-validation"]
    )
    assert result.exit_code == 0, result.output
    assert "fold all: 1 epochs" in result.output
    assert len(_fold_folder(workdir, "all").joinpath("metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(("fold", "message"), [("7", "fold 7 does not exist"), ("first", "--fold expects")])
def test_the_cli_exits_2_for_a_bad_fold(workdir: Path, fold: str, message: str) -> None:
    result = CliRunner().invoke(app, ["train", "--fold", fold, "--workdir", str(workdir), "--device", "cpu"])
    assert result.exit_code == 2
    assert message in result.output
