"""The run's files: metrics.jsonl lines, log.txt lines, progress.png."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from clinix.train.logging import METRICS_FILE, TrainingLog, epoch_summary, json_line, plot_progress

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
