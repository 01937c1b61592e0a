"""Pseudo-Dice of the validation iterations and its exponential moving average."""

from __future__ import annotations

import math

import torch

from clinix.train.validation import confusion_counts, mean_dice, pseudo_dice, update_ema


def _logits_predicting(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits ``(1, K, 1, 1, N)`` whose argmax is ``labels``."""
    return torch.nn.functional.one_hot(labels, num_classes).T.float()[None, :, None, None, :]


def test_counts_per_foreground_class_of_the_argmax() -> None:
    predicted = torch.tensor([0, 1, 1, 2, 2, 0])
    target = torch.tensor([0, 1, 2, 2, 1, 1]).reshape(1, 1, 1, 1, 6)
    counts = confusion_counts(_logits_predicting(predicted, 3), target)
    # class 1: tp at 1, fp at 2, fn at 4 and 5; class 2: tp at 3, fp at 4, fn at 2
    assert counts.tolist() == [[1, 1], [1, 1], [2, 1]]


def test_ignored_voxels_count_nowhere() -> None:
    predicted = torch.tensor([1, 1, 0])
    target = torch.tensor([1, 3, 3]).reshape(1, 1, 1, 1, 3)  # label 3 is the ignore label
    counts = confusion_counts(_logits_predicting(predicted, 3), target, ignore_label=3)
    assert counts.tolist() == [[1, 0], [0, 0], [0, 0]]


def test_pseudo_dice_is_2tp_over_2tp_fp_fn_and_nan_for_an_absent_class() -> None:
    counts = torch.tensor([[3, 0, 0], [1, 2, 0], [1, 0, 0]])
    dice = pseudo_dice(counts)
    assert dice[0] == 6 / 8
    assert dice[1] == 0.0  # predicted but never present
    assert math.isnan(dice[2])  # neither predicted nor present


def test_the_mean_skips_nan_classes() -> None:
    assert mean_dice([0.5, math.nan, 0.25]) == 0.375
    assert math.isnan(mean_dice([math.nan, math.nan]))


def test_the_ema_starts_at_the_first_value_then_keeps_nine_tenths() -> None:
    ema = update_ema(None, 0.5)
    assert ema == 0.5
    assert update_ema(ema, 1.0) == 0.9 * 0.5 + 0.1 * 1.0


def test_a_nan_epoch_leaves_the_ema_as_it_was() -> None:
    assert update_ema(0.4, math.nan) == 0.4
    assert update_ema(None, math.nan) is None


def test_region_outputs_count_a_voxel_in_every_region_above_one_half() -> None:
    # 4 voxels with labels 0, 1, 2, 3; regions whole = {1, 2, 3} and core = {2, 3}
    target = torch.tensor([0, 1, 2, 3]).view(1, 1, 1, 1, 4)
    logits = torch.tensor([[1.0, 1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, 1.0]]).view(1, 2, 1, 1, 4)
    counts = confusion_counts(logits, target, regions=[(1, 2, 3), (2, 3)])
    # whole: predicted at voxels 0-2, true at 1-3 -> TP 2 (1, 2), FP 1 (0), FN 1 (3); core: exact -> TP 2
    assert counts.tolist() == [[2, 2], [1, 0], [1, 0]]
