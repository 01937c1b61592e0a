"""Which postprocessing (clinix.postprocess) the cross-validation predictions support.

Tried in order on every cross-validation case, each step on the result of the ones kept before it:

1. all foreground together, largest component only (only with more than one class or region);
2. per class or region: the largest component only, or components under a volume removed, the threshold
   chosen among the geometric means of consecutive component volumes seen in the predictions (at most
   ``MAX_THRESHOLDS`` of them, at quantiles);

A step is kept only when it raises the pooled mean DSC (the mean over classes of the per-case means, as
``clinix evaluate``) and lowers no class, by more than ``EPSILON``. The chosen rules are then applied to
every case once more and checked against the unprocessed predictions; a per-class rule that lowers
another class (regions overlap) is dropped. Per-class effects are computed from each component's size
and overlap with the reference, so the thresholds cost no relabelling.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from clinix.io.image import read_label
from clinix.metrics.classes import ClassSpec
from clinix.postprocess import ComponentRule, Postprocessing, components

EPSILON = 1e-6
MAX_THRESHOLDS = 64
Counts = dict[str, tuple[int, int, int]]  # class -> (TP, predicted voxels, reference voxels)


@dataclasses.dataclass
class _Components:
    """One class of one case: its components' voxel counts and reference overlaps, the reference size."""

    sizes: np.ndarray
    overlaps: np.ndarray
    reference: int
    voxel_mm3: float

    def counts(self, removed: np.ndarray | None = None) -> tuple[int, int, int]:
        if removed is None:
            return int(self.overlaps.sum()), int(self.sizes.sum()), self.reference
        kept = ~removed
        return int(self.overlaps[kept].sum()), int(self.sizes[kept].sum()), self.reference


def decide_postprocessing(
    cases: list[tuple[Path, Path]], classes: list[ClassSpec], ignore_label: int | None
) -> Postprocessing:
    """The rules for ``cases`` (prediction, reference label map), with the evidence in ``evidence``."""
    foreground = tuple(sorted({label for spec in classes for label in spec.labels}))
    chosen = Postprocessing(foreground_labels=foreground)
    candidate = dataclasses.replace(chosen, foreground_largest=True)
    steps = [chosen, candidate] if len(classes) > 1 else [chosen]
    per_step: list[list[Counts]] = [[] for _ in steps]
    for pair in _read(cases):  # one read of every case for the baseline and the foreground step
        for counts, step in zip(per_step, steps, strict=True):
            counts.append(_counts(pair, classes, ignore_label, step))
    baseline = _class_means(per_step[0])
    evidence: dict[str, Any] = {"cases": len(cases), "baseline": _report(baseline), "tried": []}
    current = baseline
    if len(steps) > 1:
        means = _class_means(per_step[1])
        kept = _improves(means, current)
        evidence["tried"].append({"step": "foreground largest", **_report(means), "kept": kept})
        if kept:
            chosen, current = candidate, means
    per_class = _component_tables(cases, classes, ignore_label, chosen)
    before_rules, rules = current, []
    for spec in classes:
        rule, means = _best_class_rule(spec, per_class[spec.name], current)
        evidence["tried"].append({"step": f"{spec.name}: {rule.describe() if rule else 'nothing better'}"})
        if rule is not None:
            rules.append((rule, means[spec.name] - current[spec.name]))
            current = means
    final = before_rules
    while rules:  # regions overlap: check the whole chain against the baseline, drop the weakest rule
        candidate = dataclasses.replace(chosen, rules=tuple(rule for rule, _ in rules))
        means = _class_means(_counts(pair, classes, ignore_label, candidate) for pair in _read(cases))
        if _improves(means, baseline):
            chosen, final = candidate, means
            break
        rules.remove(min(rules, key=lambda item: item[1]))
    evidence["postprocessed"] = _report(final)
    return dataclasses.replace(chosen, evidence=evidence)


Pair = tuple[np.ndarray, np.ndarray, tuple[float, ...]]  # prediction, reference (Z, Y, X), spacing in mm


def _read(cases: list[tuple[Path, Path]]) -> Iterator[Pair]:
    for prediction, reference in cases:
        ref, geometry = read_label(reference)
        pred, _ = read_label(prediction)
        yield pred, ref, geometry.spacing


def _annotated(ref: np.ndarray, ignore_label: int | None) -> np.ndarray | None:
    return None if ignore_label is None else ref != ignore_label


def _counts(
    pair: Pair,
    classes: list[ClassSpec],
    ignore_label: int | None,
    postprocessing: Postprocessing,
) -> Counts:
    pred, ref, spacing = pair
    pred = postprocessing.apply(pred, spacing)
    annotated = _annotated(ref, ignore_label)
    counts = {}
    for spec in classes:
        p, r = spec.mask(pred), spec.mask(ref)
        if annotated is not None:
            p, r = p & annotated, r & annotated
        counts[spec.name] = (int(np.count_nonzero(p & r)), int(np.count_nonzero(p)), int(np.count_nonzero(r)))
    return counts


def _dsc(tp: int, predicted: int, reference: int) -> float:
    return 2 * tp / (predicted + reference) if predicted + reference else math.nan


def _class_means(per_case: Iterator[Counts] | list[Counts]) -> dict[str, float]:
    """Class -> mean DSC over the cases where it is defined; ``"mean"``: the mean over classes."""
    values: dict[str, list[float]] = {}
    for counts in per_case:
        for name, triple in counts.items():
            values.setdefault(name, []).append(_dsc(*triple))
    means = {name: _nanmean(dscs) for name, dscs in values.items()}
    means["mean"] = _nanmean(list(means.values()))
    return means


def _nanmean(values: list[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return sum(finite) / len(finite) if finite else math.nan


def _improves(means: dict[str, float], reference: dict[str, float]) -> bool:
    """Higher mean over classes, and no class lower (both by more than EPSILON)."""
    if not math.isfinite(means["mean"]) or means["mean"] <= _finite(reference["mean"]) + EPSILON:
        return False
    return all(_finite(means[name]) >= _finite(value) - EPSILON for name, value in reference.items())


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _report(means: dict[str, float]) -> dict[str, Any]:
    return {
        "mean_dsc": round(means["mean"], 6) if math.isfinite(means["mean"]) else None,
        "per_class": {k: round(v, 6) if math.isfinite(v) else None for k, v in means.items() if k != "mean"},
    }


def _component_tables(
    cases: list[tuple[Path, Path]], classes: list[ClassSpec], ignore_label: int | None, chosen: Postprocessing
) -> dict[str, list[_Components]]:
    """Class -> per case, the components of its mask after ``chosen``."""
    tables: dict[str, list[_Components]] = {spec.name: [] for spec in classes}
    for pred, ref, spacing in _read(cases):
        pred, voxel_mm3 = chosen.apply(pred, spacing), float(np.prod(spacing))
        annotated = _annotated(ref, ignore_label)
        for spec in classes:
            mask, reference = spec.mask(pred), spec.mask(ref)
            if annotated is not None:
                mask, reference = mask & annotated, reference & annotated
            ids, sizes = components(mask)
            overlaps = np.bincount(ids[reference], minlength=len(sizes))
            tables[spec.name].append(_Components(sizes[1:], overlaps[1:], int(np.count_nonzero(reference)), voxel_mm3))
    return tables


def _best_class_rule(
    spec: ClassSpec, tables: list[_Components], current: dict[str, float]
) -> tuple[ComponentRule | None, dict[str, float]]:
    """The per-class rule that raises the mean DSC most without lowering this class, or None."""

    def means_with(removed: Callable[[_Components], np.ndarray]) -> dict[str, float]:
        dscs = [_dsc(*table.counts(removed(table))) for table in tables]
        return {**current, spec.name: _nanmean(dscs), "mean": math.nan}

    candidates: list[tuple[ComponentRule, Callable[[_Components], np.ndarray]]] = [
        (ComponentRule(spec.name, spec.labels, "largest"), _all_but_largest)
    ]
    for threshold in _thresholds(tables):
        rule = ComponentRule(spec.name, spec.labels, "min_volume", round(threshold, 3))
        candidates.append((rule, lambda table, t=rule.min_volume_mm3: table.sizes * table.voxel_mm3 < t))
    best: tuple[ComponentRule | None, dict[str, float]] = (None, current)
    for rule, removed in candidates:
        means = means_with(removed)
        means["mean"] = _nanmean([value for name, value in means.items() if name != "mean"])
        if _improves(means, best[1]):
            best = (rule, means)
    return best


def _all_but_largest(table: _Components) -> np.ndarray:
    removed = np.ones(len(table.sizes), dtype=bool)
    if len(table.sizes):
        removed[int(np.argmax(table.sizes))] = False
    return removed


def _thresholds(tables: list[_Components]) -> list[float]:
    """Geometric means of consecutive distinct component volumes (mm³), at most MAX_THRESHOLDS."""
    volumes = np.unique(np.concatenate([table.sizes * table.voxel_mm3 for table in tables] or [np.zeros(0)]))
    if len(volumes) < 2:
        return []
    between = np.sqrt(volumes[:-1] * volumes[1:])
    if len(between) > MAX_THRESHOLDS:
        between = np.quantile(between, np.linspace(0, 1, MAX_THRESHOLDS))
    return [float(value) for value in between]
