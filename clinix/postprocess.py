"""Connected-component postprocessing of label maps, decided on cross-validation (clinix.crossval).

Two rules, applied in this order to a ``(Z, Y, X)`` label map on the input's grid:

1. ``foreground_largest``: keep only the largest 26-connected component of all foreground labels together
   (nnU-Net's first step); every other foreground voxel becomes background (0).
2. one rule per class or region (its label values): ``largest`` keeps its largest component (nnU-Net's
   second step), ``min_volume`` removes its components smaller than ``min_volume_mm3`` (a rule nnU-Net
   lacks, for lesions: many true components, the spurious ones small). Removed voxels become background.

``postprocessing.json`` holds the rules as plain JSON (``format`` 1) with the evidence they were chosen on.
Components are labelled with scipy.ndimage (26-connectivity, as the lesion metrics count them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from clinix.errors import ClinixError

FORMAT = 1
KEEP_RULES = ("largest", "min_volume")
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connected


@dataclass(frozen=True)
class ComponentRule:
    """What to keep of one class's (or region's) components: its ``largest``, or those ≥ ``min_volume_mm3``."""

    name: str
    labels: tuple[int, ...]
    keep: str
    min_volume_mm3: float | None = None

    def describe(self) -> str:
        if self.keep == "largest":
            return f"{self.name}: largest component only"
        return f"{self.name}: components under {self.min_volume_mm3:g} mm³ removed"

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "labels": list(self.labels), "keep": self.keep}
        if self.keep == "min_volume":
            entry["min_volume_mm3"] = self.min_volume_mm3
        return entry


@dataclass(frozen=True)
class Postprocessing:
    """The rules of the module docstring; ``Postprocessing()`` changes nothing."""

    foreground_largest: bool = False
    foreground_labels: tuple[int, ...] = ()
    rules: tuple[ComponentRule, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_identity(self) -> bool:
        return not self.foreground_largest and not self.rules

    def describe(self) -> str:
        steps = (["foreground: largest component only"] if self.foreground_largest else []) + [
            rule.describe() for rule in self.rules
        ]
        return "; ".join(steps) or "none"

    def apply(self, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """``labels`` ``(Z, Y, X)`` after the rules (a copy when anything changes); ``spacing`` in mm."""
        if self.is_identity:
            return labels
        labels = labels.copy()
        if self.foreground_largest:
            keep_largest(labels, np.isin(labels, self.foreground_labels))
        voxel_mm3 = float(np.prod(spacing))
        for rule in self.rules:
            mask = np.isin(labels, rule.labels)
            if rule.keep == "largest":
                keep_largest(labels, mask)
            else:
                remove_small(labels, mask, rule.min_volume_mm3 / voxel_mm3)
        return labels

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "foreground_largest": self.foreground_largest,
            "foreground_labels": list(self.foreground_labels),
            "rules": [rule.to_json() for rule in self.rules],
            "evidence": self.evidence,
        }

    @classmethod
    def from_json(cls, data: Any, source: str | Path = "postprocessing.json") -> Postprocessing:
        """Parse and check; a ClinixError naming ``source`` for anything but format-1 rules."""
        try:
            if data.get("format") != FORMAT:
                raise ClinixError(f"{source}: postprocessing format {data.get('format')!r}; this clinix reads {FORMAT}")
            rules = tuple(_rule(entry) for entry in data["rules"])
            return cls(
                foreground_largest=bool(data["foreground_largest"]),
                foreground_labels=tuple(int(v) for v in data["foreground_labels"]),
                rules=rules,
                evidence=dict(data.get("evidence", {})),
            )
        except ClinixError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ClinixError(f"{source}: not a clinix postprocessing file ({type(error).__name__}: {error})") from None


def _rule(entry: dict[str, Any]) -> ComponentRule:
    keep = entry["keep"]
    if keep not in KEEP_RULES:
        raise ValueError(f"unknown rule {keep!r}")
    threshold = float(entry["min_volume_mm3"]) if keep == "min_volume" else None
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"min_volume_mm3 must be a non-negative number, got {threshold}")
    return ComponentRule(str(entry["name"]), tuple(int(v) for v in entry["labels"]), keep, threshold)


def load_postprocessing(path: str | Path) -> Postprocessing | None:
    """The rules of ``path``, or None when it does not exist; a ClinixError when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ClinixError(f"{path}: cannot be read as JSON ({error})") from None
    return Postprocessing.from_json(data, path)


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected components of ``mask``: the component ids ``(Z, Y, X)`` (0 outside) and the voxel
    count of each id (index 0: outside)."""
    ids, count = ndimage.label(mask, structure=CONNECTIVITY)
    return ids, np.bincount(ids.ravel(), minlength=count + 1)


def keep_largest(labels: np.ndarray, mask: np.ndarray) -> None:
    """Set the voxels of ``mask`` outside its largest component to 0, in place."""
    ids, sizes = components(mask)
    if len(sizes) > 2:
        largest = int(np.argmax(sizes[1:])) + 1
        labels[mask & (ids != largest)] = 0


def remove_small(labels: np.ndarray, mask: np.ndarray, min_voxels: float) -> None:
    """Set the voxels of ``mask``'s components with fewer than ``min_voxels`` voxels to 0, in place."""
    ids, sizes = components(mask)
    small = sizes < min_voxels
    small[0] = False
    if small.any():
        labels[small[ids]] = 0
