"""Write one case's prediction, every file atomically (SPEC §1, §7).

``OUT/CASE<ending>``: the label map with exactly the input's size, spacing, origin and direction.
With probabilities: ``OUT/CASE.npz`` (key ``probabilities``, float16 ``(K, Z, Y, X)`` on the input's grid)
and ``OUT/CASE.json`` (class or region names in channel order, clinix_version). The label map is written last, so
a case whose label map exists is complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinix.io.atomic import atomic_path, write_json
from clinix.io.image import Geometry, write_image


def output_files(out_dir: Path, case_id: str, ending: str, save_probabilities: bool) -> list[Path]:
    """The files a finished case has: the label map, and the probabilities with their description."""
    files = [out_dir / f"{case_id}{ending}"]
    if save_probabilities:
        files += [out_dir / f"{case_id}.npz", out_dir / f"{case_id}.json"]
    return files


def write_probabilities(out_dir: Path, case_id: str, probabilities: np.ndarray, names: list[str]) -> None:
    """``CASE.npz`` with ``probabilities`` ``(K, Z, Y, X)`` as float16, and ``CASE.json`` naming the channels
    (``names``: the classes, background first, or the regions: ``LabelSet.output_names``)."""
    with atomic_path(out_dir / f"{case_id}.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, probabilities=probabilities.astype(np.float16))
    write_json(
        out_dir / f"{case_id}.json",
        {"case_id": case_id, "class_names": names, "shape": list(probabilities.shape)},
    )


def write_label_map(out_dir: Path, case_id: str, ending: str, labels: np.ndarray, geometry: Geometry) -> Path:
    """``CASE<ending>`` from ``(Z, Y, X)`` labels on the input's grid."""
    return write_image(out_dir / f"{case_id}{ending}", labels, geometry, is_label=True)
