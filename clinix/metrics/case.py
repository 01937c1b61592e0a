"""Every metric of one case, on arrays: the per-class record of SPEC §8.

A record holds ``DSC, IoU, recall, precision`` (overlap.py), ``HD95`` in mm and ``NSD`` (surface.py), the
voxel counts ``TP, FP, FN, n_pred, n_ref`` and the lesion counts ``lesions_ref, lesions_found, lesions_pred,
lesions_fp`` with ``lesion_recall`` (lesions.py). Voxels whose reference value is the ignore label are removed
from both masks before anything is counted or measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from clinix.errors import ClinixError
from clinix.metrics.classes import ClassSpec, classes_present, resolve_classes
from clinix.metrics.lesions import LesionCounts, lesion_counts
from clinix.metrics.overlap import ConfusionCounts, confusion_counts, overlap_metrics
from clinix.metrics.surface import surface_metrics

METRIC_NAMES = (
    *("DSC", "IoU", "recall", "precision", "HD95", "NSD", "TP", "FP", "FN", "n_pred", "n_ref"),
    *("lesions_ref", "lesions_found", "lesions_pred", "lesions_fp", "lesion_recall"),
)
DEFAULT_NSD_TOLERANCE_MM = 1.0


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    ignore_label: int | None = None,
    hd95_missing: str = "max",
) -> dict[str, dict[str, float]]:
    """Score a predicted label map against its reference.

    Args:
        pred, ref: integer label maps of one shape, e.g. ``(Z, Y, X)``.
        spacing: voxel size in mm per axis, same axis order as the arrays.
        labels: label values to score (each under its value as text); None with no ``regions``: every
            nonzero value present in ``ref`` or ``pred``.
        regions: name -> label values, each scored as the union of its labels (BraTS WT/TC/ET).
        nsd_tolerance_mm: tolerance of the normalised surface Dice.
        ignore_label: reference value whose voxels are excluded from every metric.
        hd95_missing: HD95 of a structure in only one of the masks: "max" (the image diagonal) or "nan"
            (surface.py).

    Returns:
        class name -> metric name (``METRIC_NAMES``) -> value; NaN where a metric is undefined.
    """
    classes = resolve_classes(labels, regions, None, ignore_label)
    if classes is None:
        classes = classes_present([ref, pred], ignore_label)
    return score_classes(pred, ref, spacing, classes, nsd_tolerance_mm, ignore_label, hd95_missing)


def score_classes(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    classes: Sequence[ClassSpec],
    nsd_tolerance_mm: float,
    ignore_label: int | None,
    hd95_missing: str = "max",
) -> dict[str, dict[str, float]]:
    """``evaluate_case`` for classes already resolved."""
    if pred.shape != ref.shape:
        raise ClinixError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if len(spacing) != ref.ndim:
        raise ClinixError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {ref.ndim}D array")
    kept = ref != ignore_label if ignore_label is not None else None
    scores = {}
    for spec in classes:
        pred_mask, ref_mask = spec.mask(pred), spec.mask(ref)
        if kept is not None:
            pred_mask &= kept
            ref_mask &= kept
        counts = confusion_counts(pred_mask, ref_mask)
        surface = surface_metrics(pred_mask, ref_mask, spacing, nsd_tolerance_mm, hd95_missing)
        scores[spec.name] = _record(counts, surface, lesion_counts(pred_mask, ref_mask))
    return scores


def absent_class_record() -> dict[str, float]:
    """The record of a class found in neither mask: zero counts, every ratio and distance NaN."""
    return _record(ConfusionCounts(0, 0, 0), {"HD95": float("nan"), "NSD": float("nan")}, LesionCounts(0, 0, 0, 0))


def _record(counts: ConfusionCounts, surface: dict[str, float], lesions: LesionCounts) -> dict[str, float]:
    return {**overlap_metrics(counts), **surface, **counts.to_json(), **lesions.to_json()}
