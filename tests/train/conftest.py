"""Fixtures of the training tests: the tiny planned and preprocessed phantom, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.train.test_trainer import build_tiny_workdir


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_workdir(tmp_path_factory.getbasetemp() / "tiny-training")


@pytest.fixture
def workdir(prepared: Path, tmp_path: Path) -> Path:
    """A copy of ``prepared`` to train in."""
    return Path(shutil.copytree(prepared, tmp_path / "work"))
