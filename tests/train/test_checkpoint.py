"""Checkpoints: atomic torch.save, weights_only loading, random states in plain form."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from clinix.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from clinix.errors import ClinixError


class _NotPlainData:
    """A class torch's weights_only unpickler must refuse to rebuild."""


def test_a_saved_checkpoint_loads_back_with_weights_only(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "ema": None, "rng": capture_rng_state()}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.tensor([0.0, 1.0, 2.0]))
    assert loaded["epoch"] == 2
    assert loaded["ema"] is None
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 2


def test_the_random_states_restore_the_same_draws() -> None:
    state = capture_rng_state()
    first = (torch.rand(2), np.random.rand(2), random.random())
    restore_rng_state(state)
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_the_random_states_survive_weights_only_loading(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "rng": capture_rng_state()})
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(1), np.random.seed(1), random.seed(1)  # move every state away
    loaded = load_checkpoint(tmp_path / "c.pt")["rng"]
    assert len(loaded["numpy"][1]) == 624  # MT19937 keys as a plain list
    restore_rng_state(loaded)
    assert torch.equal(torch.rand(2), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1])
    assert random.random() == expected[2]


def test_a_checkpoint_holding_an_object_is_refused(tmp_path: Path) -> None:
    torch.save({"model": {}, "payload": _NotPlainData()}, tmp_path / "bad.pt")
    with pytest.raises(ClinixError, match="refused"):
        load_checkpoint(tmp_path / "bad.pt")


def test_a_missing_checkpoint_is_a_clinix_error(tmp_path: Path) -> None:
    with pytest.raises(ClinixError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_a_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "epoch": 1})

    def broken_save(obj: object, path: Path) -> None:
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "c.pt", {"model": {}, "epoch": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 1
