"""The 5-fold split: scikit-learn's shuffled KFold (seed 12345) over sorted case ids, stored once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clinix.errors import ClinixError
from clinix.train.splits import (
    fold_cases,
    kfold_splits,
    load_or_create_splits,
    parse_fold,
)
from clinix.workdir import WorkDir

TEN_IDS = [f"case{i}" for i in range(10)]


def _preprocessed_workdir(root: Path, case_ids: list[str]) -> Path:
    """A working folder whose preprocessed folder lists ``case_ids`` (only the .json names matter)."""
    folder = WorkDir(root).preprocessed()
    folder.mkdir(parents=True)
    for case_id in case_ids:
        (folder / f"{case_id}.json").write_text("{}")
    return root


def test_ten_cases_split_as_sklearn_kfold_shuffled_with_seed_12345() -> None:
    # sklearn's KFold(5, shuffle=True, random_state=12345): indices = arange(n), shuffled in place by
    # RandomState(12345).shuffle; fold k validates on the k-th chunk of n // 5 (+1 for the first n % 5).
    # RandomState(12345).permutation(10) = [0 7 3 9 6 4 1 8 5 2], so the chunks are these pairs:
    assert list(np.random.RandomState(12345).permutation(10)) == [0, 7, 3, 9, 6, 4, 1, 8, 5, 2]
    splits = kfold_splits(TEN_IDS)
    assert [split["val"] for split in splits] == [
        ["case0", "case7"],
        ["case3", "case9"],
        ["case4", "case6"],
        ["case1", "case8"],
        ["case2", "case5"],
    ]
    assert splits[0]["train"] == ["case1", "case2", "case3", "case4", "case5", "case6", "case8", "case9"]


def test_seven_cases_give_the_first_two_folds_one_case_more() -> None:
    # RandomState(12345).permutation(7) = [6 3 4 0 1 5 2]; chunk sizes 2, 2, 1, 1, 1
    ids = [f"c{i}" for i in range(7)]
    assert [split["val"] for split in kfold_splits(ids)] == [["c3", "c6"], ["c0", "c4"], ["c1"], ["c5"], ["c2"]]


def test_folds_are_disjoint_cover_every_case_and_ignore_input_order() -> None:
    ids = [f"id{i:02d}" for i in range(23)]
    splits = kfold_splits(list(reversed(ids)))
    vals = [case for split in splits for case in split["val"]]
    assert sorted(vals) == ids
    for split in splits:
        assert sorted(split["train"] + split["val"]) == ids
        assert not set(split["train"]) & set(split["val"])


def test_fewer_cases_than_folds_is_a_clinix_error() -> None:
    with pytest.raises(ClinixError, match="4 cases cannot make 5 folds"):
        kfold_splits(["a", "b", "c", "d"])


def test_splits_are_written_once_with_the_version_and_then_read_back(tmp_path: Path) -> None:
    splits = load_or_create_splits(tmp_path, TEN_IDS)
    written = json.loads((WorkDir(tmp_path).splits).read_text())
    assert written["splits"] == splits
    assert "clinix_version" in written
    assert load_or_create_splits(tmp_path, TEN_IDS[:5]) == splits  # the file wins over new case ids


def test_a_users_bare_list_of_folds_is_respected(tmp_path: Path) -> None:
    workdir = _preprocessed_workdir(tmp_path, ["a", "b", "c"])
    user_splits = [{"train": ["a", "b"], "val": ["c"]}, {"train": ["c"], "val": ["a", "b"]}]
    (WorkDir(workdir).splits).write_text(json.dumps(user_splits))
    assert fold_cases(workdir, 1) == (["c"], ["a", "b"])
    with pytest.raises(ClinixError, match=r"fold 2 does not exist.*folds 0-1"):
        fold_cases(workdir, 2)


def test_fold_all_trains_and_validates_on_every_case(tmp_path: Path) -> None:
    workdir = _preprocessed_workdir(tmp_path, ["b", "a", "c"])
    assert fold_cases(workdir, "all") == (["a", "b", "c"], ["a", "b", "c"])
    assert not (WorkDir(workdir).splits).exists()


def test_fold_cases_writes_the_default_split_of_the_preprocessed_cases(tmp_path: Path) -> None:
    workdir = _preprocessed_workdir(tmp_path, TEN_IDS)
    assert fold_cases(workdir, 0)[1] == ["case0", "case7"]
    assert json.loads((WorkDir(workdir).splits).read_text())["splits"][4]["val"] == ["case2", "case5"]


def test_a_split_naming_cases_that_were_not_preprocessed_is_a_clinix_error(tmp_path: Path) -> None:
    workdir = _preprocessed_workdir(tmp_path, ["a", "b"])
    (WorkDir(workdir).splits).write_text(json.dumps([{"train": ["a"], "val": ["zz"]}]))
    with pytest.raises(ClinixError, match=r"not preprocessed.*zz"):
        fold_cases(workdir, 0)


def test_no_preprocessed_cases_is_a_clinix_error(tmp_path: Path) -> None:
    with pytest.raises(ClinixError, match="run 'clinix preprocess'"):
        fold_cases(tmp_path, 0)


@pytest.mark.parametrize(("text", "fold"), [("0", 0), ("4", 4), (3, 3), ("all", "all"), ("ALL", "all")])
def test_parse_fold_accepts_numbers_and_all(text: str | int, fold: int | str) -> None:
    assert parse_fold(text) == fold


def test_parse_fold_refuses_other_text() -> None:
    with pytest.raises(ClinixError, match="--fold expects"):
        parse_fold("first")
