"""Which trained folds ``clinix predict`` ensembles (SPEC §1 results layout).

``folds``: None (default) = every numbered ``fold_F`` holding the chosen checkpoint, or ``fold_all`` when
it is the only trained model; ``"all"`` = the ``fold_all`` model; ``"best"`` = the one numbered fold
whose checkpoint stores the highest ``best_ema`` (the best EMA pseudo-Dice of its validation, a proxy:
the folds validate on different cases); a list = exactly those folds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from clinix.checkpoint import load_checkpoint
from clinix.errors import ClinixError
from clinix.workdir import WorkDir

CHECKPOINTS = ("final", "best")
FoldName = int | str  # 0..4 or "all"


def results_dir(workdir: Path) -> Path:
    return WorkDir(workdir).results()


def checkpoint_path(workdir: Path, fold: FoldName, checkpoint: str) -> Path:
    return WorkDir(workdir).checkpoint(fold, checkpoint)


def trained_folds(workdir: Path, checkpoint: str) -> list[FoldName]:
    """Folds that hold ``checkpoint_<checkpoint>.pt``: numbered folds ascending, then ``"all"``."""
    folds = WorkDir(workdir).fold_names()
    return [fold for fold in folds if checkpoint_path(workdir, fold, checkpoint).is_file()]


def select_fold_checkpoints(
    workdir: Path, folds: str | Sequence[FoldName] | None = None, checkpoint: str = "final"
) -> list[tuple[FoldName, Path]]:
    """``(fold, checkpoint file)`` of every model to ensemble (module docstring); ClinixError if none."""
    if checkpoint not in CHECKPOINTS:
        raise ClinixError(f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, not {checkpoint!r}")
    available = trained_folds(workdir, checkpoint)
    numbered = [fold for fold in available if fold != "all"]
    if folds is None:
        chosen: list[FoldName] = numbered or available
        if not chosen:
            raise ClinixError(f"no trained fold in {results_dir(workdir)}; run 'clinix train'")
    elif folds == "best":
        chosen = [_best_fold(workdir, numbered, checkpoint)]
    elif folds == "all":
        chosen = ["all"]
    elif isinstance(folds, str):
        raise ClinixError(f"--folds expects numbers like 0,1,2, 'all' or 'best', not {folds!r}")
    else:
        chosen = list(dict.fromkeys(folds))
    for fold in chosen:
        if fold not in available:
            missing = f"fold {fold} has no checkpoint_{checkpoint}.pt in {results_dir(workdir)}"
            raise ClinixError(f"{missing}; run 'clinix train --fold {fold}'")
    return [(fold, checkpoint_path(workdir, fold, checkpoint)) for fold in chosen]


def _best_fold(workdir: Path, folds: list[FoldName], checkpoint: str) -> FoldName:
    """The fold whose checkpoint stores the highest ``best_ema`` (ties: the lowest fold)."""
    scores = {}
    for fold in folds:
        value = load_checkpoint(checkpoint_path(workdir, fold, checkpoint), mmap=True).get("best_ema")
        if isinstance(value, (int, float)) and math.isfinite(value):
            scores[fold] = float(value)
    if not scores:
        raise ClinixError(
            f"--folds best: no numbered fold in {results_dir(workdir)} has a checkpoint_{checkpoint}.pt "
            "with a best EMA pseudo-Dice; run 'clinix train' or name the folds"
        )
    return max(scores, key=lambda fold: scores[fold])
