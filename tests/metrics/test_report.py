"""summary.json, summary.csv and the on-screen table of one case with a defined and an empty class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from rich.console import Console

from clinix.metrics.case import evaluate_case
from clinix.metrics.classes import ClassSpec
from clinix.metrics.report import summary_table, write_report
from clinix.metrics.summary import CaseResult, EvaluationSummary

# class 1: ref x 0..3, pred x 2..3 -> TP 2, FN 2, DSC 4/6; class 2 is in neither map
REF = [[[1, 1, 1, 1, 0, 0]]]
PRED = [[[0, 0, 1, 1, 0, 0]]]


def _summary(pred=PRED, ref=REF, labels=(1, 2)) -> EvaluationSummary:
    metrics = evaluate_case(np.array(pred), np.array(ref), (1.0, 1.0, 1.0), labels=list(labels))
    case = CaseResult("case1", Path("ref/case1.nii.gz"), Path("pred/case1.nii.gz"), metrics)
    return EvaluationSummary(
        prediction_folder=Path("pred"),
        reference_folder=Path("ref"),
        classes=[ClassSpec(str(label), (label,)) for label in labels],
        cases=[case],
        failed=[],
        missing_predictions=[],
        unmatched_predictions=[],
        allow_missing=False,
        nsd_tolerance_mm=1.0,
        ignore_label=None,
    )


def _refuse_non_json_constant(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_report_writes_json_with_nulls_and_a_csv_beside_it(tmp_path):
    json_path, csv_path = write_report(_summary(), tmp_path / "eval.json")
    assert csv_path == tmp_path / "eval.csv"
    payload = json.loads(json_path.read_text(), parse_constant=_refuse_non_json_constant)
    assert payload["metric_per_case"][0]["metrics"]["1"]["DSC"] == 4 / 6
    assert payload["metric_per_case"][0]["metrics"]["2"]["DSC"] is None
    assert payload["foreground_mean"]["DSC"] == 4 / 6


def test_csv_has_one_row_per_case_and_class_and_empty_cells_for_undefined_values(tmp_path):
    _, csv_path = write_report(_summary(), tmp_path / "summary.json")
    rows = list(csv.DictReader(csv_path.open()))
    assert [(row["case"], row["class"]) for row in rows] == [("case1", "1"), ("case1", "2")]
    assert (float(rows[0]["DSC"]), int(rows[0]["TP"]), int(rows[0]["FN"])) == (4 / 6, 2, 2)
    assert rows[1]["DSC"] == "" and rows[1]["TP"] == "0"


def test_table_shows_each_class_and_the_mean_row():
    console = Console(width=120, record=True)
    console.print(summary_table(_summary()))
    lines = console.export_text().splitlines()
    row_1 = next(line for line in lines if line.startswith("│ 1 "))
    row_mean = next(line for line in lines if line.startswith("│ mean"))
    assert "0.6667" in row_1 and "1/1" in row_1
    assert "0.6667" in row_mean


def test_the_caption_names_missed_and_spurious_structures_lesions_found_and_the_hd95_rule() -> None:
    # class 3 is in the reference only (missed), class 4 in the prediction only (spurious)
    summary = _summary(pred=[[[1, 1, 0, 0, 4, 0]]], ref=[[[1, 1, 3, 0, 0, 0]]], labels=(1, 3, 4))
    assert summary_table(summary).caption == (
        "3: 1 missed, 0 spurious; 4: 0 missed, 1 spurious. "
        "Lesions found (FP per case): 1: 1/1 (0.00); 3: 0/1 (0.00); 4: 0/0 (1.00). "
        "HD95: a structure in only one of the two maps scores the image diagonal in mm"
    )
    assert summary_table(_summary()).caption.startswith("No structure missed or spurious. ")


def test_at_80_columns_every_number_stays_on_one_line():
    summary = _summary(pred=[[[1, 1, 0, 0, 4, 0]]], ref=[[[1, 1, 3, 0, 0, 0]]], labels=(1, 3, 4))
    console = Console(width=80, record=True)
    console.print(summary_table(summary))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    row_3 = next(line for line in lines if line.startswith("│ 3 "))
    assert "0.0000" in row_3 and "6.16" in row_3 and "1/1" in row_3
    assert "3: 0/1 (0.00)" in " ".join(lines)
