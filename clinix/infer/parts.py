"""Predicting one folder on several machines: ``clinix predict --part K/N`` and ``--gather``.

Part ``K/N`` (0 ≤ K < N) takes every N-th case of the sorted inputs, starting at the K-th; ``auto`` reads
K and N from torchrun (``RANK``/``WORLD_SIZE``, each process on GPU ``LOCAL_RANK``) or from a Slurm job
array (``SLURM_ARRAY_TASK_ID`` − ``SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``). Finished cases
are skipped on a rerun (as always), so a failed part is simply run again. Each run writes
``OUT/prediction_summary.json`` (``prediction_summary_part_K_of_N.json`` for a part); ``--gather`` reads
them all and checks every input case against the outputs present.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from clinix.errors import ClinixError
from clinix.io.atomic import write_json

Part = tuple[int, int]
T = TypeVar("T")
_PART = re.compile(r"(\d+)/(\d+)")
SUMMARY_GLOB = "prediction_summary*.json"


def parse_part(text: str | None) -> Part | None:
    """``"1/4"`` -> ``(1, 4)``; ``"auto"`` -> from the environment; None -> None (every case)."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return part_from_environment()
    match = _PART.fullmatch(text.strip())
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise ClinixError(f"--part expects K/N with 0 <= K < N (e.g. 0/4) or 'auto', got {text!r}")
    return int(match.group(1)), int(match.group(2))


def part_from_environment(environ: dict[str, str] | None = None) -> Part:
    """K/N of this process under torchrun or in a Slurm job array; a ClinixError outside both."""
    env = os.environ if environ is None else environ
    try:
        if "WORLD_SIZE" in env and "RANK" in env:
            part = _checked(int(env["RANK"]), int(env["WORLD_SIZE"]))
            _use_local_gpu(int(env.get("LOCAL_RANK", "0")))
            return part
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return _checked(int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"]))
    except ValueError:
        pass
    raise ClinixError(
        "--part auto needs torchrun (RANK, WORLD_SIZE) or a Slurm job array (SLURM_ARRAY_TASK_ID, "
        "SLURM_ARRAY_TASK_COUNT); give --part K/N otherwise"
    )


def _use_local_gpu(local_rank: int) -> None:
    """Under torchrun each process predicts on its own GPU (``cuda`` then means that one)."""
    import torch

    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)


def _checked(k: int, n: int) -> Part:
    if not 0 <= k < n:
        raise ValueError
    return k, n


def select_part(items: Sequence[T], part: Part | None) -> list[T]:
    """Every N-th item of ``items`` from the K-th (all of them without a part)."""
    return list(items) if part is None else list(items[part[0] :: part[1]])


def summary_path(out_dir: Path, part: Part | None) -> Path:
    name = "prediction_summary.json" if part is None else f"prediction_summary_part_{part[0]}_of_{part[1]}.json"
    return out_dir / name


def write_part_summary(out_dir: Path, part: Part | None, record: dict[str, Any]) -> Path:
    """This run's record (cases, written, skipped, failed, ...) as ``summary_path``."""
    return write_json(summary_path(out_dir, part), {"part": list(part) if part else None, **record})


@dataclass
class Gathered:
    """What the parts of a folder prediction did together."""

    cases: list[str]
    done: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # case -> message of the last part that failed it
    parts: list[Part | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing


def gather_parts(case_ids: Sequence[str], outputs_present: Sequence[bool], out_dir: Path) -> Gathered:
    """Every input case with its outputs present or not, and the parts' summaries in ``out_dir``."""
    gathered = Gathered(list(case_ids))
    for case_id, present in zip(case_ids, outputs_present, strict=True):
        (gathered.done if present else gathered.missing).append(case_id)
    for path in sorted(out_dir.glob(SUMMARY_GLOB)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ClinixError(f"{path}: cannot be read ({error})") from None
        gathered.parts.append(tuple(record["part"]) if record.get("part") else None)  # type: ignore[arg-type]
        gathered.seconds += record.get("seconds", [])
        for failure in record.get("failed", []):
            if failure["case"] in gathered.missing:
                gathered.failed[failure["case"]] = failure["message"]
    return gathered
