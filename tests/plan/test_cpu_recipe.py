"""The CPU plan's rules for real CT: body crop, a voxel budget for the spacing, epochs from minutes,
oversampling from T/W, no drop-path in thin networks."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clinix.plan.cpu_recipe
import clinix.plan.planner
from clinix.cli import app
from clinix.errors import ClinixError, DatasetError
from clinix.plan import PROFILES, make_plan, plan_experiment
from clinix.plan.cpu_recipe import (
    CPU_MAX_MEDIAN_VOXELS,
    SMALL_TARGET_SECONDS,
    cpu_seconds_per_iteration,
    cpu_target_spacing,
    epochs_for_minutes,
    oversampling_for,
)
from tests.plan.test_planner import fingerprint


def with_body_boxes(shape: list[int], spacing: list[float], body: list[list[int]], **kwargs: object):
    """``fingerprint`` whose cases have a body box (as a CT dataset's do)."""
    print_ = fingerprint(shape, spacing, **kwargs)  # type: ignore[arg-type]
    case = dataclasses.replace(print_.cases[0], body_box=body)
    return dataclasses.replace(print_, cases=[case] * len(print_.cases))


CHEST = ([60, 512, 512], [5.0, 0.7, 0.7], [[0, 60], [110, 410], [60, 450]])  # body: 300 × 390 of 512²


def test_a_ct_dataset_planned_for_the_cpu_is_cropped_to_the_body_and_a_gpu_plan_is_not() -> None:
    shape, spacing, body = CHEST
    cpu = make_plan(with_body_boxes(shape, spacing, body), PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice-trs")
    gpu = make_plan(with_body_boxes(shape, spacing, body), PROFILES["cuda"], 8.0, "mambaclinix", "ce-dice-trs")
    assert (cpu.crop, gpu.crop) == ("body", "nonzero")
    assert gpu.median_shape == shape and gpu.target_spacing == spacing  # nnU-Net's plan, untouched
    # the CPU plan's median case is the body box at the coarsened spacing
    expected = [60, *(round(n * 0.7 / cpu.target_spacing[1]) for n in (300, 390))]
    assert cpu.median_shape == pytest.approx(expected, abs=1)
    explicit = make_plan(
        with_body_boxes(shape, spacing, body), PROFILES["cuda"], 8.0, "mambaclinix", "ce-dice-trs", crop="body"
    )
    assert explicit.crop == "body" and explicit.median_shape == [60, 300, 390]


def test_body_crop_needs_a_ct_channel() -> None:
    mr = fingerprint([40, 200, 200], [1.0, 1.0, 1.0], channels=("T2",))
    with pytest.raises(DatasetError, match="--crop body needs a channel named CT"):
        make_plan(mr, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice-trs", crop="body")
    assert make_plan(mr, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice-trs").crop == "nonzero"


def test_the_cpu_spacing_keeps_the_median_case_within_the_voxel_budget_and_slices_as_they_are() -> None:
    spacing = CHEST[1]
    spacings, shapes = np.array([spacing] * 4), np.array([[60, 300, 390]] * 4, dtype=float)
    coarser = cpu_target_spacing(spacings, shapes, spacing)
    assert coarser[0] == 5.0 and coarser[1] == coarser[2] > 0.7  # in-plane only, both axes alike
    voxels = math.prod(round(n * s / c) for n, s, c in zip(shapes[0], spacing, coarser, strict=True))
    assert 0.95 * CPU_MAX_MEDIAN_VOXELS < voxels <= CPU_MAX_MEDIAN_VOXELS  # coarsened no more than needed
    small = np.array([[40, 80, 80]] * 4, dtype=float)
    assert cpu_target_spacing(spacings, small, spacing) == spacing  # within budget: nnU-Net's spacing
    isotropic = cpu_target_spacing(np.array([[0.8] * 3] * 2), np.array([[400, 400, 400]] * 2, dtype=float), [0.8] * 3)
    assert isotropic[0] == isotropic[1] == isotropic[2] > 0.8
    assert math.prod(round(400 * 0.8 / s) for s in isotropic) <= CPU_MAX_MEDIAN_VOXELS * 1.01


def test_a_cpu_plan_says_why_its_spacing_differs_from_nnunets() -> None:
    shape, spacing, body = CHEST
    plan = make_plan(with_body_boxes(shape, spacing, body), PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice-trs")
    assert any(note.startswith("CPU plan: spacing 5×0.7×0.7 mm coarsened to") for note in plan.notes)


def test_epochs_follow_the_minutes_and_the_estimated_step() -> None:
    plan = make_plan(fingerprint([64, 160, 160], [2.5, 0.8, 0.8]), PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice-trs")
    step = plan.seconds_per_iteration_estimate
    per_epoch = step * 1.2 * (plan.iterations_per_epoch + plan.val_iterations / 3) + 2.0
    assert epochs_for_minutes(plan, 20) == int(1200 // per_epoch)
    assert epochs_for_minutes(plan, 40) in (2 * epochs_for_minutes(plan, 20), 2 * epochs_for_minutes(plan, 20) + 1)
    assert epochs_for_minutes(plan, 0.01) == 1


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0.05, 0.33), (1e-2, 0.33), (1e-3, 0.615), (1e-4, 0.9), (1e-6, 0.9)]
)
def test_oversampling_grows_as_the_target_shrinks(fraction: float, expected: float) -> None:
    print_ = fingerprint([40, 80, 80], [1.0, 1.0, 1.0])
    labels = {name: {**stats, "fraction_mean": fraction} for name, stats in print_.labels.items()}
    labels["organ"]["fraction_mean"] = 0.2  # the smallest target decides
    assert oversampling_for(dataclasses.replace(print_, labels=labels)) == pytest.approx(expected, abs=1e-3)


def test_small_targets_get_a_smaller_cpu_patch_for_more_iterations() -> None:
    def with_target(fraction: float):
        print_ = fingerprint([64, 160, 160], [2.5, 0.8, 0.8])
        labels = {name: {**stats, "fraction_mean": 0.1} for name, stats in print_.labels.items()}
        labels["tumour"]["fraction_mean"] = fraction
        return dataclasses.replace(print_, labels=labels)

    seconds = PROFILES["cpu"].seconds_per_iteration
    assert cpu_seconds_per_iteration(with_target(5e-3), seconds) == seconds
    assert cpu_seconds_per_iteration(with_target(2e-4), seconds) == SMALL_TARGET_SECONDS
    # a user budget smaller still is kept: the rule only lowers the budget
    assert cpu_seconds_per_iteration(with_target(2e-4), 0.2) == 0.2


def test_a_thin_cpu_network_has_no_drop_path_and_a_gpu_network_keeps_the_papers() -> None:
    print_ = fingerprint([64, 160, 160], [2.5, 0.8, 0.8])
    assert make_plan(print_, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice-trs").network["drop_path_rate"] == 0.0
    assert make_plan(print_, PROFILES["cuda"], 8.0, "mambaclinix", "ce-dice-trs").network["drop_path_rate"] == 0.5


def test_train_minutes_is_refused_when_not_positive_or_on_a_gpu(nnunet_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ClinixError, match="--train-minutes must be a positive number of minutes, not -3"):
        plan_experiment(nnunet_dataset, tmp_path / "w", device="cpu", train_minutes=-3)
    with pytest.raises(ClinixError, match="--train-minutes needs --device cpu"):
        plan_experiment(nnunet_dataset, tmp_path / "w", device="cuda", train_minutes=10)
    result = CliRunner().invoke(app, ["plan", str(nnunet_dataset), "-w", str(tmp_path / "w"), "--device", "cpu",
                                      "--train-minutes", "0"])  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --train-minutes must be a positive number of minutes, not 0"


def test_train_minutes_counts_epochs_in_the_plans_own_measured_step(
    nnunet_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed = []
    original = clinix.plan.cpu_recipe.time_training_steps

    def spy(*args: object, **kwargs: object) -> list[float]:
        timed.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(clinix.plan.cpu_recipe, "time_training_steps", spy)
    plan, _ = plan_experiment(nnunet_dataset, tmp_path / "w", device="cpu", train_minutes=30, workers=1)
    [(arch, network, patch, batch, loss, channels, classes)] = timed  # the plan's own network, loss and patch
    assert (arch, network, patch, batch, loss, channels) == (
        plan.arch, plan.network, plan.patch_size, plan.batch_size, plan.loss, plan.num_channels
    )  # fmt: skip
    assert classes == 3
    assert re.fullmatch(
        rf"--train-minutes 30: {plan.epochs} epochs of {plan.iterations_per_epoch} iterations "
        r"\([\d.]+ s per training step measured on this machine\)",
        plan.notes[-1],
    )
    monkeypatch.setattr(clinix.plan.planner, "measured_step_seconds", lambda plan: 3.0)
    plan, _ = plan_experiment(nnunet_dataset, tmp_path / "w", device="cpu", train_minutes=30, workers=1)
    assert plan.epochs == epochs_for_minutes(plan, 30, 3.0)


def test_the_lesion_phantom_gets_the_whole_cpu_recipe(tmp_path: Path) -> None:
    from clinix.data.lesion import write_lesion_dataset

    dataset = write_lesion_dataset(tmp_path / "data", cases=4, test_cases=0, size="tiny")
    plan, _ = plan_experiment(dataset, tmp_path / "work", device="cpu", workers=1)
    assert plan.crop == "body"
    assert plan.seconds_per_iteration_budget == SMALL_TARGET_SECONDS  # lesions are T/W 1e-5..1e-3
    assert plan.foreground_oversampling > 0.6  # T/W about 3e-4 in the tiny phantom
    assert plan.batch_dice  # per-sample Dice collapses to "no lesion" in short runs
    assert plan.network["drop_path_rate"] == 0.0
