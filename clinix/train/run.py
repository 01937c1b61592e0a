"""A training run assembled: its options, its state, and what a checkpoint holds of it.

``build_run`` makes the network (deep supervision on), optimizer, scaler, loss and log of a fold's run, or
restores them from a checkpoint; ``checkpoint_state`` is the inverse. The loop that runs it is trainer.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clinix import __version__
from clinix.checkpoint import (
    BEST,
    EPOCH_SNAPSHOTS,
    FINAL,
    LATEST,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from clinix.device import precision_name, resolve_precision
from clinix.errors import ClinixError
from clinix.net.network import ClinixUNet, NetworkConfig
from clinix.net.registry import build_network
from clinix.plan.model import Plan
from clinix.train.augment import AugmentationSettings
from clinix.train.distributed import (
    DistributedContext,
    barrier,
    ddp_loss_weights,
    wrap_model,
)
from clinix.train.logging import EpochRecord, TrainingLog
from clinix.train.losses import build_loss, deep_supervision_weights
from clinix.train.schedule import INIT_STREAM, build_optimizer, stream_seed
from clinix.train.splits import Fold


@dataclass(frozen=True)
class TrainingOptions:
    """How to run ``train_fold``. None means the plan's value (or, on ``resume``, the run's own)."""

    device: str = "auto"
    epochs: int | None = None
    iterations: int | None = None
    val_iterations: int | None = None
    seed: int | None = None
    workers: int | None = None
    resume: bool = False
    overwrite: bool = False
    keep_every: int | None = None  # also keep checkpoint_epoch_E.pt every this many epochs
    precision: str = "auto"  # clinix.device.PRECISIONS; auto on resume: the run's own
    echo: bool = True


@dataclass
class TrainingResult:
    """What a fold's run produced; ``validation_dice`` is the validation's mean DSC over classes."""

    fold: Fold
    folder: Path
    epochs: int
    best_ema: float | None
    ema: float | None
    validation_summary: Path | None = None
    validation_dice: float | None = None
    main_process: bool = True  # False on the ranks other than 0 of a torchrun job


@dataclass
class Progress:
    """How far a run got: what a checkpoint restores besides the weights and the optimizer."""

    epoch: int = 0  # completed epochs
    ema: float | None = None
    best_ema: float | None = None
    history: list[EpochRecord] = field(default_factory=list)


@dataclass
class Run:
    """Everything the loop works with. ``model`` is ``network``, or ``network`` under DDP."""

    plan: Plan
    fold: Fold
    folder: Path
    seed: int
    device: torch.device
    context: DistributedContext
    network: ClinixUNet
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss: nn.Module
    amp_dtype: torch.dtype | None
    log: TrainingLog
    progress: Progress = field(default_factory=Progress)
    keep_every: int | None = None


def starting_checkpoint(folder: Path, options: TrainingOptions, context: DistributedContext) -> Path | None:
    """The checkpoint to continue from, or None for a fresh run.

    ``resume``: the final checkpoint, unless the latest is further on (a run extended beyond its final
    epochs and stopped on the way). A fresh run in a folder that holds one is refused unless ``overwrite``,
    which deletes its checkpoints.
    """
    existing = [folder / name for name in (FINAL, LATEST) if (folder / name).is_file()]
    if options.resume:
        if not existing:
            raise ClinixError(f"--resume: {folder} holds no {LATEST} or {FINAL} to continue from")
        if len(existing) == 2 and _epoch_of(existing[1]) > _epoch_of(existing[0]):
            return existing[1]
        return existing[0]
    if existing and not options.overwrite:
        raise ClinixError(
            f"{folder} already holds a run ({existing[0].name}); "
            "continue it with --resume or start over with --overwrite"
        )
    barrier(context)  # every rank has looked before rank 0 deletes
    if existing and context.is_main:
        for path in [folder / name for name in (FINAL, LATEST, BEST)] + list(folder.glob(EPOCH_SNAPSHOTS)):
            path.unlink(missing_ok=True)
    barrier(context)
    return None


def _epoch_of(path: Path) -> int:
    return int(load_checkpoint(path, mmap=True)["epoch"])


def with_overrides(plan: Plan, options: TrainingOptions) -> Plan:
    """The plan of the run: plans.json (or the resumed run's own), with the options' epochs and iterations."""
    overrides = {
        "epochs": options.epochs,
        "iterations_per_epoch": options.iterations,
        "val_iterations": options.val_iterations,
    }
    for name, value in overrides.items():
        if value is not None and value < 1:
            raise ClinixError(f"{name.replace('_', ' ')} must be at least 1, got {value}")
    return dataclasses.replace(plan, **{name: value for name, value in overrides.items() if value is not None})


def build_run(
    plan: Plan,
    fold: Fold,
    folder: Path,
    options: TrainingOptions,
    context: DistributedContext,
    device: torch.device,
    checkpoint: dict[str, Any] | None = None,
) -> Run:
    """The network (deep supervision on), optimizer, scaler, loss and log of a run, restored from
    ``checkpoint`` when given. Also used by ``bench/train_step.py`` to time ``train_step``.
    """
    seed = options.seed if options.seed is not None else checkpoint.get("seed", 0) if checkpoint else 0
    if seed < 0:
        raise ClinixError(f"--seed must be non-negative, got {seed}")
    torch.manual_seed(stream_seed(seed, INIT_STREAM))  # the initial weights (DDP then copies rank 0's)
    config = NetworkConfig.from_dict({**plan.network, "deep_supervision": True})
    network = build_network(plan.arch, config).place(device)
    weights = deep_supervision_weights(network.config.num_stages - 1)
    resumed = checkpoint.get("precision") if checkpoint else None
    amp_dtype = training_precision(options.precision, device, resumed)
    run = Run(
        plan=plan,
        fold=fold,
        folder=folder,
        seed=seed,
        device=device,
        context=context,
        network=network,
        model=wrap_model(network, context, device),
        optimizer=build_optimizer(network.parameters(), plan.optimizer),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        loss=build_loss(
            plan.loss,
            batch_dice=plan.batch_dice,
            ignore_label=plan.ignore_label,
            deep_supervision_weights=ddp_loss_weights(weights, context),
            regions=plan.labels.regions or None,
        ),
        amp_dtype=amp_dtype,
        log=TrainingLog(folder, enabled=context.is_main, echo=options.echo),
        keep_every=options.keep_every,
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if checkpoint is not None:
        _restore(run, checkpoint)
    return run


def training_precision(requested: str, device: torch.device, resumed: str | None = None) -> torch.dtype | None:
    """The autocast dtype of the forward passes (``clinix.device.resolve_precision`` for training).

    ``auto`` on a resumed run keeps the precision it was trained in (``resumed``, the checkpoint's), so a
    resume is exact even where the self-check would now decide otherwise; where that precision is not
    available any more (another machine), ``auto`` decides afresh.
    """
    if requested == "auto" and resumed in ("fp32", "bf16"):
        with contextlib.suppress(ClinixError):
            return resolve_precision(resumed, device, training=True)
    return resolve_precision(requested, device, training=True)


def _restore(run: Run, checkpoint: dict[str, Any]) -> None:
    try:
        run.network.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ClinixError(
            f"the checkpoint does not fit its own plan's network ({str(error).splitlines()[0]})"
        ) from None
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(checkpoint["scaler"])
    restore_rng_state(checkpoint["rng"])
    run.progress = Progress(checkpoint["epoch"], checkpoint["ema"], checkpoint["best_ema"], list(checkpoint["history"]))


def checkpoint_state(run: Run) -> dict[str, Any]:
    """The checkpoint dict (keys in clinix.checkpoint) for the run as it stands."""
    progress = run.progress
    return {
        "model": run.network.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "scheduler": {"epoch": progress.epoch, "lr": run.optimizer.param_groups[0]["lr"]},
        "epoch": progress.epoch,
        "best_ema": progress.best_ema,
        "ema": progress.ema,
        "history": progress.history,
        "rng": capture_rng_state(),
        "plan": run.plan.to_json(),
        "fold": run.fold,
        "seed": run.seed,
        "precision": precision_name(run.amp_dtype),
        "clinix_version": __version__,
        "mirror_axes": list(AugmentationSettings().mirror_axes),
    }
