from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clinix.errors import ClinixError
from clinix.infer.folds import select_fold_checkpoints


def fake_checkpoint(workdir: Path, fold: int | str, kind: str = "final", best_ema: float | None = None) -> Path:
    path = workdir / "results" / "3d_fullres" / f"fold_{fold}" / f"checkpoint_{kind}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "plan": {}, "best_ema": best_ema}, path)
    return path


def folds_of(selected: list[tuple[int | str, Path]]) -> list[int | str]:
    return [fold for fold, _ in selected]


def test_default_takes_every_numbered_fold_with_the_chosen_checkpoint(tmp_path: Path) -> None:
    for fold in (0, 2, 10, "all"):
        fake_checkpoint(tmp_path, fold)
    fake_checkpoint(tmp_path, 1, kind="best")
    assert folds_of(select_fold_checkpoints(tmp_path)) == [0, 2, 10]
    assert folds_of(select_fold_checkpoints(tmp_path, checkpoint="best")) == [1]
    [(fold, path)] = select_fold_checkpoints(tmp_path, "all")
    assert fold == "all" and path == tmp_path / "results/3d_fullres/fold_all/checkpoint_final.pt"


def test_fold_all_alone_is_the_default_when_no_numbered_fold_is_trained(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, "all")
    assert folds_of(select_fold_checkpoints(tmp_path)) == ["all"]


def test_best_is_the_fold_with_the_highest_stored_best_ema(tmp_path: Path) -> None:
    for fold, ema in ((0, 0.71), (1, 0.83), (2, None), (3, 0.80)):
        fake_checkpoint(tmp_path, fold, best_ema=ema)
    fake_checkpoint(tmp_path, "all", best_ema=0.99)  # trained on every case: no held-out score, not a candidate
    assert folds_of(select_fold_checkpoints(tmp_path, "best")) == [1]


def test_no_trained_fold_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(ClinixError) as error:
        select_fold_checkpoints(tmp_path)
    assert str(error.value) == f"no trained fold in {tmp_path}/results/3d_fullres; run 'clinix train'"


def test_a_named_fold_without_the_checkpoint_is_an_error(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 0)
    with pytest.raises(ClinixError, match=r"fold 3 has no checkpoint_final.pt in .*; run 'clinix train --fold 3'"):
        select_fold_checkpoints(tmp_path, [0, 3])
    with pytest.raises(ClinixError, match="--checkpoint must be one of final, best"):
        select_fold_checkpoints(tmp_path, checkpoint="latest")
