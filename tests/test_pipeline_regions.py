"""The whole CLI chain on the tiny BraTS-like phantom, in both layouts: nnU-Net's region form (sigmoid outputs,
one per region) and the Decathlon's Task01 (4D NIfTI, classes), evaluated as WT / TC / ET."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from clinix.cli import app
from clinix.cli.plan import plan_table
from clinix.io.image import read_label
from clinix.plan.model import load_plan

runner = CliRunner()
TRAIN = ("--epochs", "1", "--iters", "2", "--val-iters", "1", "--fast-validation", "-j", "1")
REGIONS = "WT=1,2,3;TC=2,3;ET=3"


def run(*arguments: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in arguments])
    assert result.exit_code == 0, f"clinix {' '.join(map(str, arguments))}\n{result.output}"
    return result.stdout


def chain(root: Path, layout: str) -> Path:
    data, work, predictions = root / "brats", root / "work", root / "predictions"
    run("phantom", data, "--kind", "brats", "--layout", layout, "--cases", "4", "--test-cases", "1", "--size", "tiny")
    run("validate", data, "-j", "1")
    run("plan", data, "-w", work, "--device", "cpu", "-j", "1")
    run("preprocess", "-w", work, "-j", "1")
    run("train", "--fold", "all", "-w", work, *TRAIN)
    run("predict", data / "imagesTs", predictions, "-w", work, "--no-tta", "--save-probabilities")
    return root


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chain(tmp_path_factory.mktemp("regions"), "nnunet")


@pytest.fixture(scope="module")
def decathlon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chain(tmp_path_factory.mktemp("decathlon"), "msd")


def test_a_region_dataset_plans_one_sigmoid_output_per_region(regions: Path) -> None:
    plan = load_plan(regions / "work")
    assert plan.labels.activation == "sigmoid"
    assert plan.network["num_classes"] == 3 and plan.num_channels == 4
    assert [n.scheme for n in plan.normalization] == ["zscore"] * 4  # MRI, inside the brain
    assert all(n.use_nonzero_mask for n in plan.normalization)  # the skull-stripped background is cut
    console = Console(record=True)
    console.print(plan_table(plan))
    caption = " ".join(console.export_text().split())  # the caption wraps to the table's width
    assert "3 sigmoid outputs (regions whole_tumor, tumor_core, enhancing_tumor)" in caption


def test_region_training_logs_a_pseudo_dice_per_region(regions: Path) -> None:
    record = json.loads((regions / "work" / "results" / "3d_fullres" / "fold_all" / "metrics.jsonl").read_text())
    assert set(record["pseudo_dice"]) == {"whole_tumor", "tumor_core", "enhancing_tumor"}


def test_region_predictions_are_label_maps_and_their_probabilities_are_per_region(regions: Path) -> None:
    labels, _ = read_label(regions / "predictions" / "brats_004.nii.gz")
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    saved = np.load(regions / "predictions" / "brats_004.npz")["probabilities"]
    description = json.loads((regions / "predictions" / "brats_004.json").read_text())
    assert description["class_names"] == ["whole_tumor", "tumor_core", "enhancing_tumor"]
    assert saved.shape == (3, *labels.shape)
    assert saved.min() >= 0 and saved.max() <= 1  # sigmoids, not a partition of unity


def test_region_evaluation_reports_wt_tc_et_by_default_and_the_classes_on_request(regions: Path) -> None:
    run("evaluate", regions / "predictions", regions / "brats" / "labelsTs", "-j", "1")
    summary = json.loads((regions / "predictions" / "summary.json").read_text())
    assert [c["name"] for c in summary["classes"]] == ["whole_tumor", "tumor_core", "enhancing_tumor"]
    predicted, _ = read_label(regions / "predictions" / "brats_004.nii.gz")
    reference, _ = read_label(regions / "brats" / "labelsTs" / "brats_004.nii.gz")
    for entry, values in zip(summary["classes"], ([1, 2, 3], [2, 3], [3]), strict=True):
        p, r = np.isin(predicted, values), np.isin(reference, values)
        expected = 2 * (p & r).sum() / (p.sum() + r.sum()) if p.any() or r.any() else None
        assert entry["labels"] == values
        if expected is not None:
            assert summary["per_class"][entry["name"]]["mean"]["DSC"] == pytest.approx(expected)
    run("evaluate", regions / "predictions", regions / "brats" / "labelsTs", "--classes", "-j", "1")
    summary = json.loads((regions / "predictions" / "summary.json").read_text())
    assert [c["labels"] for c in summary["classes"]] == [[1], [2], [3]]


def test_the_decathlon_layout_trains_its_classes_from_4d_images(decathlon: Path) -> None:
    plan = load_plan(decathlon / "work")
    assert plan.labels.activation == "softmax" and plan.network["num_classes"] == 4
    assert plan.dataset["channel_names"] == ["FLAIR", "T1w", "t1gd", "T2w"]
    labels, _ = read_label(decathlon / "predictions" / "BRATS_005.nii.gz")
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    run("evaluate", decathlon / "predictions", decathlon / "brats" / "labelsTs", "--regions", REGIONS, "-j", "1")
    summary = json.loads((decathlon / "predictions" / "summary.json").read_text())
    assert [c["name"] for c in summary["classes"]] == ["WT", "TC", "ET"]
