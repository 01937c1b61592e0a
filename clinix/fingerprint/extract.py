"""The dataset fingerprint (SPEC §3, nnU-Net reference §2).

Per case: shape, spacing, the crop-to-nonzero box and the size after cropping, per-label voxel counts and
the fraction of the image each label covers (the paper's "T/W", Table 5; for a region, its union). Per
channel: foreground intensity statistics from voxels sampled under the label map. Validation runs on the
same read of each case, so a broken dataset is reported in full before anything is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from clinix.errors import ClinixError, DatasetError
from clinix.io.atomic import write_json
from clinix.io.dataset import Case, Dataset, Problem, open_dataset
from clinix.io.validate import case_failure, check_case
from clinix.parallel import default_workers, map_cases
from clinix.workdir import WorkDir

SAMPLED_VOXELS_TOTAL = 10_000_000  # foreground intensities kept over the whole dataset, split across cases
SAMPLING_SEED = 1234
BODY_HU = -500.0  # CT: the body is the largest connected region denser than this (air −1000, lung −850)
BODY_MARGIN_MM = 10.0  # kept around the body's box on each side, within the image


@dataclass
class CaseFingerprint:
    """What the planner needs of one case. Shapes and spacings in array order ``(z, y, x)``.

    ``crop_box`` is half-open ``[[z0, z1], [y0, y1], [x0, x1]]``.
    """

    case_id: str
    shape: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float]
    crop_box: list[list[int]]
    shape_after_crop: list[int]
    relative_size_after_crop: float
    label_voxels: dict[str, int]
    label_fraction: dict[str, float]
    body_box: list[list[int]] | None = None  # CT datasets: ``body_crop_box`` with the label's box added

    def box(self, crop: str) -> list[list[int]]:
        """The crop box of a plan's ``crop`` mode: ``nonzero`` or ``body`` (the nonzero box if none)."""
        return self.body_box if crop == "body" and self.body_box is not None else self.crop_box


@dataclass
class Fingerprint:
    """The dataset fingerprint written to ``WORK/fingerprint.json``."""

    dataset: dict[str, Any]
    cases: list[CaseFingerprint]
    intensity: dict[str, dict[str, float]]
    labels: dict[str, dict[str, float]]
    median_relative_size_after_crop: float
    source_digest: str = ""  # Dataset.digest() of the files measured: a changed file means a stale fingerprint

    @property
    def spacings(self) -> np.ndarray:
        """``(n_cases, 3)`` spacings in mm, ``(z, y, x)``."""
        return np.array([c.spacing for c in self.cases], dtype=float)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        """``(n_cases, 3)`` voxel counts after crop-to-nonzero."""
        return np.array([c.shape_after_crop for c in self.cases], dtype=float)

    def shapes_after(self, crop: str) -> np.ndarray:
        """``(n_cases, 3)`` voxel counts after the plan's ``crop`` (``nonzero`` or ``body``)."""
        return np.array([[hi - lo for lo, hi in c.box(crop)] for c in self.cases], dtype=float)

    @property
    def has_body_boxes(self) -> bool:
        """True when every case has a body box (a dataset with a CT channel)."""
        return bool(self.cases) and all(c.body_box is not None for c in self.cases)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "median_relative_size_after_crop": self.median_relative_size_after_crop,
            "source_digest": self.source_digest,
            "intensity": self.intensity,
            "labels": self.labels,
            "cases": [asdict(c) for c in self.cases],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(
            dataset=data["dataset"],
            cases=[CaseFingerprint(**c) for c in data["cases"]],
            intensity=data["intensity"],
            labels=data["labels"],
            median_relative_size_after_crop=float(data["median_relative_size_after_crop"]),
            source_digest=str(data.get("source_digest", "")),
        )


def load_fingerprint(workdir: Path) -> Fingerprint:
    path = WorkDir(workdir).fingerprint
    if not path.is_file():
        raise ClinixError(f"{path}: no fingerprint yet; run 'clinix fingerprint DATASET' or 'clinix plan DATASET'")
    return Fingerprint.from_json(json.loads(path.read_text()))


def nonzero_crop_box(image: np.ndarray) -> list[list[int]]:
    """Half-open box of the voxels nonzero in any channel, holes filled; the whole image if none.

    Args:
        image: ``(C, Z, Y, X)``.
    """
    mask = ndimage.binary_fill_holes(np.any(image != 0, axis=0))
    if not mask.any():
        return [[0, s] for s in image.shape[1:]]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append([int(present[0]), int(present[-1]) + 1])
    return box


def ct_channels(channel_names: list[str]) -> list[int]:
    """Indices of the channels named CT (any case), whose values are Hounsfield units."""
    return [index for index, name in enumerate(channel_names) if name.casefold() == "ct"]


def body_crop_box(
    image: np.ndarray, ct: list[int], spacing: tuple[float, ...] | list[float], label: np.ndarray | None = None
) -> list[list[int]]:
    """Half-open box of the body in a CT: air around the patient, the table and the padding are cut.

    The body is the largest 26-connected region above ``BODY_HU`` in any CT channel, found on a grid
    halved in-plane (the box is then rounded outwards); its box grows by ``BODY_MARGIN_MM`` per side and,
    for a training case, by the box of every labelled voxel, so no label is ever cut. Everything inside
    the box is kept, the lungs' air included. The whole image when nothing is dense enough.

    Args:
        image: ``(C, Z, Y, X)`` in HU for the ``ct`` channels.
        spacing: ``(z, y, x)`` in mm.
        label: ``(Z, Y, X)`` or None (inference).
    """
    shape = image.shape[1:]
    dense = np.any(image[ct, :, ::2, ::2] > BODY_HU, axis=0)
    components, count = ndimage.label(dense, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return [[0, s] for s in shape]
    largest = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
    found = ndimage.find_objects(components)[largest - 1]
    box = [[found[0].start, found[0].stop]] + [[2 * part.start, 2 * part.stop] for part in found[1:]]
    for axis in range(3):
        margin = math.ceil(BODY_MARGIN_MM / spacing[axis])
        box[axis] = [max(0, box[axis][0] - margin), min(shape[axis], box[axis][1] + margin)]
    if label is not None and np.any(label != 0):
        labelled = ndimage.find_objects((label != 0).astype(np.int8))[0]
        box = [[min(lo, part.start), max(hi, part.stop)] for (lo, hi), part in zip(box, labelled, strict=True)]
    return box


def fingerprint_case(dataset: Dataset, case: Case, samples_per_case: int) -> tuple[list[Problem], Any]:
    """Validate and measure one case. Returns ``(problems, (CaseFingerprint, samples per channel) | None)``."""
    check = check_case(dataset, case, keep_arrays=True)
    if not check.ok:
        return check.problems, None
    image, label, geometry = check.image, check.label, check.geometry
    assert image is not None and label is not None and geometry is not None
    box = nonzero_crop_box(image)
    crop = tuple(slice(lo, hi) for lo, hi in box)
    cropped_image, cropped_label = image[(slice(None), *crop)], label[crop]
    labels = dataset.labels
    assert labels is not None  # a dataset whose labels are unusable fails its checks
    foreground = cropped_label > 0
    if labels.ignore_label is not None:
        foreground &= cropped_label != labels.ignore_label
    rng = np.random.default_rng(SAMPLING_SEED)
    samples = []
    for channel in cropped_image:
        values = channel[foreground]
        samples.append(rng.choice(values, samples_per_case, replace=True) if values.size else values)
    counts = np.bincount(label[label >= 0].ravel().astype(np.int64), minlength=max(labels.label_values) + 1)
    voxels = {name: int(sum(counts[v] for v in values)) for name, values in labels.entries}  # a region: its union
    total = int(label.size)
    shape_after_crop = [hi - lo for lo, hi in box]
    ct = ct_channels(dataset.channel_names)
    result = CaseFingerprint(
        case_id=case.case_id,
        shape=list(label.shape),
        spacing=list(geometry.spacing),
        origin=list(geometry.origin),
        direction=list(geometry.direction),
        crop_box=box,
        shape_after_crop=shape_after_crop,
        relative_size_after_crop=float(np.prod(shape_after_crop) / total),
        label_voxels=voxels,
        label_fraction={name: count / total for name, count in voxels.items()},
        body_box=body_crop_box(image, ct, geometry.spacing, label) if ct else None,
    )
    return check.problems, (result, samples)


def _fingerprint_item(args: tuple[Dataset, Case, int]) -> tuple[list[Problem], Any]:
    return fingerprint_case(*args)


def intensity_statistics(values: np.ndarray) -> dict[str, float]:
    """Foreground intensity statistics of one channel (population std, linear percentiles)."""
    if values.size == 0:
        return {k: float("nan") for k in ("mean", "std", "median", "percentile_00_5", "percentile_99_5", "min", "max")}
    p005, median, p995 = np.percentile(values, (0.5, 50.0, 99.5))
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "median": float(median),
        "percentile_00_5": float(p005),
        "percentile_99_5": float(p995),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "n_samples": int(values.size),
    }


def extract_fingerprint(
    dataset_root: str | Path, workdir: Path, workers: int | None = None, overwrite: bool = False
) -> tuple[Fingerprint, Path]:
    """Validate and fingerprint every case; write ``workdir/fingerprint.json``.

    Raises ``DatasetError`` naming the first problem (and counting the others) if the dataset is broken.
    Reuses an existing fingerprint unless ``overwrite`` or a file of the dataset changed since (its size or
    modification time, ``Dataset.digest``).
    """
    dataset = open_dataset(dataset_root)
    out = WorkDir(workdir).fingerprint
    source_digest = dataset.digest()
    if out.is_file() and not overwrite:
        existing = load_fingerprint(workdir)
        current = existing.dataset.get("root") == str(dataset.root) and existing.source_digest == source_digest
        if current and (existing.has_body_boxes or not ct_channels(dataset.channel_names)):
            return existing, out
    if not dataset.cases:
        raise DatasetError(dataset.root, "no training cases found")
    samples_per_case = max(1, SAMPLED_VOXELS_TOTAL // len(dataset.cases))
    outcomes = map_cases(
        _fingerprint_item,
        [(dataset, case, samples_per_case) for case in dataset.cases],
        workers if workers is not None else default_workers(),
        "fingerprint",
        name_of=lambda item: item[1].case_id,
    )
    results = [
        outcome.value if outcome.error is None else ([case_failure(dataset, case, outcome.error)], None)
        for case, outcome in zip(dataset.cases, outcomes, strict=True)
    ]
    errors = [p for problems, _ in results for p in problems if p.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more problems; run 'clinix validate')" if len(errors) > 1 else ""
        raise DatasetError(errors[0].path, errors[0].message + more)
    fingerprint = _aggregate(dataset, [r for _, r in results])
    fingerprint.source_digest = source_digest
    write_json(out, fingerprint.to_json())
    return fingerprint, out


def _aggregate(dataset: Dataset, results: list[tuple[CaseFingerprint, list[np.ndarray]]]) -> Fingerprint:
    cases = [case for case, _ in results]
    intensity = {}
    for channel, name in enumerate(dataset.channel_names):
        values = np.concatenate([samples[channel] for _, samples in results])
        intensity[str(channel)] = {"name": name, **intensity_statistics(values)}
    labels = {}
    assert dataset.labels is not None
    for name, values in dataset.labels.entries:
        fractions = np.array([c.label_fraction[name] for c in cases])
        labels[name] = {
            "values": list(values),
            "voxels": int(sum(c.label_voxels[name] for c in cases)),
            "cases_present": int(np.count_nonzero(fractions > 0)),
            "fraction_mean": float(fractions.mean()),
            "fraction_median": float(np.median(fractions)),
        }
    return Fingerprint(
        dataset=dataset.to_json(),
        cases=cases,
        intensity=intensity,
        labels=labels,
        median_relative_size_after_crop=float(np.median([c.relative_size_after_crop for c in cases])),
    )
