"""``clinix best WORK [WORK...]``: the best trained configuration, alone or in a pair, on cross-validation.

Each working folder (one ``--arch`` / ``--loss`` / plan of the same dataset) must have run
``clinix crossval``. Candidates are every folder alone, scored by its pooled cross-validation mean DSC,
and every pair of folders whose cross-validation probabilities were saved (``clinix train
--save-probabilities``), scored on the ensemble: each case's two probability maps averaged and turned
into labels, then evaluated like any prediction. The best by pooled mean DSC wins (a tie goes to fewer
models); its postprocessing is the folder's own ``postprocessing.json``, or for a pair one decided on the
ensemble's predictions. ``inference.json`` records the choice and the whole comparison, the paper's
Table 4/5 for the user's own data.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clinix.crossval.merge import CROSSVAL_FILE
from clinix.crossval.postprocessing import decide_postprocessing
from clinix.crossval.validate import link_references
from clinix.ensemble import InferenceConfig, Member
from clinix.errors import ClinixError
from clinix.io.atomic import write_json
from clinix.io.dataset import Dataset, open_dataset
from clinix.io.image import read_geometry, write_image
from clinix.metrics import evaluate_folders
from clinix.plan.model import Plan, load_plan
from clinix.postprocess import Postprocessing, load_postprocessing
from clinix.preprocess import labels_from_probabilities
from clinix.workdir import WorkDir


@dataclass
class Trained:
    """One working folder's cross-validation."""

    workdir: Path
    name: str
    plan: Plan
    folds: list[int]
    cases: list[str]
    mean_dsc: float
    per_class: dict[str, float]

    @property
    def has_probabilities(self) -> bool:
        folder = WorkDir(self.workdir).crossval()
        return all((folder / f"{case}.npz").is_file() for case in self.cases)


@dataclass
class Candidate:
    """A model or an ensemble of two, scored on the cross-validation cases."""

    name: str
    members: list[Trained]
    mean_dsc: float
    per_class: dict[str, float]
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "members": [str(member.workdir) for member in self.members],
            "mean_dsc": _finite(self.mean_dsc),
            "per_class": {name: _finite(value) for name, value in self.per_class.items()},
            "postprocessing": self.postprocessing.describe(),
            "note": self.note,
        }


@dataclass
class BestResult:
    candidates: list[Candidate]
    chosen: Candidate
    path: Path


def find_best(
    workdirs: Sequence[str | Path], out: str | Path = "inference.json", ensembles: bool = True, workers: int = 1
) -> BestResult:
    """Compare ``workdirs`` (module docstring) and write ``out`` (inference.json)."""
    trained = [_trained(Path(workdir).resolve()) for workdir in workdirs]
    _check_one_dataset(trained)
    candidates = [
        Candidate(t.name, [t], t.mean_dsc, t.per_class, load_postprocessing(WorkDir(t.workdir).postprocessing()) or
                  Postprocessing())
        for t in trained
    ]  # fmt: skip
    if ensembles:
        dataset = open_dataset(trained[0].plan.dataset_root)
        for first, second in itertools.combinations(trained, 2):
            candidates.append(_ensemble(first, second, dataset, workers))
    scored = [c for c in candidates if math.isfinite(c.mean_dsc)]
    if not scored:
        raise ClinixError("no candidate has a finite cross-validation mean DSC to compare")
    chosen = max(scored, key=lambda c: (c.mean_dsc, -len(c.members)))
    members = tuple(Member(t.workdir, tuple(t.folds), t.name) for t in chosen.members)
    config = InferenceConfig(members, chosen.postprocessing, chosen.name, [c.to_json() for c in candidates])
    path = write_json(Path(out), config.to_json())
    return BestResult(candidates, chosen, path)


def _trained(workdir: Path) -> Trained:
    path = WorkDir(workdir).crossval() / CROSSVAL_FILE
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClinixError(f"{workdir}: no cross-validation yet; run 'clinix crossval -w {workdir}' first") from None
    except (OSError, ValueError) as error:
        raise ClinixError(f"{path}: cannot be read ({error}); run 'clinix crossval -w {workdir}' again") from None
    plan = load_plan(workdir)
    cases = sorted(case for fold in report["per_fold"].values() for case in fold["cases"])
    pooled = report["pooled"]
    return Trained(
        workdir=workdir,
        name=f"{workdir.name} ({plan.arch}, {plan.loss})",
        plan=plan,
        folds=list(report["folds"]),
        cases=cases,
        mean_dsc=_number(pooled["foreground_mean"].get("DSC")),
        per_class={name: _number(values.get("DSC")) for name, values in pooled["per_class"].items()},
    )


def _check_one_dataset(trained: list[Trained]) -> None:
    if not trained:
        raise ClinixError("name at least one working folder")
    first = trained[0]
    seen = {first.workdir}
    for other in trained[1:]:
        if other.workdir in seen:
            raise ClinixError(f"{other.workdir} is named twice")
        seen.add(other.workdir)
        differences = [
            what
            for what, same in (
                (f"dataset {first.plan.dataset.get('name')!r} vs {other.plan.dataset.get('name')!r}",
                 first.plan.dataset.get("name") == other.plan.dataset.get("name")),
                ("labels differ", first.plan.dataset.get("labels") == other.plan.dataset.get("labels")),
                ("cross-validation cases differ", first.cases == other.cases),
            )
            if not same
        ]  # fmt: skip
        if differences:
            raise ClinixError(
                f"{other.workdir}: another dataset than {first.workdir} ({'; '.join(differences)}); "
                "'clinix best' compares trained configurations of one dataset"
            )


def _ensemble(first: Trained, second: Trained, dataset: Dataset, workers: int) -> Candidate:
    """The pair's averaged cross-validation probabilities, evaluated, with their own postprocessing."""
    name = f"{first.name} + {second.name}"
    missing = [t.workdir for t in (first, second) if not t.has_probabilities]
    if missing:
        note = f"not scored: no saved probabilities in {', '.join(map(str, missing))} (train --save-probabilities)"
        return Candidate(name, [first, second], math.nan, {}, note=note)
    labels = first.plan.labels
    with tempfile.TemporaryDirectory(prefix="clinix-ensemble-") as scratch:
        predictions, references = Path(scratch) / "pred", Path(scratch) / "ref"
        predictions.mkdir()
        references.mkdir()
        for case in first.cases:
            mean = _probabilities(first, case)
            mean += _probabilities(second, case)
            mean /= 2
            _, _, geometry = read_geometry(dataset.case(case).label)  # the header: no voxels read
            write_image(
                predictions / f"{case}.nii.gz", labels_from_probabilities(mean, labels), geometry, is_label=True
            )
        link_references(dataset, first.cases, references)
        summary = evaluate_folders(predictions, references, dataset_json=dataset.root / "dataset.json", workers=workers)
        pairs = [(predictions / f"{case}.nii.gz", dataset.case(case).label) for case in first.cases]
        postprocessing = decide_postprocessing(pairs, summary.classes, summary.ignore_label)
    per_class = {name: value.mean["DSC"] for name, value in summary.per_class.items()}
    return Candidate(name, [first, second], summary.foreground_mean["DSC"], per_class, postprocessing)


def _probabilities(trained: Trained, case: str) -> np.ndarray:
    with np.load(WorkDir(trained.workdir).crossval() / f"{case}.npz") as archive:
        return archive["probabilities"].astype(np.float32)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
