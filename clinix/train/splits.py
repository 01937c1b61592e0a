"""The cross-validation split: 5 folds over the sorted case ids, stored once in ``WORK/splits.json``.

The folds are those of scikit-learn's ``KFold(n_splits=5, shuffle=True, random_state=12345)`` (nnU-Net
reference §1.4), computed here with numpy alone: the indices ``0..n-1`` are shuffled in place by
``np.random.RandomState(12345).shuffle``; fold k validates on the k-th consecutive chunk of that order,
the chunks having ``n // 5`` indices plus one for the first ``n % 5`` folds; within a fold both lists
keep the sorted-id order. A ``splits.json`` the user wrote (any number of folds, as
``{"splits": [...]}`` or as nnU-Net's bare list) is used as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clinix.errors import ClinixError
from clinix.io.atomic import write_json
from clinix.workdir import SPLITS_FILE, WorkDir

SPLIT_SEED = 12345
NUM_FOLDS = 5
ALL_FOLDS = "all"

Fold = int | str  # 0..n-1 or "all"
Split = dict[str, list[str]]  # {"train": [...], "val": [...]}


def parse_fold(text: str | int) -> Fold:
    """``"0"`` -> 0, ``"all"`` -> ``"all"``; anything else is a ClinixError."""
    if isinstance(text, int) or str(text).strip().isdigit():
        return int(text)
    if str(text).strip().lower() == ALL_FOLDS:
        return ALL_FOLDS
    raise ClinixError(f"--fold expects a fold number (0-{NUM_FOLDS - 1}) or 'all', got {text!r}")


def kfold_splits(case_ids: list[str], n_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[Split]:
    """``n_folds`` splits of the sorted ``case_ids``, identical to sklearn's shuffled ``KFold``."""
    ids = sorted(case_ids)
    if len(ids) < n_folds:
        raise ClinixError(
            f"{len(ids)} cases cannot make {n_folds} folds; train with --fold all or write your own {SPLITS_FILE}"
        )
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, len(ids) // n_folds)
    sizes[: len(ids) % n_folds] += 1
    splits = []
    start = 0
    for size in sizes:
        in_val = np.zeros(len(ids), dtype=bool)
        in_val[order[start : start + size]] = True
        start += size
        splits.append(
            {"train": [ids[i] for i in np.flatnonzero(~in_val)], "val": [ids[i] for i in np.flatnonzero(in_val)]}
        )
    return splits


def preprocessed_case_ids(workdir: Path) -> list[str]:
    """The sorted ids of the preprocessed cases (the ``.json`` stems of ``WORK/preprocessed/3d_fullres``)."""
    folder = WorkDir(workdir).preprocessed()
    ids = sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []
    if not ids:
        raise ClinixError(f"{folder}: no preprocessed cases; run 'clinix preprocess' first")
    return ids


def load_or_create_splits(workdir: Path, case_ids: list[str]) -> list[Split]:
    """The splits of ``WORK/splits.json``; written from ``kfold_splits(case_ids)`` when missing."""
    path = WorkDir(workdir).splits
    if path.is_file():
        return _read_splits(path)
    splits = kfold_splits(case_ids)
    write_json(path, {"splits": splits})
    return splits


def _read_splits(path: Path) -> list[Split]:
    try:
        content: Any = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ClinixError(f"{path}: is not valid JSON ({error})") from None
    splits = content.get("splits") if isinstance(content, dict) else content
    if not isinstance(splits, list) or not all(_is_split(split) for split in splits):
        raise ClinixError(f"{path}: expected a list of {{'train': [...], 'val': [...]}} folds")
    return [{"train": list(split["train"]), "val": list(split["val"])} for split in splits]


def _is_split(split: Any) -> bool:
    return isinstance(split, dict) and all(isinstance(split.get(key), list) for key in ("train", "val"))


def fold_cases(workdir: Path, fold: Fold) -> tuple[list[str], list[str]]:
    """``(train ids, val ids)`` of ``fold``; fold ``"all"`` trains and validates on every case.

    Case ids of a user's split that were never preprocessed are a ClinixError (naming a few of them).
    """
    case_ids = preprocessed_case_ids(workdir)
    if fold == ALL_FOLDS:
        return case_ids, case_ids
    splits = load_or_create_splits(workdir, case_ids)
    if not 0 <= int(fold) < len(splits):
        raise ClinixError(f"fold {fold} does not exist: {WorkDir(workdir).splits} defines folds 0-{len(splits) - 1}")
    train, val = splits[int(fold)]["train"], splits[int(fold)]["val"]
    unknown = sorted(set(train + val) - set(case_ids))
    if unknown:
        path = WorkDir(workdir).splits
        raise ClinixError(f"{path}: fold {fold} names cases that are not preprocessed: {unknown[:5]}")
    if not train or not val:
        raise ClinixError(f"{WorkDir(workdir).splits}: fold {fold} has an empty train or val list")
    return train, val
