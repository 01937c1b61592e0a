"""The labels of a dataset, read once from dataset.json and asked by every stage (SPEC §11).

A dataset declares either **classes** (``{"background": 0, "liver": 1, "tumour": 2}``: one value each,
mutually exclusive, trained with softmax outputs) or **regions**, nnU-Net's form for BraTS
(``{"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}`` with
``"regions_class_order": [1, 2, 3]``): every foreground entry is a union of label values (an integer is
a one-value region), regions overlap, and the network has one sigmoid output per region. A label map is
turned back into regions value by value, and a prediction into a label map by writing, region after
region, the value ``regions_class_order`` gives it wherever that region's probability exceeds 0.5: later
regions overwrite earlier ones (nnU-Net). ``"ignore"`` names a value excluded from every loss and metric.
The Decathlon writes ``{"0": "background", "1": "edema"}`` (value to name): classes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clinix.errors import DatasetError

Severity = Literal["error", "warning"]
Finding = tuple[Severity, str]  # a problem of the labels of dataset.json, without the file


@dataclass(frozen=True)
class LabelSet:
    """What every stage needs of a dataset's labels (module docstring).

    Attributes:
        entries: ``(name, values)`` in dataset.json order, the background ``("background", (0,))`` first.
        ignore_label: the value of ``"ignore"``, or None.
        regions_class_order: for a region dataset, the value written for each foreground entry, in order.
    """

    entries: tuple[tuple[str, tuple[int, ...]], ...]
    ignore_label: int | None = None
    regions_class_order: tuple[int, ...] | None = None

    @property
    def is_region_based(self) -> bool:
        """Regions when an entry unites several values (nnU-Net's rule)."""
        return any(len(values) > 1 for _, values in self.entries)

    @property
    def foreground(self) -> list[tuple[str, tuple[int, ...]]]:
        """The entries but the background: the regions, or the classes 1..K-1."""
        return [(name, values) for name, values in self.entries if values != (0,)]

    @property
    def label_values(self) -> list[int]:
        """The values a label map may hold (the ignore label aside), background included."""
        return sorted({0, *(value for _, values in self.entries for value in values)})

    @property
    def num_outputs(self) -> int:
        """Network outputs: one per region (sigmoid), or one per class with the background (softmax)."""
        return len(self.foreground) if self.is_region_based else len(self.label_values)

    @property
    def activation(self) -> Literal["sigmoid", "softmax"]:
        return "sigmoid" if self.is_region_based else "softmax"

    @property
    def output_names(self) -> list[str]:
        """The name of each network output channel, in order (the background first for classes)."""
        if self.is_region_based:
            return [name for name, _ in self.foreground]
        names = {values[0]: name for name, values in self.entries}
        return [names.get(value, str(value)) for value in self.label_values]

    @property
    def regions(self) -> list[tuple[int, ...]]:
        """The values of each region, in output order (empty for a class dataset)."""
        return [values for _, values in self.foreground] if self.is_region_based else []

    def location_keys(self) -> dict[str, list[int]]:
        """The foreground voxels to oversample from: each class, or for regions their union (one key)."""
        if self.is_region_based:
            union = sorted({value for _, values in self.foreground for value in values})
            return {",".join(map(str, union)): union}
        return {str(value): [value] for value in self.label_values if value != 0}

    def region_values(self) -> list[int]:
        """The label value written for each region, in output order (``regions_class_order``): a label
        map is made by writing, region after region, its value where its probability exceeds 0.5."""
        return list(self.regions_class_order or (values[-1] for values in self.regions))

    def to_json(self) -> dict[str, Any]:
        """dataset.json's form: ``{"labels": {name: value or [values]}, "ignore_label", "regions_class_order"}``."""
        labels = {name: values[0] if len(values) == 1 else list(values) for name, values in self.entries}
        return {
            "labels": labels,
            "ignore_label": self.ignore_label,
            "regions_class_order": None if self.regions_class_order is None else list(self.regions_class_order),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelSet:
        """Inverse of ``to_json`` (what plans.json keeps of a dataset)."""
        entries = tuple((str(name), _values(value)) for name, value in data["labels"].items())
        order = data.get("regions_class_order")
        return cls(entries, data.get("ignore_label"), None if order is None else tuple(int(v) for v in order))


def read_label_set(path: str | Path) -> LabelSet:
    """The labels of a dataset.json file; a DatasetError naming the file for the first error in them."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DatasetError(path, "is not valid JSON") from None
    if not isinstance(meta, dict):
        raise DatasetError(path, "must hold a JSON object")
    layout = "msd" if "training" in meta and "channel_names" not in meta else "nnunet"
    label_set, findings = parse_label_set(meta.get("labels"), meta.get("regions_class_order"), layout)
    errors = [message for severity, message in findings if severity == "error"]
    if errors or label_set is None:
        raise DatasetError(path, errors[0] if errors else "has no usable 'labels'")
    return label_set


def parse_label_set(raw: Any, regions_class_order: Any, layout: str) -> tuple[LabelSet | None, list[Finding]]:
    """dataset.json's ``labels`` (and ``regions_class_order``) as a LabelSet, with every problem found."""
    findings: list[Finding] = []
    if not isinstance(raw, dict) or not raw:
        return None, [("error", "'labels' must be a non-empty object")]
    if layout == "msd":
        try:
            raw = {str(name): int(value) for value, name in raw.items()}
        except ValueError:
            return None, [("error", "MSD 'labels' must map integer values to names")]
    elif all(re.fullmatch(r"-?\d+", str(k)) for k in raw) and all(isinstance(v, str) for v in raw.values()):
        return None, [("error", "'labels' maps values to names (v1 style); write {name: value} instead")]
    entries: list[tuple[str, tuple[int, ...]]] = []
    ignore: int | None = None
    for name, value in raw.items():
        try:
            values = _values(value)
        except ValueError:
            findings.append(("error", f"label {name!r} has value {value!r}, expected an integer or a list of them"))
            continue
        if name == "ignore":
            if len(values) != 1:
                findings.append(("error", "the 'ignore' label must be one integer"))
            else:
                ignore = values[0]
        else:
            entries.append((str(name), values))
    entries.sort(key=lambda entry: entry[1] != (0,))  # the background first, dataset.json order otherwise
    label_set = LabelSet(tuple(entries), ignore, _order(regions_class_order, findings))
    findings += _check(label_set)
    return label_set, findings


def _values(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(value)
    return tuple(int(v) for v in values)


def _order(raw: Any, findings: list[Finding]) -> tuple[int, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        findings.append(("error", f"'regions_class_order' must be a list of integers, found {raw!r}"))
        return None
    return tuple(raw)


def _check(labels: LabelSet) -> list[Finding]:
    """The rules a set of labels must follow (classes and regions alike, then each kind's own)."""
    findings: list[Finding] = []
    if ("background", (0,)) not in labels.entries:
        findings.append(("error", "label 'background' must exist and be 0"))
    values = labels.label_values
    if values != list(range(len(values))):
        if labels.is_region_based:
            gaps = sorted(set(values) - set(range(len(values))))
            strays = [name for name, region in labels.foreground if set(region) & set(gaps)]
            findings.append(
                ("error", f"regions {strays} use values {gaps}; the label values must be 0..{len(values) - 1}")
            )
        else:
            findings.append(("error", f"label values must be consecutive from 0, found {values}"))
    ignore = labels.ignore_label
    if ignore is not None and values and ignore != max(values) + 1:
        findings.append(("error", f"the 'ignore' label must be {max(values) + 1} (max label + 1), not {ignore}"))
    if labels.is_region_based:
        findings += _check_regions(labels)
    else:
        findings += _check_classes(labels)
    return findings


def _check_classes(labels: LabelSet) -> list[Finding]:
    owners: dict[int, str] = {}
    findings: list[Finding] = []
    for name, (value,) in labels.entries:
        if value in owners:
            findings.append(("error", f"labels {owners[value]!r} and {name!r} share the value {value}"))
        owners.setdefault(value, name)
    if labels.regions_class_order is not None:
        findings.append(("warning", "'regions_class_order' is given but no label is a region; it is not used"))
    return findings


def _check_regions(labels: LabelSet) -> list[Finding]:
    regions = labels.foreground
    order = labels.regions_class_order
    if order is None:
        return [("error", "labels define regions but 'regions_class_order' is missing")]
    if len(order) != len(regions):
        return [("error", f"'regions_class_order' has {len(order)} values for {len(regions)} regions")]
    return [
        ("error", f"'regions_class_order' writes {value} for region {name!r}, which does not contain it")
        for (name, values), value in zip(regions, order, strict=True)
        if value not in values
    ]
