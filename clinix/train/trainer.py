"""The training loop of one fold (SPEC §6; nnU-Net reference §5.6): ``train_fold``, behind ``clinix train``.

Every epoch: set the poly learning rate, reseed, run ``iterations`` training steps and ``val_iterations``
validation steps, log the epoch, write ``checkpoint_latest.pt`` (and ``checkpoint_best.pt`` when the EMA
pseudo-Dice improves). After the last epoch: ``checkpoint_final.pt``. The full validation of the fold is
clinix.crossval's (``clinix train`` runs both).

Every random stream is a function of the run seed, the rank and the epoch (schedule.py), so a run resumed
from the checkpoint of epoch k continues exactly as the uninterrupted run would have: on the CPU it ends
with the same weights (on CUDA, cuDNN autotuning may pick other kernels from run to run). Under torchrun
(distributed.py) each rank trains on its share of the batch and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils import clip_grad_norm_

from clinix.checkpoint import (
    BEST,
    FINAL,
    LATEST,
    epoch_snapshot,
    load_checkpoint,
    save_checkpoint,
)
from clinix.device import precision_name, resolve_precision
from clinix.errors import ClinixError
from clinix.parallel import default_workers
from clinix.plan.model import Plan, load_plan
from clinix.train.augment import AugmentationSettings, augment_batch, enlarged_patch_size
from clinix.train.distributed import (
    DistributedContext,
    barrier,
    context_from_environment,
    rank_batch_size,
    start_process_group,
    stop_process_group,
    sum_over_ranks,
    training_device,
)
from clinix.train.guards import (
    diverged,
    finite_on_every_rank,
    first_nonfinite_parameter,
    require_preprocessed_for,
    warn_if_planned_for_another_device,
)
from clinix.train.loader import BatchLoader
from clinix.train.logging import EpochRecord
from clinix.train.run import (
    Run,
    TrainingOptions,
    TrainingResult,
    build_run,
    checkpoint_state,
    starting_checkpoint,
    with_overrides,
)
from clinix.train.sampling import PatchSampler
from clinix.train.schedule import (
    TRAIN_STREAM,
    VALIDATION_STREAM,
    poly_lr,
    seed_global_generators,
    set_learning_rate,
    stream_seed,
)
from clinix.train.splits import Fold, fold_cases, parse_fold
from clinix.train.validation import confusion_counts, mean_dice, pseudo_dice, update_ema
from clinix.workdir import WorkDir


def train_fold(
    workdir: str | Path, fold: Fold | str, options: TrainingOptions | None = None, **changes: Any
) -> TrainingResult:
    """Train (or resume) fold ``fold`` (0-4 or ``"all"``) of ``workdir``'s preprocessed dataset.

    ``changes`` override fields of ``options``, e.g. ``train_fold(work, 0, epochs=5, device="cpu")``.
    Writes ``workdir/results/3d_fullres/fold_<fold>/``. Under ``torchrun`` every process calls this.
    """
    options = dataclasses.replace(options or TrainingOptions(), **changes)
    workdir, fold = Path(workdir), parse_fold(fold)
    context = context_from_environment()
    device = training_device(options.device, context)
    resolve_precision(options.precision, device, training=True)  # a bad --precision before anything is touched
    start_process_group(context, device)
    try:
        return _train(workdir, fold, options, context, device)
    finally:
        stop_process_group(context)


def _train(
    workdir: Path, fold: Fold, options: TrainingOptions, context: DistributedContext, device: torch.device
) -> TrainingResult:
    folder = WorkDir(workdir).fold(fold)
    train_ids, val_ids = fold_cases(workdir, fold)
    checkpoint_path = starting_checkpoint(folder, options, context)
    checkpoint = load_checkpoint(checkpoint_path, map_location=device) if checkpoint_path else None
    planned = Plan.from_json(checkpoint["plan"]) if checkpoint else load_plan(workdir)
    warn_if_planned_for_another_device(planned, device)
    run = build_run(with_overrides(planned, options), fold, folder, options, context, device, checkpoint)
    require_preprocessed_for(run.plan, workdir, train_ids + val_ids, resumed=checkpoint is not None)
    if checkpoint_path is not None and checkpoint_path.name == FINAL and not _extends(run):
        run.log.line(f"{FINAL} exists: the run is finished ({run.progress.epoch} epochs)", echo=True)
    else:
        _fit(run, workdir, train_ids, val_ids, options.workers)
    return TrainingResult(
        fold, folder, run.progress.epoch, run.progress.best_ema, run.progress.ema, main_process=context.is_main
    )


def _extends(run: Run) -> bool:
    """Whether a finished run is to train on (``--epochs`` above its epochs); logs the learning-rate jump.

    Fewer epochs than it finished is a ClinixError: a run cannot be shortened.
    """
    done, epochs, optimizer = run.progress.epoch, run.plan.epochs, run.plan.optimizer
    if epochs < done:
        raise ClinixError(
            f"{run.folder} finished {done} epochs; --epochs {epochs} cannot shorten it "
            "(train a new run with --overwrite)"
        )
    if epochs == done:
        return False
    last = run.progress.history[-1]["lr"] if run.progress.history else float("nan")
    restart = poly_lr(optimizer.lr, done, epochs, optimizer.poly_exponent)
    run.log.line(
        f"extending the finished run from {done} to {epochs} epochs: the poly schedule is recomputed for "
        f"{epochs} epochs, so the learning rate jumps back up from {last:.3g} to {restart:.3g}",
        echo=True,
    )
    return True


def _fit(run: Run, workdir: Path, train_ids: list[str], val_ids: list[str], workers: int | None) -> None:
    """Epochs ``progress.epoch .. plan.epochs − 1``, then the final checkpoint."""
    plan, start = run.plan, run.progress.epoch
    run.log.restart_metrics(run.progress.history)
    verb = f"resuming at epoch {start}" if start else "training"
    run.log.line(
        f"{verb}: fold {run.fold}, {plan.arch}, {len(train_ids)} training / {len(val_ids)} validation cases, "
        f"{plan.epochs} epochs × {plan.iterations_per_epoch} iterations, seed {run.seed}, {run.device}, "
        f"{precision_name(run.amp_dtype)}"
        + (", checkpointing" if run.network.checkpointing else "")
        + (f", {run.context.world_size} processes" if run.context.enabled else ""),
        echo=True,
    )
    train_loader, val_loader = _loaders(run, workdir, train_ids, val_ids, workers)
    with train_loader, val_loader:  # stops the loaders' threads however the loop ends
        for epoch in range(start, plan.epochs):
            _end_epoch(run, _run_epoch(run, epoch, train_loader, val_loader))
    if run.context.is_main:
        save_checkpoint(run.folder / FINAL, checkpoint_state(run))
    barrier(run.context)


def _loaders(
    run: Run, workdir: Path, train_ids: list[str], val_ids: list[str], workers: int | None
) -> tuple[BatchLoader, BatchLoader]:
    """Training batches (enlarged patches, augmented) and validation batches (plan patches, not augmented)."""
    plan, rank = run.plan, run.context.rank
    batch_size = rank_batch_size(plan.batch_size, run.context)
    threads = default_workers() if workers is None else workers
    enlarged = enlarged_patch_size(plan.patch_size)
    ranks = {"rank": rank, "world_size": run.context.world_size}
    train_sampler = PatchSampler(
        workdir, train_ids, plan.patch_size, batch_size, plan.foreground_oversampling, enlarged, **ranks
    )
    val_sampler = PatchSampler(workdir, val_ids, plan.patch_size, batch_size, plan.foreground_oversampling, **ranks)
    settings = AugmentationSettings()

    def augment(data: torch.Tensor, seg: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return augment_batch(data, seg, plan.patch_size, generator, settings)

    train_seed, val_seed = stream_seed(run.seed, TRAIN_STREAM, rank), stream_seed(run.seed, VALIDATION_STREAM, rank)
    return (
        BatchLoader(train_sampler, augment, threads, train_seed, plan.iterations_per_epoch, run.device),
        BatchLoader(val_sampler, None, threads, val_seed, plan.val_iterations, run.device),
    )


def _run_epoch(run: Run, epoch: int, train_loader: BatchLoader, val_loader: BatchLoader) -> EpochRecord:
    started = time.perf_counter()
    lr = poly_lr(run.plan.optimizer.lr, epoch, run.plan.epochs, run.plan.optimizer.poly_exponent)
    set_learning_rate(run.optimizer, lr)
    seed_global_generators(run.seed, run.context.rank, epoch)
    run.model.train()
    train_loss = _train_epoch(run, epoch, train_loader.epoch(epoch))
    run.model.eval()
    val_loss, counts = _validate_epoch(run, val_loader.epoch(epoch))
    dice = pseudo_dice(counts)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "pseudo_dice": dict(zip(_foreground_names(run.plan), dice, strict=True)),
        "mean": mean_dice(dice),
        "ema": None,
        "lr": lr,
        "seconds": time.perf_counter() - started,
    }


def _foreground_names(plan: Plan) -> list[str]:
    """Names of the foreground outputs: the classes 1..K-1 in label order, or the regions."""
    names = plan.labels.output_names
    return names if plan.labels.is_region_based else names[1:]


def _train_epoch(run: Run, epoch: int, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean training loss over the epoch's steps (and over ranks)."""
    total = torch.zeros(2, dtype=torch.float64, device=run.device)  # loss sum, steps
    with run.log.progress(f"epoch {epoch}", run.plan.iterations_per_epoch) as advance:
        for iteration, (data, target) in enumerate(batches):
            loss = train_step(run, data, target)
            value = loss.item()
            if not finite_on_every_rank(value, run.context, run.device):
                _stop_diverged(run, f"the training loss is {value} at iteration {iteration} of epoch {epoch}")
            total += torch.stack([loss.double(), torch.ones((), dtype=torch.float64, device=run.device)])
            advance(value)
    total = sum_over_ranks(total, run.context)
    return float(total[0] / total[1])


def _stop_diverged(run: Run, what: str) -> None:
    error = diverged(what, run.folder, run.progress.epoch)
    run.log.line(f"error: {error}")
    raise error


def train_step(run: Run, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One optimizer step on a batch ``(B, C, *patch)`` / ``(B, 1, *patch)``; returns the detached loss."""
    data, target = data.to(run.device, non_blocking=True), target.to(run.device, non_blocking=True)
    run.optimizer.zero_grad(set_to_none=True)
    with _autocast(run):
        outputs = run.model(data)
    loss = run.loss(_float32(outputs), target)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
    clip_grad_norm_(run.network.parameters(), run.plan.optimizer.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss.detach()


def _autocast(run: Run) -> AbstractContextManager:
    # the Mamba layers switch themselves back to float32 (SPEC §6); the losses run after, in float32
    return torch.autocast(run.device.type, dtype=run.amp_dtype) if run.amp_dtype else nullcontext()


def _float32(outputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The deep-supervision logits in float32, for the losses (a no-op without autocast)."""
    return [logits.float() for logits in outputs]


@torch.no_grad()
def _validate_epoch(run: Run, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, torch.Tensor]:
    """Mean validation loss and the ``(3, K-1)`` TP/FP/FN counts of the full-resolution output, over ranks."""
    total = torch.zeros(2, dtype=torch.float64, device=run.device)
    regions = run.plan.labels.regions or None
    counts = torch.zeros(3, len(_foreground_names(run.plan)), dtype=torch.int64, device=run.device)
    for data, target in batches:
        data, target = data.to(run.device, non_blocking=True), target.to(run.device, non_blocking=True)
        with _autocast(run):
            outputs = _float32(run.model(data))
        loss = run.loss(outputs, target)
        total += torch.stack([loss.double(), torch.ones((), dtype=torch.float64, device=run.device)])
        counts += confusion_counts(outputs[0], target, run.plan.ignore_label, regions)
    total, counts = sum_over_ranks(total, run.context), sum_over_ranks(counts, run.context)
    mean = float(total[0] / total[1])
    if not math.isfinite(mean):  # the same sum on every rank: all stop together
        _stop_diverged(run, f"the validation loss of epoch {run.progress.epoch} is {mean}")
    return mean, counts


def _end_epoch(run: Run, record: EpochRecord) -> None:
    """EMA, history, log lines, progress.png, then the checkpoints (rank 0; the others wait)."""
    progress = run.progress
    broken = first_nonfinite_parameter(run.network)  # identical weights on every rank
    if broken is not None:
        _stop_diverged(run, f"the weights ({broken}) are no longer finite after epoch {record['epoch']}")
    progress.ema = record["ema"] = update_ema(progress.ema, record["mean"])
    progress.history.append(record)
    progress.epoch += 1
    improved = progress.ema is not None and (progress.best_ema is None or progress.ema > progress.best_ema)
    if improved:
        progress.best_ema = progress.ema
    run.log.record_epoch(record, progress.history)
    if run.context.is_main:
        state = checkpoint_state(run)
        if improved:
            save_checkpoint(run.folder / BEST, state)
            run.log.line(f"new best EMA pseudo-Dice {progress.best_ema:.4f}")
        save_checkpoint(run.folder / LATEST, state)
        if run.keep_every and progress.epoch % run.keep_every == 0:
            save_checkpoint(run.folder / epoch_snapshot(progress.epoch), state)
    barrier(run.context)
