"""``clinix predict --part K/N`` and ``--gather``: one folder split over several runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clinix.errors import ClinixError
from clinix.infer.parts import parse_part, part_from_environment, select_part
from tests.infer.test_cli import error_lines, predict, workdir, write_case  # noqa: F401  (workdir: a fixture)


@pytest.mark.parametrize(("text", "part"), [("0/4", (0, 4)), ("3/4", (3, 4)), (" 1/2 ", (1, 2)), (None, None)])
def test_a_part_is_k_of_n(text: str | None, part: tuple[int, int] | None) -> None:
    assert parse_part(text) == part


@pytest.mark.parametrize("text", ["4/4", "1/0", "-1/2", "1-2", "a/b", "1/2/3", ""])
def test_a_bad_part_is_one_clear_error(text: str) -> None:
    with pytest.raises(ClinixError, match=r"--part expects K/N with 0 <= K < N"):
        parse_part(text)


def test_auto_reads_torchrun_then_a_slurm_array() -> None:
    assert part_from_environment({"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    slurm = {"SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert part_from_environment(slurm) == (1, 4)
    with pytest.raises(ClinixError, match="--part auto needs torchrun"):
        part_from_environment({})
    with pytest.raises(ClinixError, match="--part auto needs torchrun"):
        part_from_environment({"RANK": "3", "WORLD_SIZE": "3"})


def test_parts_take_every_nth_case_and_together_all_of_them_once() -> None:
    cases = [f"case_{i}" for i in range(7)]
    parts = [select_part(cases, (k, 3)) for k in range(3)]
    assert parts[0] == ["case_0", "case_3", "case_6"]
    assert sorted(case for part in parts for case in part) == cases


def test_two_parts_predict_the_folder_and_gather_checks_it(workdir: Path, tmp_path: Path) -> None:  # noqa: F811
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    for case_id in ("a", "b", "c"):
        write_case(in_dir, case_id)
    assert predict(workdir, in_dir, out_dir, "--no-tta", "--part", "1/2").exit_code == 0
    assert sorted(p.name for p in out_dir.glob("*.nii.gz")) == ["b.nii.gz"]
    assert predict(workdir, in_dir, out_dir, "--gather").exit_code == 2  # a and c are missing
    assert predict(workdir, in_dir, out_dir, "--no-tta", "--part", "0/2").exit_code == 0
    assert sorted(p.name for p in out_dir.glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    first = json.loads((out_dir / "prediction_summary_part_0_of_2.json").read_text())
    assert first["part"] == [0, 2] and first["cases"] == ["a", "c"] and first["written"] == ["a", "c"]
    gathered = predict(workdir, in_dir, out_dir, "--gather")
    assert gathered.exit_code == 0, gathered.output
    assert re.search(r"│\s*3\s*│\s*3\s*│\s*0\s*│\s*2\s*│", gathered.output)  # cases, done, missing, parts
    rerun = predict(workdir, in_dir, out_dir, "--no-tta", "--part", "0/2")  # finished cases are skipped
    assert json.loads((out_dir / "prediction_summary_part_0_of_2.json").read_text())["skipped"] == ["a", "c"]
    assert rerun.exit_code == 0


def test_gather_names_each_missing_case_and_why(workdir: Path, tmp_path: Path) -> None:  # noqa: F811
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    write_case(in_dir, "good")
    write_case(in_dir, "later")
    (in_dir / "broken_0000.nii.gz").write_bytes(b"not an image")
    assert predict(workdir, in_dir, out_dir, "--no-tta", "--part", "0/2").exit_code == 2  # broken, later
    result = predict(workdir, in_dir, out_dir, "--gather")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 2
    assert lines[0].startswith("error: broken: ") and "gzip" in lines[0]
    assert lines[1] == "error: good: not predicted yet (run its part again)"
