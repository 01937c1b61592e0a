from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clinix.cli import app
from clinix.errors import CaseFailures, DatasetError
from clinix.io.atomic import write_json
from clinix.preprocess import load_case, preprocess_dataset
from clinix.workdir import WorkDir
from tests.builders import write_nnunet
from tests.preprocess.test_case import make_plan

CASES = ["case00", "case01", "case02"]
# builders: (6, 8, 10) voxels of (2.5, 0.75, 0.75) mm, body box [1,5)x[1,7)x[2,9) -> (4, 6, 7) after crop;
# at (2.5, 1.5, 1.5) mm: round(4, 3, 3.5) = (4, 3, 4)
TARGET_SPACING = (2.5, 1.5, 1.5)
PREPROCESSED_SHAPE = (4, 3, 4)


def planned_workdir(tmp_path: Path, name: str = "work", target_spacing: tuple = TARGET_SPACING) -> Path:
    """A working folder whose plans.json points at a 3-case nnU-Net dataset (written once per tmp_path)."""
    dataset = tmp_path / "Dataset001_Tiny"
    if not dataset.exists():
        write_nnunet(dataset)
    workdir = tmp_path / name
    write_json(workdir / "plans.json", make_plan(target_spacing, dataset_root=str(dataset)).to_json())
    return workdir


def files_of(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((WorkDir(workdir).preprocessed()).iterdir())}


def test_writes_data_seg_and_properties_per_case(tmp_path: Path) -> None:
    workdir = planned_workdir(tmp_path)
    summary = preprocess_dataset(workdir, workers=1)
    assert [c.case_id for c in summary.processed] == CASES and summary.skipped == []
    assert sorted(files_of(workdir)) == sorted(f"{c}{end}" for c in CASES for end in (".json", ".npy", "_seg.npy"))
    data, seg, properties = load_case(workdir, "case01")
    assert isinstance(data, np.memmap) and isinstance(seg, np.memmap)
    assert data.dtype == np.float32 and data.shape == (1, *PREPROCESSED_SHAPE)
    assert seg is not None and seg.dtype == np.int16 and seg.shape == (1, *PREPROCESSED_SHAPE)
    assert properties.shape_after_resampling == list(PREPROCESSED_SHAPE)
    assert '"clinix_version"' in (WorkDir(workdir).preprocessed() / "case01.json").read_text()
    # the body of case01 is 101 HU everywhere: CT-normalised with the plan's mean 100 and std 50
    np.testing.assert_allclose(np.asarray(data), (101.0 - 100.0) / 50.0, rtol=1e-5)


def test_a_second_run_skips_every_finished_case(tmp_path: Path) -> None:
    workdir = planned_workdir(tmp_path)
    preprocess_dataset(workdir, workers=1)
    times = {p.name: p.stat().st_mtime_ns for p in (WorkDir(workdir).preprocessed()).iterdir()}
    summary = preprocess_dataset(workdir, workers=1)
    assert summary.processed == [] and summary.skipped == CASES
    assert {p.name: p.stat().st_mtime_ns for p in (WorkDir(workdir).preprocessed()).iterdir()} == times


def test_overwrite_or_a_changed_plan_redoes_every_case(tmp_path: Path) -> None:
    workdir = planned_workdir(tmp_path)
    preprocess_dataset(workdir, workers=1)
    assert len(preprocess_dataset(workdir, workers=1, overwrite=True).processed) == 3
    planned_workdir(tmp_path, target_spacing=(2.5, 0.75, 0.75))
    summary = preprocess_dataset(workdir, workers=1)
    assert len(summary.processed) == 3
    assert load_case(workdir, "case00")[0].shape == (1, 4, 6, 7)


def test_a_killed_run_resumes_to_the_bytes_of_a_clean_run(tmp_path: Path) -> None:
    clean = planned_workdir(tmp_path, "clean")
    preprocess_dataset(clean, workers=2)  # in worker processes
    killed = planned_workdir(tmp_path, "killed")
    preprocess_dataset(killed, workers=1)
    folder = WorkDir(killed).preprocessed()
    # killed while writing case01: its arrays are in place but not its JSON, a temporary file is left over
    (folder / "case01.json").unlink()
    (folder / ".case01_seg.npy.k1ll3d.tmp").write_bytes(b"half a file")
    summary = preprocess_dataset(killed, workers=1)
    assert [c.case_id for c in summary.processed] == ["case01"]
    assert files_of(killed) == files_of(clean)


def test_an_unreadable_case_fails_with_its_file_name(tmp_path: Path) -> None:
    workdir = planned_workdir(tmp_path)
    (tmp_path / "Dataset001_Tiny" / "imagesTr" / "case02_0000.nii.gz").write_bytes(b"not an image")
    broken = tmp_path / "Dataset001_Tiny" / "imagesTr" / "case02_0000.nii.gz"
    with pytest.raises(CaseFailures) as raised:
        preprocess_dataset(workdir, workers=1)
    [failure] = raised.value.failures
    assert isinstance(failure, DatasetError) and failure.path == broken
    result = CliRunner().invoke(app, ["preprocess", "--workdir", str(workdir), "--workers", "2"])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error")] == [
        f"error: {broken}: not a NIfTI file SimpleITK can read (named .nii.gz, but not gzip-compressed)",
        "error: 1 case(s) failed; 2 of 3 are preprocessed; re-run 'clinix preprocess' once fixed",
    ]


def test_cli_preprocesses_and_summarises(tmp_path: Path) -> None:
    workdir = planned_workdir(tmp_path)
    result = CliRunner().invoke(app, ["preprocess", "--workdir", str(workdir), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "preprocessed 3 cases, skipped 0" in result.stdout
    assert (WorkDir(workdir).preprocessed() / "case02.json").is_file()


def test_cli_without_a_plan_exits_2_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["preprocess", "--workdir", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "plans.json: no plan yet" in result.stderr
