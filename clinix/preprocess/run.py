"""Preprocess every case of the planned dataset into ``WORK/preprocessed/3d_fullres`` (SPEC §1).

Per case three files: ``<case>.npy`` (float32 ``(C, z, y, x)``), ``<case>_seg.npy`` (int16 ``(1, z, y, x)``)
and ``<case>.json`` (its ``CaseProperties``). Each is written to a temporary name and renamed; the JSON
comes last, so a case whose JSON exists (for the current plan) is finished and is skipped on a re-run,
and a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinix.errors import ClinixError
from clinix.io.atomic import atomic_path, remove_leftovers, write_json
from clinix.io.dataset import Case, Dataset, open_dataset
from clinix.parallel import default_workers, map_cases, values_or_raise
from clinix.plan.model import Plan, load_plan
from clinix.preprocess.case import CaseProperties, plan_digest, preprocess_case
from clinix.preprocess.normalize import check_normalization
from clinix.workdir import WorkDir


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    shape: list[int]
    seconds: float


@dataclass
class PreprocessSummary:
    """What one run did: the cases it preprocessed (with their shape after resampling) and those it skipped."""

    folder: Path
    processed: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def case_files(folder: Path, case_id: str) -> tuple[Path, Path, Path]:
    """``(data .npy, seg .npy, properties .json)`` of a case."""
    return folder / f"{case_id}.npy", folder / f"{case_id}_seg.npy", folder / f"{case_id}.json"


def preprocess_dataset(workdir: str | Path, workers: int | None = None, overwrite: bool = False) -> PreprocessSummary:
    """Preprocess the cases of ``workdir/plans.json``'s dataset that are not finished (all with ``overwrite``).

    Raises ``ClinixError`` without a plan, ``DatasetError`` naming the case file that cannot be read.
    """
    plan = load_plan(Path(workdir))
    try:
        check_normalization(plan.normalization)
    except ClinixError as error:
        raise ClinixError(f"{WorkDir(workdir).plans}: {error}") from None
    dataset = open_dataset(plan.dataset_root)
    folder = WorkDir(workdir).preprocessed()
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)  # from a run that was killed mid-write
    digest = plan_digest(plan)
    summary = PreprocessSummary(folder)
    pending = []
    for case in dataset.cases:
        if not overwrite and _is_finished(folder, case.case_id, digest, dataset.case_digest(case)):
            summary.skipped.append(case.case_id)
        else:
            # Unmark first, so that a killed --overwrite run redoes this case when resumed without it.
            case_files(folder, case.case_id)[2].unlink(missing_ok=True)
            pending.append((dataset, case, plan, folder))
    outcomes = map_cases(
        _preprocess_item,
        pending,
        workers if workers is not None else default_workers(),
        "preprocess",
        name_of=lambda item: item[1].case_id,
    )
    finished = sum(outcome.ok for outcome in outcomes) + len(summary.skipped)
    summary.processed = values_or_raise(
        outcomes, f"{finished} of {len(dataset.cases)} are preprocessed; re-run 'clinix preprocess' once fixed"
    )
    return summary


def _is_finished(folder: Path, case_id: str, digest: str, source_digest: str) -> bool:
    """Preprocessed with this plan, from the case's files as they are now."""
    properties = case_files(folder, case_id)[2]
    try:
        stored = json.loads(properties.read_text())
    except (OSError, ValueError):
        return False
    return stored.get("plan_digest") == digest and stored.get("source_digest") == source_digest


def _preprocess_item(item: tuple[Dataset, Case, Plan, Path]) -> CaseResult:
    dataset, case, plan, folder = item
    start = time.perf_counter()
    image, label, geometry = dataset.read_case(case)
    data, seg, properties = preprocess_case(image, label, geometry, plan, case.case_id)
    properties.source_digest = dataset.case_digest(case)
    save_case(folder, data, seg, properties)
    return CaseResult(case.case_id, properties.shape_after_resampling, time.perf_counter() - start)


def cases_not_preprocessed_for(workdir: str | Path, plan: Plan, case_ids: list[str]) -> list[str]:
    """The cases of ``case_ids`` whose preprocessed arrays are missing or were made with another plan."""
    folder, digest = WorkDir(workdir).preprocessed(), plan_digest(plan)
    stale = []
    for case_id in case_ids:
        try:
            stored = json.loads(case_files(folder, case_id)[2].read_text()).get("plan_digest")
        except (OSError, ValueError):
            stored = None
        if stored != digest:
            stale.append(case_id)
    return stale


def save_case(folder: Path, data: np.ndarray, seg: np.ndarray | None, properties: CaseProperties) -> None:
    """Write the arrays, then the properties JSON that marks the case finished."""
    data_path, seg_path, properties_path = case_files(folder, properties.case_id)
    _save_array(data_path, data.astype(np.float32, copy=False))
    if seg is not None:
        _save_array(seg_path, seg.astype(np.int16, copy=False))
    write_json(properties_path, properties.to_json())


def _save_array(path: Path, array: np.ndarray) -> None:
    # Through an open file: np.save would append ".npy" to a temporary name lacking it.
    with atomic_path(path) as tmp, tmp.open("wb") as file:
        np.save(file, array)


def load_case(
    workdir_or_folder: str | Path, case_id: str, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Load a preprocessed case: data ``(C, z, y, x)``, seg ``(1, z, y, x)`` or None, properties.

    ``workdir_or_folder`` is the working folder or the preprocessed folder itself. With ``mmap`` the
    arrays are read-only memory maps, read from disk only where indexed.
    """
    folder = Path(workdir_or_folder)
    if WorkDir(folder).preprocessed().is_dir():
        folder = WorkDir(folder).preprocessed()
    data_path, seg_path, properties_path = case_files(folder, case_id)
    if not properties_path.is_file():
        raise ClinixError(f"{properties_path}: case {case_id!r} is not preprocessed; run 'clinix preprocess'")
    properties = CaseProperties.from_json(json.loads(properties_path.read_text()))
    mode = "r" if mmap else None
    seg = np.load(seg_path, mmap_mode=mode) if seg_path.is_file() else None
    return np.load(data_path, mmap_mode=mode), seg, properties
