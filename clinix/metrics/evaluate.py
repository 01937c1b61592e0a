"""Evaluate a folder of predicted label maps against a folder of references (SPEC §8).

Files pair by case id, the file name without its image ending (``case_001.nii.gz`` and ``case_001.nrrd``
pair). A reference without a prediction is a problem unless ``allow_missing`` scores it as an empty
prediction; a prediction without a reference is a warning. A prediction whose shape or spacing differs
from its reference fails that case (never resampled); the other cases are still scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clinix.errors import ClinixError, DatasetError
from clinix.io.image import has_image_ending, read_geometry, read_label, strip_ending
from clinix.io.labels import LabelSet, read_label_set
from clinix.metrics.case import DEFAULT_NSD_TOLERANCE_MM, absent_class_record, score_classes
from clinix.metrics.classes import (
    ClassSpec,
    classes_present,
    resolve_classes,
)
from clinix.metrics.summary import CaseResult, EvaluationSummary
from clinix.metrics.surface import HD95_MISSING
from clinix.parallel import default_workers, map_cases

SPACING_RTOL, SPACING_ATOL = 1e-5, 1e-6


@dataclass(frozen=True)
class CaseJob:
    """What one worker needs to score one case; ``classes`` None means "the labels present"."""

    case_id: str
    reference_file: Path
    prediction_file: Path | None
    classes: tuple[ClassSpec, ...] | None
    nsd_tolerance_mm: float
    ignore_label: int | None
    hd95_missing: str = "max"


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    labels: Sequence[int] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    dataset_json: str | Path | None = None,
    ignore_label: int | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    workers: int | None = None,
    allow_missing: bool = False,
    hd95_missing: str = "max",
    classes_only: bool = False,
) -> EvaluationSummary:
    """Score every reference in ``ref_dir`` against the prediction of the same case id in ``pred_dir``.

    ``dataset_json`` (default ``ref_dir/../dataset.json`` when it exists) names the labels and may declare
    regions and the ignore label; ``labels``, ``regions`` and ``ignore_label`` override it (rules in
    classes.py). Cases run in ``workers`` processes (default up to 4; 1 runs in this process).
    ``hd95_missing`` is the HD95 of a structure found in only one of the two maps: "max" (the image
    diagonal) or "nan" (MONAI's convention); see surface.py. ``classes_only`` scores a region dataset's
    label values rather than its regions.
    """
    if hd95_missing not in HD95_MISSING:
        raise ClinixError(f"--hd95-missing must be one of {', '.join(HD95_MISSING)}, not {hd95_missing!r}")
    pred_dir, ref_dir = Path(pred_dir).expanduser().resolve(), Path(ref_dir).expanduser().resolve()
    predictions, references = _image_files(pred_dir), _image_files(ref_dir)
    declared = _declared_labels(ref_dir, dataset_json)
    if ignore_label is None and declared is not None:
        ignore_label = declared.ignore_label
    classes = resolve_classes(labels, regions, declared, ignore_label, classes_only)
    job_classes = tuple(classes) if classes is not None else None
    jobs = [
        CaseJob(case_id, reference, predictions.get(case_id), job_classes, nsd_tolerance_mm, ignore_label, hd95_missing)
        for case_id, reference in sorted(references.items())
        if case_id in predictions or allow_missing
    ]
    outcomes = map_cases(score_case_files, jobs, workers or default_workers(), "evaluate", _job_name)
    results = [
        outcome.value
        if outcome.value is not None
        else CaseResult(job.case_id, job.reference_file, job.prediction_file, problem=str(outcome.error))
        for job, outcome in zip(jobs, outcomes, strict=True)
    ]
    scored = [result for result in results if result.problem is None]
    if classes is None:
        classes = _classes_found(scored)
        scored = [_with_absent_classes(result, classes) for result in scored]
    return EvaluationSummary(
        prediction_folder=pred_dir,
        reference_folder=ref_dir,
        classes=classes,
        cases=scored,
        failed=[result for result in results if result.problem is not None],
        missing_predictions=sorted(set(references) - set(predictions)),
        unmatched_predictions=sorted(set(predictions) - set(references)),
        allow_missing=allow_missing,
        nsd_tolerance_mm=nsd_tolerance_mm,
        ignore_label=ignore_label,
        hd95_missing=hd95_missing,
    )


def score_case_files(job: CaseJob) -> CaseResult:
    """Read, check and score one case; a file problem is returned in ``problem``, not raised."""
    result = CaseResult(job.case_id, job.reference_file, job.prediction_file)
    try:
        ref, geometry = read_label(job.reference_file)
        pred = _read_prediction(job.prediction_file, ref.shape, geometry.spacing)
        classes = job.classes
        if classes is None:  # discovery: score what either map holds, report what the reference holds
            classes = tuple(classes_present([ref, pred], job.ignore_label))
            result.reference_labels = tuple(spec.labels[0] for spec in classes_present([ref], job.ignore_label))
        result.metrics = score_classes(
            pred, ref, geometry.spacing, classes, job.nsd_tolerance_mm, job.ignore_label, job.hd95_missing
        )
    except DatasetError as error:
        result.problem = str(error)
    return result


def _read_prediction(path: Path | None, shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """The prediction as ``(Z, Y, X)`` labels, after checking its header against the reference's."""
    if path is None:
        return np.zeros(shape, dtype=np.int16)
    pred_shape, _, pred_geometry = read_geometry(path)
    if tuple(pred_shape) != tuple(shape):
        raise DatasetError(path, f"shape {tuple(pred_shape)} differs from the reference's {shape}; not resampled")
    if not np.allclose(pred_geometry.spacing, spacing, rtol=SPACING_RTOL, atol=SPACING_ATOL):
        problem = f"spacing {pred_geometry.spacing} differs from the reference's {spacing}; not resampled"
        raise DatasetError(path, problem)
    return read_label(path)[0]


def _image_files(folder: Path) -> dict[str, Path]:
    """Case id -> image file of a folder; the folder must exist and hold images with distinct case ids."""
    if not folder.is_dir():
        raise DatasetError(folder, "folder not found")
    files: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and has_image_ending(p.name)):
        case_id = strip_ending(path.name)
        if case_id in files:
            raise DatasetError(path, f"case {case_id} appears twice (also {files[case_id].name})")
        files[case_id] = path
    if not files:
        raise DatasetError(folder, "holds no image files (.nii.gz, .nii, .nrrd, .mha, .mhd)")
    return files


def _declared_labels(ref_dir: Path, dataset_json: str | Path | None) -> LabelSet | None:
    if dataset_json is not None:
        return read_label_set(Path(dataset_json).expanduser())
    beside = ref_dir.parent / "dataset.json"
    return read_label_set(beside) if beside.is_file() else None


def _classes_found(scored: list[CaseResult]) -> list[ClassSpec]:
    """One class per label value (not 0, not ignore) present in at least one scored reference."""
    values = sorted({value for result in scored for value in result.reference_labels})
    if scored and not values:
        raise ClinixError("no labels to evaluate: every reference is empty; name them with --labels")
    return [ClassSpec(str(value), (value,)) for value in values]


def _with_absent_classes(result: CaseResult, classes: list[ClassSpec]) -> CaseResult:
    """Keep ``classes`` only; a class in neither of this case's masks gets the absent-class record."""
    metrics = {spec.name: result.metrics.get(spec.name) or absent_class_record() for spec in classes}
    return replace(result, metrics=metrics)


def _job_name(job: CaseJob) -> str:
    return job.case_id
