"""Predict a folder of images: the library behind ``clinix predict`` (SPEC §7).

Each case is read, preprocessed, predicted by the fold ensemble, restored to its own grid and written
atomically. A case that cannot be read or does not fit the model fails alone; the others are written.
Finished cases (every output file present) are skipped unless ``overwrite``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinix.checkpoint import load_checkpoint
from clinix.errors import ClinixError, ClinixWarning, DatasetError
from clinix.infer.export import output_files, write_label_map, write_probabilities
from clinix.infer.folds import FoldName, select_fold_checkpoints
from clinix.infer.inputs import InputCase, discover_inputs, read_input_case
from clinix.infer.memory import memory_problem
from clinix.infer.parts import Gathered, Part, gather_parts, select_part, write_part_summary
from clinix.infer.predictor import Predictor
from clinix.io.image import read_geometry
from clinix.parallel import progress_bar
from clinix.plan.model import Plan, load_plan
from clinix.postprocess import Postprocessing, load_postprocessing
from clinix.preprocess import (
    labels_from_probabilities,
    plan_digest,
    preprocess_case,
    restore_label_map,
    restore_probabilities,
)
from clinix.workdir import WorkDir


@dataclass
class CaseFailure:
    case_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.case_id}: {self.message}"


STAGES = ("read", "preprocess", "network", "restore", "write")


class StageTimes:
    """Seconds spent per stage of a prediction, summed over cases: ``with times("read"): ...``."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


@dataclass
class PredictionSummary:
    """What a folder prediction did; ``seconds`` holds the time of each written case, ``stages`` where the
    time of the written and failed cases went (read, preprocess, network, restore to the input grid, write).
    """

    out_dir: Path
    folds: list[FoldName] = field(default_factory=list)
    device: str = ""
    precision: str = ""
    postprocessing: str = "none"
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[CaseFailure] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stages: StageTimes = field(default_factory=StageTimes)


def load_predictor(
    workdir: str | Path,
    folds: str | Sequence[FoldName] | None = None,
    checkpoint: str = "final",
    device: str = "auto",
    tta: bool = True,
    step: float = 0.5,
    batch_tiles: int | None = None,
    precision: str = "auto",
) -> Predictor:
    """A ``Predictor`` over the trained folds of ``workdir`` (``folds`` as ``select_fold_checkpoints``).

    The plan is the one the models were trained with, stored in their checkpoints. Folds trained with
    different preprocessing or patch size cannot be ensembled (a ClinixError); models older than the
    current ``plans.json`` are used with their own plan, after a warning.
    """
    selected = select_fold_checkpoints(Path(workdir), folds, checkpoint)
    plans = [(fold, Plan.from_json(load_checkpoint(path, mmap=True)["plan"])) for fold, path in selected]
    first_fold, plan = plans[0]
    for fold, other in plans[1:]:
        if plan_digest(other) != plan_digest(plan) or other.patch_size != plan.patch_size:
            raise ClinixError(
                f"fold {fold} was trained with another plan than fold {first_fold} (preprocessing or patch size "
                "differ: plans.json changed between their runs), so they cannot be ensembled; retrain it with "
                "'clinix train --fold F --overwrite', or choose folds with --folds"
            )
    _warn_if_plan_changed_since(Path(workdir), plan)
    return Predictor(plan, [path for _, path in selected], device, tta, step, batch_tiles, precision)


def _warn_if_plan_changed_since(workdir: Path, trained: Plan) -> None:
    try:
        current = load_plan(workdir)
    except ClinixError:  # no plans.json beside the models: nothing to compare with
        return
    if plan_digest(current) != plan_digest(trained) or current.patch_size != trained.patch_size:
        warnings.warn(
            f"{WorkDir(workdir).plans} changed after these models were trained; they predict with the plan they "
            "were trained with (train again to use the new one)",
            ClinixWarning,
            stacklevel=3,
        )


def predict_folder(
    workdir: str | Path,
    in_dir: str | Path,
    out_dir: str | Path,
    folds: str | Sequence[FoldName] | None = None,
    checkpoint: str = "final",
    tta: bool = True,
    step: float = 0.5,
    save_probabilities: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    batch_tiles: int | None = None,
    precision: str = "auto",
    postprocess: bool = True,
    part: Part | None = None,
) -> PredictionSummary:
    """Predict every case of ``in_dir`` (a folder or one image) into ``out_dir`` (module docstring).

    With ``postprocess`` the label maps get the rules of ``WORK/results/<config>/postprocessing.json``
    when ``clinix crossval`` wrote one (the probabilities are saved before them, as nnU-Net's).
    ``part`` (K, N): only every N-th case from the K-th, and a summary of this part in ``out_dir``
    (clinix.infer.parts).
    """
    selected = select_fold_checkpoints(Path(workdir), folds, checkpoint)
    cases = input_cases(in_dir, out_dir, part)
    chosen = [fold for fold, _ in selected]
    predictor = load_predictor(workdir, chosen, checkpoint, device, tta, step, batch_tiles, precision)
    rules = load_postprocessing(WorkDir(workdir).postprocessing()) if postprocess else None
    return predict_part(predictor, cases, Path(out_dir), part, save_probabilities, overwrite, rules, chosen)


def input_cases(in_dir: str | Path, out_dir: str | Path, part: Part | None = None) -> list[InputCase]:
    """The cases of ``in_dir`` (of ``part``); a ClinixError when ``out_dir`` is the input folder."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    cases = select_part(discover_inputs(in_dir), part)
    if in_dir.is_dir() and out_dir.resolve() == in_dir.resolve():
        raise ClinixError(f"{out_dir}: the output folder must differ from the input folder")
    return cases


def predict_part(
    predictor: Predictor | Sequence[Predictor],
    cases: Sequence[InputCase],
    out_dir: Path,
    part: Part | None,
    save_probabilities: bool,
    overwrite: bool,
    postprocessing: Postprocessing | None,
    folds: list[FoldName],
) -> PredictionSummary:
    """``predict_cases``, then the summary of ``part`` (when one) in ``out_dir``."""
    summary = predict_cases(predictor, cases, out_dir, save_probabilities, overwrite, postprocessing)
    summary.folds = folds
    if part is not None:
        write_part_summary(out_dir, part, _summary_record(summary, cases))
    return summary


def _summary_record(summary: PredictionSummary, cases: Sequence[InputCase]) -> dict:
    return {
        "cases": [case.case_id for case in cases],
        "written": summary.written,
        "skipped": summary.skipped,
        "failed": [{"case": failure.case_id, "message": failure.message} for failure in summary.failed],
        "seconds": summary.seconds,
        "folds": summary.folds,
        "device": summary.device,
        "precision": summary.precision,
        "postprocessing": summary.postprocessing,
    }


def gather_predictions(in_dir: str | Path, out_dir: str | Path, save_probabilities: bool = False) -> Gathered:
    """``clinix predict --gather``: which cases of ``in_dir`` have every output in ``out_dir`` (all parts)."""
    cases, out_dir = discover_inputs(Path(in_dir)), Path(out_dir)
    present = [
        all(file.is_file() for file in output_files(out_dir, case.case_id, case.ending, save_probabilities))
        for case in cases
    ]
    return gather_parts([case.case_id for case in cases], present, out_dir)


def predict_cases(
    predictor: Predictor | Sequence[Predictor],
    cases: Sequence[InputCase],
    out_dir: Path,
    save_probabilities: bool = False,
    overwrite: bool = False,
    postprocessing: Postprocessing | None = None,
) -> PredictionSummary:
    """Predict ``cases`` with ``predictor`` into ``out_dir``; one case's ClinixError fails that case alone.

    ``predictor``: one, or several whose probabilities on the input's grid are averaged
    (``predict_ensemble_case``). ``postprocessing``: rules applied to each label map on the input's grid
    (clinix.postprocess).
    """
    members = [predictor] if isinstance(predictor, Predictor) else list(predictor)
    first = members[0]
    summary = PredictionSummary(Path(out_dir), device=str(first.device), precision=first.precision)
    if postprocessing is not None:
        summary.postprocessing = postprocessing.describe()
    with progress_bar() as progress:
        task = progress.add_task("predict", total=len(cases))
        for case in cases:
            outputs = output_files(out_dir, case.case_id, case.ending, save_probabilities)
            if not overwrite and all(file.is_file() for file in outputs):
                summary.skipped.append(case.case_id)
            else:
                start = time.perf_counter()
                try:
                    if len(members) == 1:
                        predict_case(first, case, out_dir, save_probabilities, summary.stages, postprocessing)
                    else:
                        predict_ensemble_case(
                            members, case, out_dir, save_probabilities, summary.stages, postprocessing
                        )
                except ClinixError as error:
                    summary.failed.append(CaseFailure(case.case_id, str(error)))
                else:
                    summary.written.append(case.case_id)
                    summary.seconds.append(time.perf_counter() - start)
            progress.advance(task)
    return summary


def check_memory(case: InputCase, plan: Plan, save_probabilities: bool = False) -> None:
    """A DatasetError naming the case's first file when predicting it would not fit in memory (header only)."""
    if case.problem is not None:
        return  # read_input_case reports it
    shape, channels, geometry = read_geometry(case.files[0])
    problem = memory_problem(shape, geometry.spacing, channels * len(case.files), plan, save_probabilities)
    if problem is not None:
        raise DatasetError(case.files[0], problem)


def predict_case(
    predictor: Predictor,
    case: InputCase,
    out_dir: Path,
    save_probabilities: bool = False,
    times: StageTimes | None = None,
    postprocessing: Postprocessing | None = None,
) -> Path:
    """Read, predict and write one case; returns the label map's path. ``times`` gains each stage's seconds
    (the postprocessing counts as restoring)."""
    plan, times = predictor.plan, times or StageTimes()
    with times("read"):
        check_memory(case, plan, save_probabilities)
        image, geometry = read_input_case(case, plan.channel_names)
    with times("preprocess"):
        data, _, properties = preprocess_case(image, None, geometry, plan, case.case_id)
        del image
    with times("network"):
        probabilities = predictor.predict_preprocessed(data)
        del data
    if save_probabilities:
        with times("restore"):
            restored = restore_probabilities(probabilities, properties, plan)
        with times("write"):
            write_probabilities(out_dir, case.case_id, restored, plan.labels.output_names)
        del restored
    with times("restore"):
        labels = restore_label_map(probabilities, properties, plan)
        if postprocessing is not None:
            labels = postprocessing.apply(labels, geometry.spacing)
    with times("write"):
        return write_label_map(out_dir, case.case_id, case.ending, labels, geometry)


def predict_ensemble_case(
    predictors: Sequence[Predictor],
    case: InputCase,
    out_dir: Path,
    save_probabilities: bool = False,
    times: StageTimes | None = None,
    postprocessing: Postprocessing | None = None,
) -> Path:
    """``predict_case`` for several models, each with its own plan: each one's probabilities are restored
    to the input's grid, and the mean decides the labels (``labels_from_probabilities``)."""
    times, first = times or StageTimes(), predictors[0].plan
    with times("read"):
        for predictor in predictors:
            check_memory(case, predictor.plan, save_probabilities)
        image, geometry = read_input_case(case, first.channel_names)
    total = None
    for predictor in predictors:
        with times("preprocess"):
            data, _, properties = preprocess_case(image, None, geometry, predictor.plan, case.case_id)
        with times("network"):
            probabilities = predictor.predict_preprocessed(data)
            del data
        with times("restore"):
            restored = restore_probabilities(probabilities, properties, predictor.plan)
            del probabilities
            total = restored if total is None else np.add(total, restored, out=total)
    del image
    with times("restore"):
        total /= len(predictors)
        labels = labels_from_probabilities(total, first.labels)
        if postprocessing is not None:
            labels = postprocessing.apply(labels, geometry.spacing)
    with times("write"):
        if save_probabilities:
            write_probabilities(out_dir, case.case_id, total, first.labels.output_names)
        return write_label_map(out_dir, case.case_id, case.ending, labels, geometry)
