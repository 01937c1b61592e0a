"""The run's files: metrics.jsonl lines, log.txt lines, progress.png."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from clinix.train import logging
from clinix.train.logging import CSV_COLUMNS, METRICS_FILE, TrainingLog, epoch_summary, json_line, plot_progress

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _record(epoch: int, mean: float, ema: float | None) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 1.5,
        "val_loss": 1.25,
        "pseudo_dice": {"organ": mean, "tumour": math.nan},
        "mean": mean,
        "ema": ema,
        "lr": 1e-4,
        "seconds": 2.0,
    }


def test_a_metrics_line_writes_nan_as_null() -> None:
    line = json.loads(json_line(_record(0, 0.5, None)))
    assert line["pseudo_dice"] == {"organ": 0.5, "tumour": None}
    assert line["ema"] is None


def test_the_epoch_summary_names_every_number() -> None:
    text = epoch_summary(_record(3, 0.5, 0.25))
    assert text == (
        "epoch 3  train 1.5000  val 1.2500  dice organ 0.5000 tumour nan  mean 0.5000  ema 0.2500  lr 0.0001  2.0 s"
    )


def test_records_append_and_a_restart_keeps_exactly_the_history(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path, echo=False)
    history = [_record(0, 0.5, 0.5), _record(1, 0.6, 0.51), _record(2, 0.7, 0.529)]
    for n, record in enumerate(history, start=1):
        log.record_epoch(record, history[:n])
    assert [json.loads(line)["epoch"] for line in (tmp_path / METRICS_FILE).read_text().splitlines()] == [0, 1, 2]
    log.restart_metrics(history[:1])  # resumed from the checkpoint of epoch 0
    assert [json.loads(line)["epoch"] for line in (tmp_path / METRICS_FILE).read_text().splitlines()] == [0]
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 3
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: epoch \d .*", line) for line in lines)


def test_a_log_of_another_rank_writes_nothing(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path / "fold", enabled=False)
    log.line("hello")
    log.record_epoch(_record(0, 0.5, 0.5), [_record(0, 0.5, 0.5)])
    assert not (tmp_path / "fold").exists()


def test_the_progress_plot_is_a_png(tmp_path: Path) -> None:
    plot_progress([_record(0, 0.5, None), _record(1, math.nan, 0.5)], tmp_path / "progress.png")
    assert (tmp_path / "progress.png").read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in tmp_path.iterdir()] == ["progress.png"]


def test_metrics_csv_has_one_row_per_epoch_and_a_column_per_class(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path, echo=False)
    history = [_record(0, 0.5, None), _record(1, 0.75, 0.525)]
    for n, record in enumerate(history, start=1):
        log.record_epoch(record, history[:n])
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert list(rows[0]) == [*CSV_COLUMNS, "dice_organ", "dice_tumour"]
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert rows[0]["ema"] == "" and rows[0]["dice_tumour"] == "" and float(rows[1]["dice_organ"]) == 0.75


class RecordingWriter:
    """Stands in for TensorBoard's SummaryWriter: keeps what it is given."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = 0

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1


def test_tensorboard_gets_every_scalar_of_an_epoch_when_installed(tmp_path: Path, monkeypatch) -> None:
    writer = RecordingWriter()
    folders = []
    monkeypatch.setattr(logging, "summary_writer", lambda folder: folders.append(folder) or writer)
    log = TrainingLog(tmp_path, echo=False)
    log.record_epoch(_record(0, 0.5, 0.5), [_record(0, 0.5, 0.5)])
    log.record_epoch(_record(1, 0.6, 0.51), [_record(0, 0.5, 0.5), _record(1, 0.6, 0.51)])
    assert folders == [tmp_path / "tensorboard"] and writer.flushes == 2
    tags = {tag for tag, _, step in writer.scalars if step == 1}
    assert tags == {"loss/train", "loss/val", "pseudo_dice/mean", "pseudo_dice/ema", "learning_rate",
                    "seconds_per_epoch", "pseudo_dice/organ", "pseudo_dice/tumour"}  # fmt: skip
    assert ("pseudo_dice/organ", 0.6, 1) in writer.scalars


def test_without_tensorboard_nothing_is_written_for_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(logging, "summary_writer", lambda folder: None)
    log = TrainingLog(tmp_path, echo=False)
    log.record_epoch(_record(0, 0.5, 0.5), [_record(0, 0.5, 0.5)])
    assert not (tmp_path / "tensorboard").exists() and log.events is False
