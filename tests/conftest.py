"""Fixtures shared by every test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import write_nnunet


@pytest.fixture
def nnunet_dataset(tmp_path: Path) -> Path:
    """A tiny intact nnU-Net v2 dataset: 3 cases, 1 CT channel, labels organ/tumour."""
    return write_nnunet(tmp_path / "Dataset001_Tiny")
