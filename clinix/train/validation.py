"""Validation during training: the pseudo-Dice of every epoch and its EMA (reference §5.6).

Pseudo-Dice: the full-resolution output's argmax, one-hot; TP, FP and FN per foreground class summed over
every validation batch of the epoch (as if one image), then ``2TP / (2TP + FP + FN)``, NaN for a class
absent from both prediction and target. The epoch's score is the nanmean over foreground classes; its
exponential moving average ``0.9·previous + 0.1·new`` (the first epoch's value itself) picks the best
checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

EMA_MOMENTUM = 0.9


def confusion_counts(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_label: int | None = None,
    regions: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """``(3, F)`` int64: TP, FP, FN per foreground output of logits ``(B, K, Z, Y, X)``.

    Classes: the argmax, F = K − 1. Regions (the values of each of the K regions): each sigmoid output
    above 0.5 (its logit above 0), F = K. ``target`` is the label map ``(B, 1, Z, Y, X)`` or
    ``(B, Z, Y, X)``; voxels with ``ignore_label`` count nowhere.
    """
    labels = target[:, 0] if target.ndim == logits.ndim else target
    annotated = torch.ones_like(labels, dtype=torch.bool) if ignore_label is None else labels != ignore_label
    if regions:
        pairs = [
            (logits[:, r] > 0, torch.isin(labels, torch.tensor(values, device=labels.device)))
            for r, values in enumerate(regions)
        ]
    else:
        predicted = logits.argmax(1)
        pairs = [(predicted == label, labels == label) for label in range(1, logits.shape[1])]
    counts = torch.zeros(3, len(pairs), dtype=torch.int64, device=logits.device)
    for column, (is_predicted, is_target) in enumerate(pairs):
        is_predicted, is_target = is_predicted & annotated, is_target & annotated
        counts[0, column] = (is_predicted & is_target).sum()
        counts[1, column] = (is_predicted & ~is_target).sum()
        counts[2, column] = (~is_predicted & is_target).sum()
    return counts


def pseudo_dice(counts: torch.Tensor) -> list[float]:
    """``2TP / (2TP + FP + FN)`` per class of ``(3, K-1)`` counts; NaN where the denominator is 0."""
    tp, fp, fn = (row.double().tolist() for row in counts)
    return [2 * t / (2 * t + p + n) if 2 * t + p + n > 0 else math.nan for t, p, n in zip(tp, fp, fn, strict=True)]


def mean_dice(per_class: Sequence[float]) -> float:
    """nanmean over classes; NaN when every class is NaN."""
    finite = [value for value in per_class if not math.isnan(value)]
    return sum(finite) / len(finite) if finite else math.nan


def update_ema(previous: float | None, value: float) -> float | None:
    """``0.9·previous + 0.1·value``; the first value starts the average; a NaN value changes nothing."""
    if math.isnan(value):
        return previous
    if previous is None:
        return value
    return EMA_MOMENTUM * previous + (1 - EMA_MOMENTUM) * value
