"""Validation of a dataset, case by case: every problem is reported, not only the first (SPEC §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinix.errors import ClinixError, DatasetError
from clinix.io.dataset import Case, Dataset, Problem, parse_dataset
from clinix.io.image import Geometry, read_geometry, read_label
from clinix.parallel import default_workers, map_cases

SPACING_RTOL = 1e-5
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass
class CaseCheck:
    """The outcome of checking one case; ``image``/``label`` are kept only when the case is usable.

    ``label_values``: the values its label map holds (empty when it could not be read).
    """

    case_id: str
    problems: list[Problem] = field(default_factory=list)
    label_values: frozenset[int] = frozenset()
    image: np.ndarray | None = None
    label: np.ndarray | None = None
    geometry: Geometry | None = None

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


@dataclass
class ValidationReport:
    cases_checked: int
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def check_case(dataset: Dataset, case: Case, keep_arrays: bool = False) -> CaseCheck:
    """Check a case's files: presence, readability, channel count, geometry agreement, values."""
    check = CaseCheck(case.case_id)
    headers = _read_headers(dataset, case, check.problems)
    if headers is None:
        return check
    _compare_geometry(headers, check.problems)
    if not check.ok:
        return check
    try:
        image = dataset.read_images(case)[0]
    except DatasetError as error:  # unreadable voxel data, or NaN/inf voxels: the label is still checked
        check.problems.append(Problem.from_error(error, case.images[0]))
        image = None
    label = _check_label(dataset, case, check.problems)
    if label is not None:
        check.label_values = frozenset(np.unique(label).tolist())
    if keep_arrays and check.ok:
        check.image, check.label, check.geometry = image, label, headers[0][2]
    return check


def _read_headers(
    dataset: Dataset, case: Case, problems: list[Problem]
) -> list[tuple[Path, tuple[int, ...], Geometry]] | None:
    """Header of every channel file then the label: ``(path, shape, geometry)``; None if any is unusable."""
    headers = []
    channels = 0
    expected = _expected_channel_files(dataset, case)
    for path in expected:
        if not path.is_file():
            problems.append(Problem("error", path, "missing channel file"))
    for path in case.images:
        try:
            shape, n, geometry = read_geometry(path)
        except DatasetError as error:
            problems.append(Problem("error", error.path, error.problem))
            continue
        channels += n
        headers.append((path, shape, geometry))
    if case.label is None or not case.label.is_file():
        problems.append(Problem("error", case.label or case.images[0], "missing label file"))
    else:
        try:
            shape, _, geometry = read_geometry(case.label)
            headers.append((case.label, shape, geometry))
        except DatasetError as error:
            problems.append(Problem("error", error.path, error.problem))
    if any(p.severity == "error" for p in problems):
        return None
    if channels != dataset.num_channels:
        problems.append(
            Problem("error", case.images[0], f"has {channels} channels, dataset.json declares {dataset.num_channels}")
        )
        return None
    return headers


def _expected_channel_files(dataset: Dataset, case: Case) -> list[Path]:
    """nnU-Net layout: ``CASE_0000 ... CASE_{C-1}`` beside the first channel file."""
    if dataset.layout != "nnunet" or not case.images:
        return []
    folder = case.images[0].parent
    if folder.name != "imagesTr":
        return []
    return [folder / f"{case.case_id}_{i:04d}{dataset.file_ending}" for i in range(dataset.num_channels)]


def _compare_geometry(headers: list[tuple[Path, tuple[int, ...], Geometry]], problems: list[Problem]) -> None:
    """Shape and spacing must agree (error); origin and direction should (warning)."""
    path0, shape0, geo0 = headers[0]
    name0 = path0.name
    for path, shape, geo in headers[1:]:
        if shape != shape0:
            problems.append(Problem("error", path, f"shape {shape} differs from {shape0} of {name0}"))
        if not np.allclose(geo.spacing, geo0.spacing, rtol=SPACING_RTOL, atol=0):
            problems.append(
                Problem("error", path, f"spacing {_fmt(geo.spacing)} differs from {_fmt(geo0.spacing)} of {name0}")
            )
        if not np.allclose(geo.origin, geo0.origin, rtol=0, atol=ORIGIN_ATOL_MM):
            problems.append(Problem("warning", path, f"origin {_fmt(geo.origin)} differs from {_fmt(geo0.origin)}"))
        if not np.allclose(geo.direction, geo0.direction, rtol=0, atol=DIRECTION_ATOL):
            problems.append(Problem("warning", path, f"direction differs from that of {name0}"))


def _check_label(dataset: Dataset, case: Case, problems: list[Problem]) -> np.ndarray | None:
    assert case.label is not None
    if not dataset.labels:  # dataset.json's labels are unusable; that problem is reported once, not per case
        return None
    try:
        label, _ = read_label(case.label)
    except DatasetError as error:
        problems.append(Problem("error", error.path, error.problem))
        return None
    labels = dataset.labels
    allowed = set(labels.label_values) | ({labels.ignore_label} if labels.ignore_label is not None else set())
    undeclared = sorted(set(np.unique(label).tolist()) - allowed)
    if undeclared:
        kind = "in no region of" if labels.is_region_based else "not declared in"
        problems.append(Problem("error", case.label, f"label values {undeclared} are {kind} dataset.json"))
    return label


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _check_case_problems(args: tuple[Dataset, Case]) -> tuple[list[Problem], frozenset[int]]:
    check = check_case(*args)
    return check.problems, check.label_values


def validate_dataset(root: str | Path, workers: int | None = None) -> ValidationReport:
    """Check ``dataset.json`` and every case; never stops at the first problem."""
    dataset, problems = parse_dataset(root)
    if dataset is None:
        return ValidationReport(0, problems)
    outcomes = map_cases(
        _check_case_problems,
        [(dataset, case) for case in dataset.cases],
        workers if workers is not None else default_workers(),
        "validating",
        name_of=lambda item: item[1].case_id,
    )
    seen: set[int] = set()
    for case, outcome in zip(dataset.cases, outcomes, strict=True):
        if outcome.value is None:
            problems.append(case_failure(dataset, case, outcome.error))  # type: ignore[arg-type]
        else:
            problems += outcome.value[0]
            seen |= outcome.value[1]
    if dataset.labels is not None and dataset.labels.is_region_based:
        problems += _unused_region_values(dataset, seen)
    return ValidationReport(len(dataset.cases), problems)


def _unused_region_values(dataset: Dataset, seen: set[int]) -> list[Problem]:
    """A warning for each region naming a value no label file holds (it can never be learnt)."""
    assert dataset.labels is not None
    return [
        Problem(
            "warning",
            dataset.root / "dataset.json",
            f"region {name!r} names value(s) {sorted(set(values) - seen)} that no label file holds",
        )
        for name, values in dataset.labels.foreground
        if set(values) - seen
    ]


def case_failure(dataset: Dataset, case: Case, error: ClinixError) -> Problem:
    """The problem of a case whose check stopped on ``error`` (e.g. its worker process died)."""
    return Problem.from_error(error, case.images[0] if case.images else dataset.root)
