"""Which classes an evaluation scores: labels, BraTS-style regions (unions of labels), the ignore label.

Rules, in order (SPEC §8, nnU-Net reference §1.2 and §7):
- Regions come from ``--regions "WT=1,2,3;TC=2,3;ET=3"``, else from a region dataset's dataset.json (its
  foreground entries, an integer being a one-label region, as nnU-Net), unless ``--classes`` asks for the
  label values instead (the paper's Table 5 scores the non-overlapping classes of BraTS).
- Labels come from ``--labels``, else from dataset.json's classes (or, with ``--classes``, every label
  value of its regions), else (nothing declared anywhere) from the nonzero values found in the references.
- With regions and no ``--labels``, only the regions are scored; with both, the labels come first.
- The ignore label is ``--ignore-label``, else dataset.json's ``"ignore"``; its voxels are left out of every
  count, so it may not be part of a class. Label 0 is the background and is never a class.
dataset.json is read by ``clinix.io.labels``, as by every other stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clinix.errors import ClinixError
from clinix.io.labels import LabelSet


@dataclass(frozen=True)
class ClassSpec:
    """One scored class: a name and the label values whose union forms its mask.

    Attributes:
        name: the key in every report (a dataset.json name, a region name, or the label value as text).
        labels: one value for a label, several for a region.
    """

    name: str
    labels: tuple[int, ...]

    def mask(self, segmentation: np.ndarray) -> np.ndarray:
        """Boolean mask, same shape as ``segmentation``, of the voxels holding one of ``labels``."""
        if len(self.labels) == 1:
            return segmentation == self.labels[0]
        return np.isin(segmentation, self.labels)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels)}


def parse_labels_option(text: str) -> tuple[int, ...]:
    """``"1,2"`` -> ``(1, 2)``."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ClinixError(f"--labels {text!r}: expected integers separated by commas, e.g. 1,2") from None


def parse_regions_option(text: str) -> dict[str, tuple[int, ...]]:
    """``"WT=1,2,3;TC=2,3;ET=3"`` -> ``{"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}``."""
    regions: dict[str, tuple[int, ...]] = {}
    for part in (p.strip() for p in text.split(";")):
        match = re.fullmatch(r"([^=]+)=\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*", part)
        if not match:
            raise ClinixError(f"--regions: cannot read {part!r}; expected NAME=1,2,3;NAME=2,3")
        regions[match.group(1).strip()] = tuple(int(v) for v in match.group(2).split(","))
    return regions


def resolve_classes(
    labels: Sequence[int] | None,
    regions: Mapping[str, Sequence[int]] | None,
    declared: LabelSet | None,
    ignore_label: int | None,
    classes_only: bool = False,
) -> list[ClassSpec] | None:
    """The classes to score, by the module's rules; None means "the nonzero labels in the references"."""
    names = {} if declared is None else {values[0]: name for name, values in declared.entries if len(values) == 1}
    region_specs = [ClassSpec(name, tuple(values)) for name, values in (regions or {}).items()]
    if not region_specs and declared and declared.is_region_based and not classes_only:
        region_specs = [ClassSpec(name, values) for name, values in declared.foreground]
    if labels is None and not region_specs and declared is not None:
        labels = [value for value in declared.label_values if value != 0]
    if labels is not None:
        label_specs = [ClassSpec(names.get(value, str(value)), (value,)) for value in labels]
    elif region_specs:
        label_specs = []
    else:
        return None
    classes = label_specs + region_specs
    _check_classes(classes, ignore_label)
    return classes


def classes_present(segmentations: Sequence[np.ndarray], ignore_label: int | None) -> list[ClassSpec]:
    """One class per nonzero value found in any of ``segmentations``, the ignore label left out."""
    values = np.unique(np.concatenate([np.unique(s) for s in segmentations]))
    return [ClassSpec(str(v), (int(v),)) for v in values if v != 0 and v != ignore_label]


def _check_classes(classes: list[ClassSpec], ignore_label: int | None) -> None:
    if not classes:
        raise ClinixError("no classes to evaluate (--labels and --regions are empty)")
    names = [spec.name for spec in classes]
    if len(set(names)) != len(names):
        raise ClinixError(f"class names must be unique, got {names}")
    for spec in classes:
        if 0 in spec.labels:
            raise ClinixError(f"class {spec.name!r} includes label 0, the background; score foreground labels only")
        if ignore_label is not None and ignore_label in spec.labels:
            raise ClinixError(f"class {spec.name!r} includes the ignore label {ignore_label}")
