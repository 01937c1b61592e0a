"""The full validation of a trained fold (SPEC §6), and ``clinix train`` = training, then this.

Every validation case of the fold is predicted in full (sliding window) with the fold's final checkpoint,
written in its original geometry into ``fold_F/validation/``, and evaluated into
``validation/summary.json`` (+ ``.csv``). With ``save_probabilities`` each case also gets
``CASE.npz`` / ``CASE.json`` (the probabilities on the input's grid, as ``clinix predict``), which
cross-validation ensembles and configuration comparisons need. The digests of the checkpoint's plan
(preprocessing, and network / loss / patch) are stored in ``validation/validation.json``, so
``clinix crossval`` can refuse folds of different plans.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from clinix.checkpoint import FINAL, load_checkpoint
from clinix.device import resolve_device
from clinix.errors import ClinixError
from clinix.infer import Predictor
from clinix.infer.export import write_label_map, write_probabilities
from clinix.io.atomic import write_json
from clinix.io.dataset import Dataset, open_dataset
from clinix.metrics import evaluate_folders, write_report
from clinix.plan.model import Plan
from clinix.preprocess import load_case, plan_digest, restore_label_map, restore_probabilities
from clinix.train import TrainingOptions, TrainingResult, train_fold
from clinix.train.logging import TrainingLog
from clinix.train.splits import Fold, fold_cases, parse_fold
from clinix.workdir import WorkDir

SUMMARY_FILE = "summary.json"
RECORD_FILE = "validation.json"


@dataclasses.dataclass(frozen=True)
class FoldValidation:
    """What ``validate_fold`` wrote: the summary's path and the mean over classes per metric."""

    summary: Path
    means: dict[str, float]
    cases: list[str]


def validate_fold(
    workdir: str | Path,
    fold: Fold | str,
    device: str = "auto",
    tta: bool = True,
    save_probabilities: bool = False,
    echo: bool = True,
) -> FoldValidation:
    """Predict and evaluate the validation cases of ``fold`` with its ``checkpoint_final.pt``.

    Fold ``all`` validates on its own training cases, as nnU-Net's (a check, not a held-out estimate).
    """
    work, fold = WorkDir(workdir), parse_fold(fold)
    path = work.checkpoint(fold, "final")
    if not path.is_file():
        raise ClinixError(f"fold {fold}: {path} does not exist; finish training first ('clinix train --fold {fold}')")
    chosen = resolve_device(device)
    checkpoint = load_checkpoint(path, map_location=chosen)
    plan = Plan.from_json(checkpoint["plan"])
    _, case_ids = fold_cases(work.root, fold)
    log = TrainingLog(work.fold(fold), echo=echo)
    log.line(
        f"final validation of {len(case_ids)} cases (sliding window, TTA {'on' if tta else 'off'}"
        + (", probabilities saved" if save_probabilities else "")
        + ")",
        echo=True,
    )
    output = work.validation(fold)
    output.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(plan, [checkpoint], device=chosen, tta=tta)
    for case_id in case_ids:
        data, _, properties = load_case(work.root, case_id, mmap=False)
        probabilities = predictor.predict_preprocessed(data)
        if save_probabilities:
            restored = restore_probabilities(probabilities, properties, plan)
            write_probabilities(output, case_id, restored, plan.labels.output_names)
            del restored
        labels = restore_label_map(probabilities, properties, plan)
        write_label_map(output, case_id, ".nii.gz", labels, properties.geometry)
    dataset = open_dataset(plan.dataset_root)
    with tempfile.TemporaryDirectory(prefix="clinix-reference-") as references:
        link_references(dataset, case_ids, Path(references))
        summary = evaluate_folders(output, references, dataset_json=dataset.root / "dataset.json", workers=1)
    summary_path, _ = write_report(summary, output / SUMMARY_FILE)
    record = {
        "fold": fold,
        "cases": list(case_ids),
        "plan_digest": plan_digest(plan),
        "model_digest": model_digest(plan),
        "tta": tta,
        "probabilities": save_probabilities,
        "epochs": checkpoint["epoch"],
    }
    write_json(output / RECORD_FILE, record)
    dice = summary.foreground_mean.get("DSC")
    log.line(f"validation mean DSC {dice if dice is None else round(dice, 4)}: {summary_path}")
    return FoldValidation(summary_path, summary.foreground_mean, list(case_ids))


def model_digest(plan: Plan) -> str:
    """What must agree for folds to form one model: the network family, loss, topology and patch."""
    model = {"arch": plan.arch, "loss": plan.loss, "network": plan.network, "patch_size": plan.patch_size}
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16]


def train_and_validate(
    workdir: str | Path,
    fold: Fold | str,
    options: TrainingOptions | None = None,
    validation: bool = True,
    tta: bool = True,
    save_probabilities: bool = False,
    validate_only: bool = False,
) -> TrainingResult:
    """``clinix train``: train (or resume) ``fold``, then, on the main process, validate it in full.

    ``validate_only`` skips training: a finished fold is validated again (e.g. to save probabilities).
    ``options`` as ``train_fold``.
    """
    options = options or TrainingOptions()
    if validate_only:
        result = _finished_result(WorkDir(workdir), parse_fold(fold))
    else:
        result = train_fold(workdir, fold, options)
    if result.main_process and (validation or validate_only):
        done = validate_fold(workdir, result.fold, options.device, tta, save_probabilities, options.echo)
        result = dataclasses.replace(result, validation_summary=done.summary, validation_dice=done.means.get("DSC"))
    return result


def _finished_result(work: WorkDir, fold: Fold) -> TrainingResult:
    """The TrainingResult of a finished fold, from its final checkpoint."""
    path = work.checkpoint(fold, "final")
    if not path.is_file():
        raise ClinixError(
            f"--validate-only: fold {fold} has no {FINAL} in {work.fold(fold)}; train it first "
            f"('clinix train --fold {fold}')"
        )
    checkpoint = load_checkpoint(path, mmap=True)
    return TrainingResult(fold, work.fold(fold), checkpoint["epoch"], checkpoint["best_ema"], checkpoint["ema"])


def link_references(dataset: Dataset, case_ids: Sequence[str], folder: Path) -> None:
    """Links ``folder/<case>.<ending>`` to the reference labels of ``case_ids`` only.

    The evaluation then scores exactly the validation cases instead of reporting the training cases'
    predictions as missing.
    """
    for case_id in case_ids:
        os.symlink(dataset.case(case_id).label.resolve(), folder / f"{case_id}{dataset.file_ending}")
