"""A case too large for memory is refused from its header, before any voxel is read; ``--profile``."""

from __future__ import annotations

from pathlib import Path

import pytest

import clinix.infer.memory
from clinix.infer.memory import FLOAT, RESIDENT_BYTES, memory_problem, prediction_peak_bytes
from tests.infer.test_cli import error_lines, predict, workdir, write_case  # noqa: F401 (fixture)
from tests.infer.test_predictor import tiny_plan

HUGE = (1000, 1024, 1024)


def header_only(folder: Path, case_id: str, shape: tuple[int, int, int] = HUGE) -> Path:
    """A MetaImage header of a ``shape`` int16 CT whose data file does not exist: only a header read works."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case_id}_0000.mhd"
    z, y, x = shape
    path.write_text(
        f"ObjectType = Image\nNDims = 3\nDimSize = {x} {y} {z}\nElementSpacing = 0.5 0.5 0.5\n"
        f"ElementType = MET_SHORT\nElementDataFile = {case_id}.raw\n"
    )
    return path


def test_the_estimate_is_the_largest_of_the_three_phases() -> None:
    plan = tiny_plan(target_spacing=(1.0, 1.0, 1.0))  # 3 classes
    n = 10 * 20 * 30
    # same spacing: restoring (3 float32 maps on the plan's grid, 11 bytes per input voxel) is the peak
    assert prediction_peak_bytes((10, 20, 30), (1.0, 1.0, 1.0), 1, plan) == RESIDENT_BYTES + FLOAT * 3 * n + 11 * n
    # saving probabilities adds a float32 map per class on the input grid
    with_maps = prediction_peak_bytes((10, 20, 30), (1.0, 1.0, 1.0), 1, plan, save_probabilities=True)
    assert with_maps - prediction_peak_bytes((10, 20, 30), (1.0, 1.0, 1.0), 1, plan) == FLOAT * 3 * n
    # a plan grid 8 times finer: the sliding window's accumulator dominates
    fine = prediction_peak_bytes((10, 20, 30), (2.0, 2.0, 2.0), 1, plan)
    assert fine == RESIDENT_BYTES + FLOAT * (1 + 3 + 1) * 8 * n


def test_a_case_larger_than_memory_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clinix.infer.memory, "available_memory_bytes", lambda: 8 * 2**30)
    problem = memory_problem(HUGE, (0.5, 0.5, 0.5), 1, tiny_plan())
    assert problem is not None and problem.startswith("predicting this 1000×1024×1024-voxel case needs about ")
    assert problem.endswith("8.0 GB are available; free memory or use a larger machine")
    assert memory_problem((10, 20, 30), (1.0, 1.0, 1.0), 1, tiny_plan()) is None
    monkeypatch.setattr(clinix.infer.memory, "available_memory_bytes", lambda: None)  # not Linux: no check
    assert memory_problem(HUGE, (0.5, 0.5, 0.5), 1, tiny_plan()) is None


def test_predict_refuses_the_huge_case_before_reading_it_and_writes_the_others(
    workdir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clinix.infer.memory, "available_memory_bytes", lambda: 8 * 2**30)
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    huge = header_only(in_dir, "huge")  # its data file is missing: reading it would fail differently
    write_case(in_dir, "small")
    result = predict(workdir, in_dir, out_dir, "--no-tta", "--profile")
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert line.startswith(f"error: huge: {huge}: predicting this 1000×1024×1024-voxel case needs about ")
    assert sorted(p.name for p in out_dir.iterdir()) == ["small.nii.gz"]
    # --profile: one row per stage, seconds summed over the cases
    for stage in ("read", "preprocess", "network", "restore", "write"):
        assert any(row.split("│")[1].strip() == stage for row in result.stdout.splitlines() if "│" in row)
