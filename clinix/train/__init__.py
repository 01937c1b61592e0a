"""Training (SPEC §6): splits, patch sampling, augmentation, losses, the loop, DDP.

Checkpoint files are read and written by clinix.checkpoint (shared with inference).

Names load lazily, so ``import clinix.train.losses`` (or a sampler worker) does not pull in the trainer.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainingOptions": "clinix.train.trainer",
    "TrainingResult": "clinix.train.trainer",
    "train_fold": "clinix.train.trainer",
    "kfold_splits": "clinix.train.splits",
    "fold_cases": "clinix.train.splits",
    "build_loss": "clinix.train.losses",
    "deep_supervision_weights": "clinix.train.losses",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clinix.train' has no attribute {name!r}")
