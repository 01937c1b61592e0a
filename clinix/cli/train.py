"""`clinix train`: train one fold (or all cases) on the preprocessed dataset; under torchrun, on every GPU."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from clinix.cli import options
from clinix.cli.app import app

DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or mps.")


@app.command("train")
def train(
    fold: str = typer.Option(..., "--fold", "-f", help="Fold 0-4 of WORK/splits.json, or 'all' (every case)."),
    workdir: Path = options.WORKDIR,
    device: str = DEVICE,
    epochs: int = typer.Option(None, "--epochs", min=1, help="Epochs (default: the plan's).", show_default=False),
    iterations: int = typer.Option(
        None, "--iters", min=1, help="Training iterations per epoch (default: the plan's).", show_default=False
    ),
    val_iterations: int = typer.Option(
        None, "--val-iters", min=1, help="Validation iterations per epoch (default: the plan's).", show_default=False
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue a stopped run; with --epochs above a finished run's, train it on (the schedule restarts).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a fold folder that holds a run."),
    keep_every: int = typer.Option(
        None,
        "--keep-every",
        min=1,
        help="Also keep checkpoint_epoch_E.pt every K epochs (default: only latest, best and final).",
        show_default=False,
    ),
    seed: int = typer.Option(
        None, "--seed", min=0, help="Seed of every random stream (default 0, or the resumed run's).", show_default=False
    ),
    workers: int = typer.Option(
        None, "--workers", "-j", min=0, help="Data-loading threads (default: up to 4; 0: none).", show_default=False
    ),
    validation: bool = typer.Option(
        True, "--validation/--no-validation", help="Predict and evaluate the validation cases at the end."
    ),
    fast_validation: bool = typer.Option(False, "--fast-validation", help="Final validation without mirroring TTA."),
    save_probabilities: bool = typer.Option(
        False,
        "--save-probabilities",
        help="Keep the validation's probabilities (CASE.npz) for 'clinix best' ensembles (nnU-Net's --npz).",
    ),
    validate_only: bool = typer.Option(
        False, "--validate-only", help="Do not train: validate the fold's final checkpoint again."
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto, fp32 or bf16: the forward passes' arithmetic (losses and Mamba layers stay float32). auto: "
        "bf16 on a CPU with bf16 instructions where a self-check finds it faster, bf16 or fp16 on CUDA; a "
        "resumed run keeps its own.",
    ),
) -> None:
    """Train fold F of the planned, preprocessed dataset into WORK/results/3d_fullres/fold_F/."""
    from clinix.crossval import train_and_validate
    from clinix.train import TrainingOptions
    from clinix.workdir import resolve_workdir

    training = TrainingOptions(
        device=device,
        epochs=epochs,
        iterations=iterations,
        val_iterations=val_iterations,
        resume=resume,
        overwrite=overwrite,
        keep_every=keep_every,
        seed=seed,
        workers=workers,
        precision=precision,
    )
    result = train_and_validate(
        resolve_workdir(workdir),
        fold,
        training,
        validation=validation,
        tta=not fast_validation,
        save_probabilities=save_probabilities,
        validate_only=validate_only,
    )
    if not result.main_process:
        return
    console = Console()
    best = "n/a" if result.best_ema is None else f"{result.best_ema:.4f}"
    console.print(f"fold {result.fold}: {result.epochs} epochs, best EMA pseudo-Dice {best}")
    if result.validation_summary is not None:
        dice = "n/a" if result.validation_dice is None else f"{result.validation_dice:.4f}"
        console.print(f"validation mean DSC {dice}: {result.validation_summary}")
    console.print(f"output: {result.folder}")
