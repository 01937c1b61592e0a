"""``clinix crossval`` and ``clinix train --validate-only`` on the tiny phantom split in two folds."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clinix.cli import app
from clinix.crossval import crossval, train_and_validate
from clinix.errors import ClinixError
from clinix.io.atomic import write_json
from clinix.postprocess import load_postprocessing
from clinix.train import TrainingOptions
from clinix.workdir import WorkDir
from tests.crossval.conftest import SPLITS, two_fold_workdir
from tests.train.test_trainer import TINY_RUN

runner = CliRunner()


def test_every_case_is_predicted_once_by_the_fold_that_did_not_train_on_it(folds: Path) -> None:
    result = crossval(folds, workers=1)
    out = WorkDir(folds).crossval()
    cases = sorted(case for split in SPLITS for case in split["val"])
    assert sorted(p.name.removesuffix(".nii.gz") for p in out.glob("*.nii.gz")) == cases
    assert sorted(p.stem for p in out.glob("*.npz")) == cases  # the saved probabilities travel along
    assert sorted(case.case_id for case in result.pooled.cases) == cases
    for fold, split in enumerate(SPLITS):
        assert sorted(case.case_id for case in result.folds[fold].cases) == split["val"]
        fold_summary = json.loads((WorkDir(folds).validation(fold) / "summary.json").read_text())
        assert result.folds[fold].foreground_mean["DSC"] == pytest.approx(fold_summary["foreground_mean"]["DSC"])


def test_the_summary_holds_pooled_values_and_mean_and_std_over_folds(folds: Path) -> None:
    crossval(folds, workers=1)
    report = json.loads((WorkDir(folds).crossval() / "crossval.json").read_text())
    per_fold = [report["per_fold"][str(fold)]["per_class"]["organ"]["DSC"] for fold in (0, 1)]
    spread = report["over_folds"]["organ"]["DSC"]
    assert spread["mean"] == pytest.approx(np.mean(per_fold))
    assert spread["std"] == pytest.approx(np.std(per_fold))
    pooled = json.loads((WorkDir(folds).crossval() / "summary.json").read_text())
    assert len(pooled["metric_per_case"]) == 5
    case_dsc = [case["metrics"]["organ"]["DSC"] for case in pooled["metric_per_case"]]
    assert report["pooled"]["per_class"]["organ"]["DSC"] == pytest.approx(np.mean(case_dsc))
    assert set(report["over_folds"]) == {"organ", "tumour", "mean"}


def test_the_cli_prints_the_table_and_exits_0(folds: Path) -> None:
    result = runner.invoke(app, ["crossval", "-w", str(folds), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "cross-validation: folds 0, 1; 5 cases" in result.output
    assert "fold 0 (2)" in result.output and "fold 1 (3)" in result.output  # the per-fold table
    assert "±" in result.output and "organ" in result.output
    decision = load_postprocessing(WorkDir(folds).postprocessing())  # decided on the merged predictions
    assert decision is not None and decision.evidence["cases"] == 5
    assert f"postprocessing: {decision.describe()}" in " ".join(result.output.split())


def test_an_unfinished_fold_is_left_out_and_named(folds: Path) -> None:
    shutil.copytree(WorkDir(folds).fold(1), WorkDir(folds).fold(2))
    WorkDir(folds).checkpoint(2, "final").unlink()
    result = runner.invoke(app, ["crossval", "-w", str(folds), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "not finished, left out: fold 2" in result.output


def test_no_finished_fold_is_one_line_naming_the_command(tmp_path: Path) -> None:
    workdir = two_fold_workdir(tmp_path)
    result = runner.invoke(app, ["crossval", "-w", str(workdir)])
    assert result.exit_code == 2
    assert "no finished fold" in result.output and "clinix train --fold 0" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_fold_without_its_validation_names_the_fix_and_validate_only_provides_it(folds: Path) -> None:
    shutil.rmtree(WorkDir(folds).validation(1))
    with pytest.raises(ClinixError, match=r"fold 1: no full validation .*clinix train --fold 1 --validate-only"):
        crossval(folds, workers=1)
    before = WorkDir(folds).checkpoint(1, "final").stat().st_mtime_ns
    result = runner.invoke(app, ["train", "-f", "1", "-w", str(folds), "--device", "cpu", "--validate-only",
                                 "--fast-validation", "--save-probabilities"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert WorkDir(folds).checkpoint(1, "final").stat().st_mtime_ns == before  # nothing trained
    assert len(list(WorkDir(folds).validation(1).glob("*.npz"))) == 3
    assert math.isfinite(crossval(folds, workers=1).pooled.foreground_mean["DSC"])


def test_validate_only_without_a_final_checkpoint_is_refused(tmp_path: Path) -> None:
    workdir = two_fold_workdir(tmp_path)
    with pytest.raises(ClinixError, match=r"--validate-only: fold 0 has no checkpoint_final\.pt"):
        train_and_validate(workdir, 0, TrainingOptions(**TINY_RUN), validate_only=True)


@pytest.mark.parametrize("digest", ["plan_digest", "model_digest"])  # preprocessing; network, loss, patch
def test_folds_trained_on_different_plans_are_refused(folds: Path, digest: str) -> None:
    record_path = WorkDir(folds).validation(1) / "validation.json"
    write_json(record_path, {**json.loads(record_path.read_text()), digest: "another"})
    result = runner.invoke(app, ["crossval", "-w", str(folds)])
    assert result.exit_code == 2
    assert "fold 1 was trained on another plan than fold 0" in result.output


def test_a_case_validated_by_two_folds_is_refused(folds: Path) -> None:
    record_path = WorkDir(folds).validation(1) / "validation.json"
    record = json.loads(record_path.read_text())
    write_json(record_path, {**record, "cases": [*record["cases"], "phantom_000"]})
    with pytest.raises(ClinixError, match="case phantom_000 is a validation case of folds 0 and 1"):
        crossval(folds, workers=1)
