"""The whole CLI chain as a user meets it, on a tiny phantom: every promised file, the input geometry kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from clinix.cli import app

runner = CliRunner()


def run(*arguments: str) -> str:
    result = runner.invoke(app, list(arguments))
    assert result.exit_code == 0, f"clinix {' '.join(arguments)}\n{result.output}"
    return result.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """phantom -> validate -> plan -> preprocess -> train -> predict -> evaluate, in one folder."""
    root = tmp_path_factory.mktemp("pipeline")
    data, work = root / "phantom", root / "work"
    run("phantom", str(data), "--cases", "5", "--test-cases", "2", "--size", "tiny")
    run("validate", str(data), "-j", "1")
    run("plan", str(data), "-w", str(work), "--device", "cpu", "-j", "1")
    run("preprocess", "-w", str(work), "-j", "1")
    run(
        "train",
        "--fold",
        "0",
        "-w",
        str(work),
        "--epochs",
        "2",
        "--iters",
        "2",
        "--val-iters",
        "1",
        "--fast-validation",
        "-j",
        "1",
    )
    run("predict", str(data / "imagesTs"), str(root / "predictions"), "-w", str(work), "--no-tta")
    run("evaluate", str(root / "predictions"), str(data / "labelsTs"), "-j", "1")
    return root


def test_planning_writes_fingerprint_and_plan_with_versions(pipeline: Path) -> None:
    for name in ("fingerprint.json", "plans.json", "splits.json"):
        assert "clinix_version" in json.loads((pipeline / "work" / name).read_text())


def test_preprocessing_writes_three_files_per_case(pipeline: Path) -> None:
    folder = pipeline / "work" / "preprocessed" / "3d_fullres"
    cases = sorted(p.stem for p in folder.glob("*.json"))
    assert len(cases) == 5
    for case in cases:
        assert (folder / f"{case}.npy").is_file()
        assert (folder / f"{case}_seg.npy").is_file()


def test_training_writes_checkpoints_logs_and_validation(pipeline: Path) -> None:
    fold = pipeline / "work" / "results" / "3d_fullres" / "fold_0"
    for name in ("checkpoint_final.pt", "checkpoint_best.pt", "log.txt", "progress.png", "validation/summary.json"):
        assert (fold / name).is_file(), name
    assert len((fold / "metrics.jsonl").read_text().splitlines()) == 2


def test_predictions_keep_the_input_geometry(pipeline: Path) -> None:
    images = sorted((pipeline / "phantom" / "imagesTs").glob("*_0000.nii.gz"))
    assert len(images) == 2
    for image_path in images:
        case = image_path.name.removesuffix("_0000.nii.gz")
        image = sitk.ReadImage(str(image_path))
        prediction = sitk.ReadImage(str(pipeline / "predictions" / f"{case}.nii.gz"))
        assert prediction.GetSize() == image.GetSize()
        assert prediction.GetSpacing() == pytest.approx(image.GetSpacing())
        assert prediction.GetOrigin() == pytest.approx(image.GetOrigin())
        assert prediction.GetDirection() == pytest.approx(image.GetDirection())


def test_evaluation_reports_every_class_of_every_case(pipeline: Path) -> None:
    summary = json.loads((pipeline / "predictions" / "summary.json").read_text())
    assert set(summary["per_class"]) == {"organ", "tumour"}
    assert len(summary["metric_per_case"]) == 2
    assert (pipeline / "predictions" / "summary.csv").is_file()
