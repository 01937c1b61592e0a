"""Checks that stop a training run before it wastes days or writes a bad checkpoint.

- The preprocessed arrays must belong to the run's plan (a re-plan without re-preprocessing would
  otherwise train on the old plan's data without a word).
- A GPU plan about to train on a CPU gets one warning that names the CPU plan.
- A NaN or infinite loss, or weights that stopped being finite, end the run with one line naming the
  epoch and the last good checkpoint; a checkpoint is never written from such weights.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from clinix.checkpoint import LATEST
from clinix.errors import ClinixError, ClinixWarning
from clinix.plan.model import Plan
from clinix.preprocess import cases_not_preprocessed_for
from clinix.train.distributed import DistributedContext, sum_over_ranks
from clinix.workdir import WorkDir


class TrainingDiverged(ClinixError):
    """The loss or the weights stopped being finite; nothing of the failing epoch was saved."""


def require_preprocessed_for(plan: Plan, workdir: Path, case_ids: list[str], resumed: bool) -> None:
    """Refuse to train on preprocessed arrays that are missing or were made with another plan."""
    stale = cases_not_preprocessed_for(workdir, plan, case_ids)
    if not stale:
        return
    which = f"{WorkDir(workdir).preprocessed()}: {len(stale)} of {len(case_ids)} cases (first: {stale[0]})"
    if resumed:
        raise ClinixError(
            f"{which} are not preprocessed for the plan this run was started with (plans.json changed since); "
            "start over with --overwrite, or restore that plans.json and re-run 'clinix preprocess'"
        )
    raise ClinixError(f"{which} are not preprocessed for the current plans.json; re-run 'clinix preprocess'")


def warn_if_planned_for_another_device(plan: Plan, device: torch.device) -> None:
    """One warning when a GPU plan (its patch, 1000 × 250 iterations) is about to train on the CPU."""
    if device.type == "cpu" and plan.device != "cpu":
        iterations = plan.epochs * plan.iterations_per_epoch
        warnings.warn(
            f"this plan was made for a GPU ({plan.device}: patch {plan.patch_size}, {iterations:,} iterations) and "
            "would take days on this CPU; for a plan sized for it run 'clinix plan DATASET --device cpu'",
            ClinixWarning,
            stacklevel=2,
        )


def finite_on_every_rank(value: float, context: DistributedContext, device: torch.device) -> bool:
    """Whether ``value`` is finite here and on every other rank (all ranks get the same answer)."""
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=device)
    return float(sum_over_ranks(bad, context)[0]) == 0.0


def diverged(what: str, folder: Path, completed_epochs: int) -> TrainingDiverged:
    """The error of a run where ``what`` ("the training loss is nan at iteration 3 of epoch 2") happened."""
    if completed_epochs:
        last_good = f"the last good checkpoint is {folder / LATEST} (after epoch {completed_epochs - 1})"
    else:
        last_good = "no checkpoint was written yet"
    return TrainingDiverged(
        f"training diverged: {what}; nothing of that epoch was saved and {last_good}; "
        "lower the learning rate (plans.json 'optimizer') or check the data"
    )


def first_nonfinite_parameter(network: nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or infinite value, None when all are finite."""
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if not bool(torch.isfinite(parameter).all()):
                return name
    return None
