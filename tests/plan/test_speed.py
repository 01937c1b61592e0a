"""The CPU's training speed: measured once, kept in clinix's cache, measured again on request."""

from __future__ import annotations

import json

import pytest
import torch

from clinix.plan import speed


def test_the_speed_is_measured_once_and_kept(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CLINIX_CACHE_DIR", str(tmp_path))
    measured = speed.cpu_training_flops("resunet")
    assert measured > 1e9  # any machine that trains does a GFLOP/s
    stored = json.loads((tmp_path / speed.SPEED_FILE).read_text())
    [entry] = stored.values()
    assert entry["flops_per_second"] == measured and entry["step_seconds"] > 0

    def must_not_measure(arch: str) -> tuple[float, float]:
        raise AssertionError("measured again")

    monkeypatch.setattr(speed, "_measure", must_not_measure)
    assert speed.cpu_training_flops("resunet") == measured
    monkeypatch.setattr(speed, "_measure", lambda arch: (7e9, 0.5))
    assert speed.cpu_training_flops("resunet", recalibrate=True) == 7e9
    assert speed.cpu_training_flops("resunet") == 7e9


def test_the_speed_is_kept_per_family_and_thread_count(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CLINIX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(speed, "_measure", lambda arch: ({"resunet": 5e9, "mambaclinix": 3e9}[arch], 0.5))
    assert (speed.cpu_training_flops("resunet"), speed.cpu_training_flops("mambaclinix")) == (5e9, 3e9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        monkeypatch.setattr(speed, "_measure", lambda arch: (9e9, 0.5))
        assert speed.cpu_training_flops("resunet") == 9e9
    finally:
        torch.set_num_threads(threads)
    assert len(json.loads((tmp_path / speed.SPEED_FILE).read_text())) == 3


def test_a_broken_cache_file_is_measured_over(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CLINIX_CACHE_DIR", str(tmp_path))
    (tmp_path / speed.SPEED_FILE).write_text("{ not json")
    monkeypatch.setattr(speed, "_measure", lambda arch: (4e9, 0.5))
    assert speed.cpu_training_flops("resunet") == pytest.approx(4e9)
