"""Checkpoints: one plain dict, written atomically, read back with ``torch.load(weights_only=True)``.

Keys: ``model`` (the unwrapped network's state_dict), ``optimizer``, ``scaler``
(GradScaler state or None), ``scheduler`` ({"epoch", "lr"}), ``epoch`` (completed epochs), ``best_ema``,
``ema``, ``history`` (one metrics dict per completed epoch), ``rng`` (torch/numpy/python states in plain
form), ``plan`` (plans.json content), ``fold``, ``seed``, ``clinix_version``, ``mirror_axes``. Only
tensors and plain Python values are stored, so loading never runs code (SPEC §6).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinix.errors import ClinixError
from clinix.io.atomic import atomic_path

LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
FINAL = "checkpoint_final.pt"
EPOCH_SNAPSHOTS = "checkpoint_epoch_*.pt"  # --keep-every K: epoch_snapshot(E) every K epochs
CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "scaler",
    "scheduler",
    "epoch",
    "best_ema",
    "ema",
    "history",
    "rng",
    "plan",
    "fold",
    "seed",
    "clinix_version",
    "mirror_axes",
)


def epoch_snapshot(epoch: int) -> str:
    """The file name of the snapshot kept after ``epoch`` completed epochs (``EPOCH_SNAPSHOTS``)."""
    return EPOCH_SNAPSHOTS.replace("*", str(epoch))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a kill never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict of ``path``, loaded with ``weights_only=True``; a ClinixError if unusable.

    ``mmap`` maps the file instead of reading it (inference reads only the weights it needs).
    """
    path = Path(path)
    if not path.is_file():
        raise ClinixError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClinixError(
            f"{path}: cannot be loaded as a clinix checkpoint: not plain data, refused ({first_line[:160]})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:  # OSError: a zip archive cut short
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClinixError(f"{path}: cannot be loaded as a clinix checkpoint ({first_line[:160]})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ClinixError(f"{path}: not a clinix checkpoint (no 'model' entry)")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The global torch, numpy and python random states as a tensor and plain lists."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)],
        "python": [version, list(python_state), gauss_next],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))
