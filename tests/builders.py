"""Builders of tiny datasets on disk, intact or broken in one chosen way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clinix.io.image import Geometry, write_image

SHAPE = (6, 8, 10)
GEOMETRY = Geometry((2.5, 0.75, 0.75), (10.0, -5.0, 3.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def case_arrays(index: int, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A body of value 100+index surrounded by zeros, with labels 1 and 2 inside it."""
    image = np.zeros((channels, *SHAPE), dtype=np.float32)
    image[:, 1:5, 1:7, 2:9] = 100.0 + index
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[2:4, 2:5, 3:6] = 1
    label[2, 3, 4] = 2
    return image, label


def write_nnunet(
    root: Path, cases: int = 3, channels: int = 1, meta: dict[str, Any] | None = None, ending: str = ".nii.gz"
) -> Path:
    """An nnU-Net v2 raw dataset with ``cases`` cases."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for index in range(cases):
        image, label = case_arrays(index, channels)
        for channel in range(channels):
            write_image(root / "imagesTr" / f"case{index:02d}_{channel:04d}{ending}", image[channel], GEOMETRY)
        write_image(root / "labelsTr" / f"case{index:02d}{ending}", label, GEOMETRY, is_label=True)
    content = {
        "channel_names": {str(c): "CT" if c == 0 else f"MR{c}" for c in range(channels)},
        "labels": {"background": 0, "organ": 1, "tumour": 2},
        "numTraining": cases,
        "file_ending": ending,
    }
    content.update(meta or {})
    (root / "dataset.json").write_text(json.dumps(content))
    return root
