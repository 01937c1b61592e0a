"""Training precision: ``--precision auto|fp32|bf16``, kept by a resumed run, refused where unsupported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import clinix.device
from clinix.checkpoint import FINAL, load_checkpoint
from clinix.cli import app
from clinix.errors import ClinixError
from clinix.train.run import training_precision
from clinix.train.trainer import train_fold
from clinix.workdir import WorkDir
from tests.train.test_trainer import TINY_RUN

CPU = torch.device("cpu")


def pretend_cpu(monkeypatch: pytest.MonkeyPatch, has_bf16: bool, speedup: float = 2.0) -> None:
    monkeypatch.setattr(clinix.device, "cpu_has_bf16", lambda: has_bf16)
    monkeypatch.setattr(clinix.device, "cpu_bf16_speedup", lambda training=False: speedup)


def test_auto_trains_in_bf16_only_where_the_self_check_finds_it_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cpu(monkeypatch, has_bf16=True, speedup=1.6)
    assert training_precision("auto", CPU) is torch.bfloat16
    assert training_precision("fp32", CPU) is None
    pretend_cpu(monkeypatch, has_bf16=True, speedup=1.1)
    assert training_precision("auto", CPU) is None
    pretend_cpu(monkeypatch, has_bf16=False)
    assert training_precision("auto", CPU) is None
    with pytest.raises(ClinixError, match="no bf16 instructions"):
        training_precision("bf16", CPU)


def test_auto_keeps_a_resumed_run_s_precision_where_it_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cpu(monkeypatch, has_bf16=True, speedup=1.1)  # auto alone would say fp32 now
    assert training_precision("auto", CPU, resumed="bf16") is torch.bfloat16
    pretend_cpu(monkeypatch, has_bf16=True, speedup=2.0)
    assert training_precision("auto", CPU, resumed="fp32") is None
    assert training_precision("fp32", CPU, resumed="bf16") is None  # asked for explicitly: as asked
    pretend_cpu(monkeypatch, has_bf16=False)  # resumed on a machine without bf16: decided afresh
    assert training_precision("auto", CPU, resumed="bf16") is None


@pytest.mark.skipif(not clinix.device.cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_a_bf16_run_records_its_precision_and_a_resume_keeps_it(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_fold(workdir, 0, epochs=1, precision="bf16", **TINY_RUN)
    folder = WorkDir(workdir).fold(0)
    assert load_checkpoint(folder / FINAL)["precision"] == "bf16"
    pretend_cpu(monkeypatch, has_bf16=True, speedup=1.0)  # auto would now choose fp32 for a fresh run
    train_fold(workdir, 0, epochs=2, resume=True, **TINY_RUN)
    assert load_checkpoint(folder / FINAL)["precision"] == "bf16"
    assert re.search(r"resuming at epoch 1: .*, cpu, bf16", (folder / "log.txt").read_text())


def test_fp32_runs_record_fp32(workdir: Path) -> None:
    train_fold(workdir, 0, epochs=1, precision="fp32", **TINY_RUN)
    checkpoint = load_checkpoint(WorkDir(workdir).fold(0) / FINAL)
    assert checkpoint["precision"] == "fp32" and checkpoint["scaler"] is None


def test_the_cli_refuses_bf16_on_a_cpu_without_it_before_writing_anything(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pretend_cpu(monkeypatch, has_bf16=False)
    arguments = ["train", "--fold", "0", "--workdir", str(workdir), "--device", "cpu", "--precision", "bf16"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "no bf16 instructions" in result.output
    assert not WorkDir(workdir).fold(0).exists()


def test_the_cli_refuses_an_unknown_precision(workdir: Path) -> None:
    arguments = ["train", "--fold", "0", "--workdir", str(workdir), "--device", "cpu", "--precision", "fp8"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2 and "unknown precision 'fp8'" in result.output


def test_the_training_self_check_is_measured_once_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINIX_CACHE_DIR", str(tmp_path))
    measured = []
    monkeypatch.setattr(clinix.device, "_measure_bf16_speedup", lambda training: measured.append(training) or 1.5)
    clinix.device.cpu_bf16_speedup.cache_clear()
    try:
        assert clinix.device.cpu_bf16_speedup(training=True) == 1.5
        clinix.device.cpu_bf16_speedup.cache_clear()  # a new process: the file answers
        assert clinix.device.cpu_bf16_speedup(training=True) == 1.5
        assert measured == [True] and (tmp_path / clinix.device.BF16_TRAINING_FILE).is_file()
    finally:
        clinix.device.cpu_bf16_speedup.cache_clear()
