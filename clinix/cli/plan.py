"""`clinix plan DATASET`: fingerprint when missing, then write WORK/plans.json and show the plan.

Like every command module, it imports the library inside the command: worker processes re-import the
CLI, and `clinix --help` should not pay for torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from clinix.cli import options
from clinix.cli.app import app
from clinix.workdir import resolve_workdir

if TYPE_CHECKING:
    from clinix.plan import Plan

DEFAULT_ARCH = "mambaclinix"
DEFAULT_LOSS = "ce-dice-trs"

BLOCK_LETTERS = {"hgcn": "H", "mamba": "M", "residual": "R"}


@app.command("plan")
def plan(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net v2 raw or Decathlon layout)."),
    workdir: Path = options.WORKDIR,
    memory_gb: float = typer.Option(8.0, "--memory-gb", help="Memory target of one training iteration (GB)."),
    device: str = typer.Option("cuda", "--device", help="Plan for 'cuda' (GPU memory) or 'cpu' (2-core time budget)."),
    arch: str = typer.Option(DEFAULT_ARCH, "--arch", help=options.ARCH_HELP),
    loss: str = typer.Option(DEFAULT_LOSS, "--loss", help="ce-dice | ce-dice-rs | ce-dice-trs-fixed | ce-dice-trs."),
    orders: str = typer.Option(None, "--orders", help="hgConv orders of the HGCN stages, e.g. 4,5,6."),
    seconds_per_iteration: float = typer.Option(
        None,
        "--seconds-per-iteration",
        help="CPU plans: seconds one training iteration may take on this machine (default 2; more: larger patch).",
        show_default=False,
    ),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="Measure this CPU's training speed again."),
    crop: str = typer.Option(
        "auto",
        "--crop",
        help="What preprocessing keeps: nonzero (as nnU-Net), body (CT: the patient's box; air, table and "
        "padding cut) or auto (body for a CT dataset planned for the CPU).",
    ),
    train_minutes: float = typer.Option(
        None,
        "--train-minutes",
        help="CPU plans: train for about this many minutes on this machine (sets the epochs).",
        show_default=False,
    ),
    checkpointing: bool = typer.Option(
        False,
        "--checkpointing",
        help="Recompute activations in backward: about half the training memory (larger patches on a small GPU) "
        "for about a quarter more time per step.",
    ),
    workers: int = options.WORKERS,
) -> None:
    """Choose spacing, normalization, patch, batch and network for a dataset (3d_fullres)."""
    from clinix.plan import plan_experiment

    result, path = plan_experiment(
        dataset,
        resolve_workdir(workdir),
        memory_gb=memory_gb,
        device=device,
        arch=arch,
        loss=loss,
        orders=None if orders is None else options.parse_int_list("--orders", orders),
        workers=workers,
        seconds_per_iteration=seconds_per_iteration,
        recalibrate=recalibrate,
        crop=crop,
        train_minutes=train_minutes,
        checkpointing=checkpointing,
    )
    console = Console()
    console.print(plan_table(result))
    for note in result.notes:
        console.print(note)
    console.print(f"wrote {path}")


def plan_table(plan: Plan) -> Table:
    """The paper's Table 2 row for this plan, plus spacing, network and loss."""
    network = plan.network
    blocks = [
        BLOCK_LETTERS[b] + (f"({n})" if n is not None else "")
        for b, n in zip(network["block_map"], network["orders"], strict=True)
    ]
    pools = [sum(1 for s in network["strides"] if s[a] == 2) for a in range(3)]
    table = Table(title=f"{plan.dataset['name']} · {plan.configuration} · {plan.device}")
    for column in ("Stages", "Encoder blocks", "Patch size", "Batch size", "Pooling per axis"):
        table.add_column(column)
    table.add_row(
        str(len(blocks)), "[" + ", ".join(blocks) + "]", _tuple(plan.patch_size), str(plan.batch_size), _tuple(pools)
    )
    table.caption = (
        f"spacing {_tuple(plan.target_spacing, '.3g')} mm · crop {plan.crop} · arch {plan.arch} · loss {plan.loss} · "
        f"features {network['features']}{' · checkpointing' if network.get('checkpointing') else ''} · "
        f"{_outputs(plan)} · {_costs(plan)}"
    )
    return table


def _outputs(plan: Plan) -> str:
    """ "3 softmax outputs" for classes, "3 sigmoid outputs (regions WT, TC, ET)" for regions."""
    labels = plan.labels
    text = f"{labels.num_outputs} {labels.activation} outputs"
    if labels.is_region_based:
        text += f" (regions {', '.join(labels.output_names)})"
    return text


def _costs(plan: Plan) -> str:
    """ "memory 7.42 of 8 GB (cuda)" and, for a CPU plan, "2.00 s per iteration of 2 s (95 GFLOP/s measured)"."""
    where = "RAM" if plan.device == "cpu" else plan.device
    text = f"memory {plan.memory_estimate_gb:.2f} of {plan.memory_gb:g} GB ({where})"
    if plan.seconds_per_iteration_estimate is not None and plan.cpu_flops_per_second:
        speed = plan.cpu_flops_per_second / 1e9
        text += (
            f" · {plan.seconds_per_iteration_estimate:.2f} s per iteration of {plan.seconds_per_iteration_budget:g} s"
            f" ({speed:.0f} GFLOP/s measured)"
        )
    return text


def _tuple(values: list, spec: str = "") -> str:
    return "(" + ", ".join(format(v, spec) for v in values) + ")"
