"""Folders of label maps, through ``evaluate_folders`` and ``clinix evaluate``.

The data: two cases of shape (4, 5, 6), spacing (2, 1, 1) mm. Each reference holds a 2x2x2 box of label 1
(8 voxels). case1's prediction is the same box (DSC 1); case2's is the half x = 1 of it (4 voxels: TP 4,
FN 4, DSC 8/12 = 2/3). The mean DSC over cases is (1 + 2/3) / 2 = 5/6.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from clinix.cli import app
from clinix.errors import DatasetError
from clinix.io.image import Geometry, write_image
from clinix.metrics import evaluate_folders

SHAPE = (4, 5, 6)
SPACING = (2.0, 1.0, 1.0)


def _box(x_stop: int = 3, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[1:3, 1:3, 1:x_stop] = 1
    return label


def _folders(tmp_path, predictions: dict[str, np.ndarray] | None = None, pred_spacing=SPACING):
    """ref/ holds case1 and case2; pred/ holds ``predictions`` (default: the two described above)."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for case_id in ("case1", "case2"):
        write_image(ref / f"{case_id}.nii.gz", _box(), Geometry.identity(SPACING), is_label=True)
    if predictions is None:
        predictions = {"case1": _box(), "case2": _box(x_stop=2)}
    for case_id, label in predictions.items():
        write_image(pred / f"{case_id}.nii.gz", label, Geometry.identity(pred_spacing), is_label=True)
    pred.mkdir(exist_ok=True)
    return pred, ref


def _dsc_by_case(summary) -> dict[str, float]:
    return {case.case_id: case.metrics["1"]["DSC"] for case in summary.cases}


def test_folders_are_paired_by_case_id_and_scored(tmp_path):
    summary = evaluate_folders(*_folders(tmp_path), workers=1)
    assert _dsc_by_case(summary) == {"case1": 1.0, "case2": 8 / 12}
    assert summary.foreground_mean["DSC"] == pytest.approx(5 / 6)
    assert summary.problems == [] and summary.warnings == []


def test_worker_processes_give_the_same_scores(tmp_path):
    summary = evaluate_folders(*_folders(tmp_path), workers=2)
    assert _dsc_by_case(summary) == {"case1": 1.0, "case2": 8 / 12}


def test_file_endings_may_differ_between_folders(tmp_path):
    pred, ref = _folders(tmp_path, predictions={"case2": _box(x_stop=2)})
    write_image(pred / "case1.nrrd", _box(), Geometry.identity(SPACING), is_label=True)
    assert _dsc_by_case(evaluate_folders(pred, ref, workers=1)) == {"case1": 1.0, "case2": 8 / 12}


def test_a_missing_prediction_is_a_problem_naming_the_case(tmp_path):
    summary = evaluate_folders(*_folders(tmp_path, predictions={"case1": _box()}), workers=1)
    assert summary.missing_predictions == ["case2"]
    assert [case.case_id for case in summary.cases] == ["case1"]
    assert len(summary.problems) == 1 and summary.problems[0].startswith("case2: no prediction")


def test_allow_missing_scores_a_missing_prediction_as_empty(tmp_path):
    pred, ref = _folders(tmp_path, predictions={"case1": _box()})
    summary = evaluate_folders(pred, ref, workers=1, allow_missing=True)
    assert summary.problems == []
    assert _dsc_by_case(summary) == {"case1": 1.0, "case2": 0.0}
    assert summary.cases[1].prediction_file is None


def test_a_prediction_without_reference_is_a_warning(tmp_path):
    summary = evaluate_folders(*_folders(tmp_path, predictions={"case1": _box(), "case3": _box()}), workers=1)
    assert summary.unmatched_predictions == ["case3"]
    assert summary.warnings[0].startswith("prediction case3 has no reference")


def test_a_shape_mismatch_fails_that_case_and_scores_the_others(tmp_path):
    predictions = {"case1": _box(), "case2": _box(shape=(4, 5, 7))}
    summary = evaluate_folders(*_folders(tmp_path, predictions=predictions), workers=1)
    assert _dsc_by_case(summary) == {"case1": 1.0}
    assert len(summary.problems) == 1 and summary.problems[0].startswith("case2: ")
    assert "shape (4, 5, 7) differs" in summary.problems[0]


def test_a_spacing_mismatch_fails_the_case_and_a_rounding_difference_does_not(tmp_path):
    summary = evaluate_folders(*_folders(tmp_path, pred_spacing=(2.001, 1.0, 1.0)), workers=1)
    assert [case.case_id for case in summary.failed] == ["case1", "case2"]
    assert "spacing" in summary.failed[0].problem
    # |2.00001 - 2| = 1e-5 <= atol 1e-6 + rtol 1e-5 * 2
    summary = evaluate_folders(*_folders(tmp_path / "close", pred_spacing=(2.00001, 1.0, 1.0)), workers=1)
    assert summary.failed == []


def test_dataset_json_beside_the_references_names_the_labels(tmp_path):
    pred, ref = _folders(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    summary = evaluate_folders(pred, ref, workers=1)
    assert list(summary.per_class) == ["liver"]
    assert summary.per_class["liver"].mean["DSC"] == pytest.approx(5 / 6)


def test_dataset_json_ignore_label_removes_those_reference_voxels(tmp_path):
    # case2's prediction adds the column x = 3 (4 voxels); the reference marks that column "ignore"
    pred, ref = _folders(tmp_path, predictions={"case1": _box(), "case2": _box(x_stop=4)})
    labels = {"background": 0, "liver": 1, "ignore": 2}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    assert evaluate_folders(pred, ref, workers=1).cases[1].metrics["liver"]["DSC"] == 16 / 20
    reference = _box()
    reference[1:3, 1:3, 3] = 2
    write_image(ref / "case2.nii.gz", reference, Geometry.identity(SPACING), is_label=True)
    summary = evaluate_folders(pred, ref, workers=1)
    assert summary.ignore_label == 2
    assert (summary.cases[1].metrics["liver"]["FP"], summary.cases[1].metrics["liver"]["DSC"]) == (0, 1.0)


def test_a_declared_label_absent_everywhere_is_undefined_in_every_case(tmp_path):
    summary = evaluate_folders(*_folders(tmp_path), labels=[1, 2], workers=1)
    label_2 = summary.per_class["2"]
    assert math.isnan(label_2.mean["DSC"]) and (label_2.n_undefined["DSC"], label_2.n_both_empty) == (2, 2)
    assert summary.foreground_mean["DSC"] == pytest.approx(5 / 6)


def test_a_folder_without_images_is_a_dataset_error(tmp_path):
    pred, ref = _folders(tmp_path, predictions={})
    with pytest.raises(DatasetError, match="no image files"):
        evaluate_folders(pred, ref, workers=1)


# --- the command line ---------------------------------------------------------------------------------


def _run(*args: str):
    return CliRunner().invoke(app, ["evaluate", *args, "--workers", "1"])


def test_cli_writes_summary_json_and_csv_with_the_expected_dsc(tmp_path):
    pred, ref = _folders(tmp_path)
    result = _run(str(pred), str(ref))
    assert result.exit_code == 0, result.output
    summary = json.loads((pred / "summary.json").read_text())
    assert summary["foreground_mean"]["DSC"] == pytest.approx(5 / 6)
    assert summary["per_class"]["1"]["mean"]["DSC"] == pytest.approx(5 / 6)
    rows = list(csv.DictReader((pred / "summary.csv").open()))
    assert [(row["case"], row["class"], float(row["DSC"])) for row in rows] == [
        ("case1", "1", 1.0),
        ("case2", "1", pytest.approx(2 / 3)),
    ]


def test_cli_out_option_places_both_reports_and_regions_follow_labels(tmp_path):
    pred, ref = _folders(tmp_path)
    out = tmp_path / "reports" / "eval.json"
    result = _run(str(pred), str(ref), "--labels", "1", "--regions", "FG=1,2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert list(json.loads(out.read_text())["per_class"]) == ["1", "FG"]
    assert (tmp_path / "reports" / "eval.csv").is_file() and not (pred / "summary.json").exists()


def test_cli_missing_prediction_exits_2_naming_the_case(tmp_path):
    result = _run(*map(str, _folders(tmp_path, predictions={"case1": _box()})))
    assert result.exit_code == 2
    assert "error: case2: no prediction" in result.output


def test_cli_allow_missing_exits_0_with_dsc_0_for_the_missing_case(tmp_path):
    pred, ref = _folders(tmp_path, predictions={"case1": _box()})
    result = _run(str(pred), str(ref), "--allow-missing")
    assert result.exit_code == 0, result.output
    cases = json.loads((pred / "summary.json").read_text())["metric_per_case"]
    assert [(case["case"], case["metrics"]["1"]["DSC"]) for case in cases] == [("case1", 1.0), ("case2", 0.0)]


def test_cli_shape_mismatch_exits_2_naming_the_case(tmp_path):
    result = _run(*map(str, _folders(tmp_path, predictions={"case1": _box(), "case2": _box(shape=(4, 5, 7))})))
    assert result.exit_code == 2
    assert "error: case2: " in result.output and "shape (4, 5, 7) differs" in result.output


def test_cli_nonexistent_folder_exits_2_with_one_line(tmp_path):
    result = _run(str(tmp_path / "nowhere"), str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: folder not found"]


def test_a_missed_structure_is_counted_and_scores_the_image_diagonal(tmp_path):
    # case1 predicted perfectly (HD95 0), case2 predicted empty: a missed structure
    pred, ref = _folders(tmp_path, {"case1": _box(), "case2": np.zeros(SHAPE, dtype=np.uint8)})
    diagonal = math.sqrt((4 * 2.0) ** 2 + 5**2 + 6**2)
    summary = evaluate_folders(pred, ref, workers=1)
    organ = summary.per_class["1"]
    assert (organ.n_missed, organ.n_spurious) == (1, 0)
    assert organ.mean["HD95"] == pytest.approx(diagonal / 2)  # (0 + diagonal) / 2: the miss counts
    monai = evaluate_folders(pred, ref, workers=1, hd95_missing="nan")
    assert monai.per_class["1"].mean["HD95"] == 0.0 and monai.per_class["1"].n_undefined["HD95"] == 1
    assert monai.per_class["1"].n_missed == 1
    saved = json.loads(json.dumps(summary.to_json()))
    assert saved["per_class"]["1"]["n_missed"] == 1 and saved["settings"]["hd95_missing"] == "max"


def test_a_spurious_structure_is_counted(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    write_image(ref / "case1.nii.gz", np.zeros(SHAPE, dtype=np.uint8), Geometry.identity(SPACING), is_label=True)
    write_image(pred / "case1.nii.gz", _box(), Geometry.identity(SPACING), is_label=True)
    summary = evaluate_folders(pred, ref, labels=[1], workers=1)
    assert (summary.per_class["1"].n_missed, summary.per_class["1"].n_spurious) == (0, 1)


def test_cli_hd95_missing_choices(tmp_path):
    pred, ref = _folders(tmp_path, {"case1": _box(), "case2": np.zeros(SHAPE, dtype=np.uint8)})
    result = CliRunner().invoke(app, ["evaluate", str(pred), str(ref), "--hd95-missing", "nan", "-j", "1"])
    assert result.exit_code == 0
    assert json.loads((pred / "summary.json").read_text())["settings"]["hd95_missing"] == "nan"
    wrong = CliRunner().invoke(app, ["evaluate", str(pred), str(ref), "--hd95-missing", "zero"])
    assert wrong.exit_code == 2
    assert wrong.stderr.strip() == "error: --hd95-missing must be one of max, nan, not 'zero'"
