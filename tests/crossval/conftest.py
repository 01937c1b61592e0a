"""Fixtures of the cross-validation tests: the tiny phantom split in two folds, both trained and validated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clinix.crossval import train_and_validate
from clinix.io.atomic import write_json
from clinix.train import TrainingOptions
from clinix.workdir import WorkDir
from tests.train.test_trainer import TINY_RUN, build_tiny_workdir

SPLITS = [
    {"train": ["phantom_002", "phantom_003", "phantom_004"], "val": ["phantom_000", "phantom_001"]},
    {"train": ["phantom_000", "phantom_001"], "val": ["phantom_002", "phantom_003", "phantom_004"]},
]


def two_fold_workdir(root: Path) -> Path:
    """The tiny preprocessed phantom with a 2-fold ``splits.json``; nothing trained."""
    prepared = build_tiny_workdir(root.parent / "tiny-training")
    workdir = Path(shutil.copytree(prepared, root / "work"))
    write_json(WorkDir(workdir).splits, {"splits": SPLITS})
    return workdir


@pytest.fixture(scope="session")
def trained_folds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both folds trained (3 epochs × 2 iterations) and validated without TTA, probabilities saved."""
    workdir = two_fold_workdir(tmp_path_factory.mktemp("two-folds"))
    for fold in (0, 1):
        train_and_validate(workdir, fold, TrainingOptions(**TINY_RUN), tta=False, save_probabilities=True)
    return workdir


@pytest.fixture
def folds(trained_folds: Path, tmp_path: Path) -> Path:
    """A copy of ``trained_folds`` to change."""
    return Path(shutil.copytree(trained_folds, tmp_path / "work"))
