"""Fixtures shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import write_nnunet


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """clinix's cache (compiled kernels, the CPU's measured speed) in a folder of the test session,
    never the user's: worker processes and ``python -m clinix`` runs inherit it."""
    folder = tmp_path_factory.mktemp("clinix-cache")
    previous = os.environ.get("CLINIX_CACHE_DIR")
    os.environ["CLINIX_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CLINIX_CACHE_DIR", None)
    else:
        os.environ["CLINIX_CACHE_DIR"] = previous


@pytest.fixture
def nnunet_dataset(tmp_path: Path) -> Path:
    """A tiny intact nnU-Net v2 dataset: 3 cases, 1 CT channel, labels organ/tumour."""
    return write_nnunet(tmp_path / "Dataset001_Tiny")
