"""`clinix predict IN OUT`: segment images with the ensemble of trained folds (SPEC §7)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from clinix.cli import options
from clinix.cli.app import EXIT_BAD_INPUT, app
from clinix.workdir import resolve_workdir

if TYPE_CHECKING:
    from clinix.infer import PredictionSummary
    from clinix.infer.parts import Gathered

FOLDS_HELP = (
    "Folds to ensemble: comma-separated numbers (0,1,2,3,4), 'all' (the fold_all model) or 'best' (the one fold "
    "whose checkpoint stores the highest best EMA pseudo-Dice). Default: every trained numbered fold."
)


@app.command("predict")
def predict(
    in_path: Path = typer.Argument(..., help="Folder of CASE_XXXX images (or one file per case), or one image."),
    out_dir: Path = typer.Argument(..., help="Folder for CASE<ending> label maps (created if missing)."),
    workdir: Path = options.WORKDIR,
    model: Path = typer.Option(
        None,
        "--model",
        "-m",
        help="A model bundle from 'clinix export' (model.zip), or the inference.json of 'clinix best', instead "
        "of the working folder's folds.",
        show_default=False,
    ),
    folds: str = typer.Option(None, "--folds", help=FOLDS_HELP, show_default=False),
    checkpoint: str = typer.Option("final", "--checkpoint", help="Which checkpoint of each fold: final or best."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Mirror test-time augmentation on all axes (8 passes)."),
    step: float = typer.Option(0.5, "--step", help="Tile step as a fraction of the patch size."),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write CASE.npz (float16 class probabilities) and CASE.json."
    ),
    device: str = typer.Option("auto", "--device", help="auto (cuda, else mps, else cpu), cpu, cuda or mps."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Network arithmetic: auto (float16 on CUDA; bf16 on a CPU with AVX-512 BF16 or AMX where it is faster; "
        "else fp32), fp32 or bf16.",
    ),
    overwrite: bool = options.OVERWRITE,
    postprocess: bool = typer.Option(
        True,
        "--postprocess/--no-postprocess",
        help="Apply the postprocessing 'clinix crossval' chose (WORK/results/3d_fullres/postprocessing.json).",
    ),
    part: str = typer.Option(
        None,
        "--part",
        help="K/N: predict every N-th case from the K-th (0 <= K < N), for N machines or GPUs sharing IN; "
        "'auto' reads K/N from torchrun or a Slurm job array.",
        show_default=False,
    ),
    gather: bool = typer.Option(
        False, "--gather", help="Predict nothing: check that every case of IN is in OUT, over all parts."
    ),
    profile: bool = typer.Option(
        False, "--profile", help="Also print where the time went: read, preprocess, network, restore, write."
    ),
    batch_tiles: int = typer.Option(
        None,
        "--batch-tiles",
        min=1,
        help="Tiles per forward pass (default 4 on CUDA, 2 otherwise).",
        show_default=False,
    ),
) -> None:
    """Predict label maps with the input's exact geometry; a bad input fails alone (exit code 2 at the end)."""
    from clinix.bundle import predict_with_bundle
    from clinix.ensemble import predict_with_inference
    from clinix.infer import predict_folder
    from clinix.infer.parts import parse_part
    from clinix.infer.run import gather_predictions

    if gather:
        _report_gathered(gather_predictions(in_path, out_dir, save_probabilities), out_dir)
        return

    chosen_folds = folds if folds in (None, "all", "best") else options.parse_int_list("--folds", folds)
    if model is not None:
        run, source = predict_with_inference if model.suffix.lower() == ".json" else predict_with_bundle, model
    else:
        run, source = predict_folder, resolve_workdir(workdir)
    summary = run(
        source,
        in_path,
        out_dir,
        folds=chosen_folds,
        checkpoint=checkpoint,
        tta=tta,
        step=step,
        save_probabilities=save_probabilities,
        device=device,
        overwrite=overwrite,
        batch_tiles=batch_tiles,
        precision=precision,
        postprocess=postprocess,
        part=parse_part(part),
    )
    for failure in summary.failed:
        typer.echo(f"error: {failure}", err=True)
    table = Table(title=f"clinix predict -> {summary.out_dir}")
    for column in ("written", "skipped", "failed", "seconds per case", "folds", "device", "precision"):
        table.add_column(column)
    per_case = f"{sum(summary.seconds) / len(summary.seconds):.2f}" if summary.seconds else "-"
    folds_used = ",".join(str(fold) for fold in summary.folds)
    counts = (len(summary.written), len(summary.skipped), len(summary.failed))
    table.add_row(*(str(n) for n in counts), per_case, folds_used, summary.device, summary.precision)
    Console().print(table)
    if summary.postprocessing != "none":
        Console().print(f"postprocessing: {summary.postprocessing}", highlight=False)
    if profile:
        Console().print(profile_table(summary))
    if summary.failed:
        raise typer.Exit(EXIT_BAD_INPUT)


def _report_gathered(gathered: Gathered, out_dir: Path) -> None:
    """The table of ``--gather``; exit 2 when a case has no output yet."""
    for case_id in gathered.missing:
        reason = gathered.failed.get(case_id, "not predicted yet (run its part again)")
        typer.echo(f"error: {case_id}: {reason}", err=True)
    table = Table(title=f"clinix predict --gather -> {out_dir}")
    for column in ("cases", "done", "missing", "part summaries", "seconds per case"):
        table.add_column(column)
    per_case = f"{sum(gathered.seconds) / len(gathered.seconds):.2f}" if gathered.seconds else "-"
    counts = (len(gathered.cases), len(gathered.done), len(gathered.missing), len(gathered.parts))
    table.add_row(*(str(n) for n in counts), per_case)
    Console().print(table)
    if not gathered.complete:
        raise typer.Exit(EXIT_BAD_INPUT)


def profile_table(summary: PredictionSummary) -> Table:
    """Seconds per stage, summed over the predicted cases, and each stage's share of their total."""
    seconds = summary.stages.seconds
    total = sum(seconds.values()) or 1.0
    table = Table(title="where the time went")
    for column in ("stage", "seconds", "share"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for stage, value in seconds.items():
        table.add_row(stage, f"{value:.2f}", f"{100 * value / total:.0f} %")
    return table
