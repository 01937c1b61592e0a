"""`clinix info`: parameters, forward FLOPs, scan backend and stages of a network (torch loads lazily)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from clinix.cli.app import app
from clinix.cli.options import ARCH_HELP, parse_int_list
from clinix.errors import ClinixError

if TYPE_CHECKING:
    from clinix.net.summary import NetworkSummary

DEFAULT_ARCH, DEFAULT_STAGES, DEFAULT_PATCH = "mambaclinix", 6, "128,128,128"


@app.command("info")
def info(
    plans: Path | None = typer.Option(None, "--plans", help="Describe the network of this plans.json."),
    arch: str | None = typer.Option(None, "--arch", help=ARCH_HELP),
    stages: int | None = typer.Option(None, "--stages", help=f"Encoder stages (default {DEFAULT_STAGES})."),
    patch: str | None = typer.Option(None, "--patch", help=f"Patch Z,Y,X (default {DEFAULT_PATCH})."),
    orders: str | None = typer.Option(None, "--orders", help="hgConv orders of the HGCN stages, e.g. 4,5,6."),
    in_channels: int = typer.Option(1, "--in-channels", help="Input channels (without --plans)."),
    classes: int = typer.Option(2, "--classes", help="Classes including background (without --plans)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Parameters, forward FLOPs at the patch, the active scan backend, and the stages of a network."""
    from clinix.net.summary import summarize_arch, summarize_plans

    if plans is not None:
        if any(value is not None for value in (arch, stages, patch, orders)):
            raise ClinixError("--plans describes its own network: drop --arch, --stages, --patch and --orders")
        summary = summarize_plans(plans)
    else:
        summary = summarize_arch(
            arch or DEFAULT_ARCH,
            stages or DEFAULT_STAGES,
            parse_int_list("--patch", patch or DEFAULT_PATCH),
            in_channels=in_channels,
            num_classes=classes,
            orders=None if orders is None else parse_int_list("--orders", orders),
        )
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary)


def _axes(values: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in values)


def _print_summary(summary: NetworkSummary) -> None:
    console = Console()
    console.print(
        f"[bold]{summary.arch}[/bold]: {summary.in_channels} input channel(s), {summary.num_classes} classes, "
        f"patch {_axes(summary.patch_size)}"
    )
    console.print(
        f"parameters {summary.parameters:,} ({summary.parameters / 1e6:.2f} M; "
        f"encoder {summary.encoder_parameters / 1e6:.2f} M)"
    )
    console.print(f"forward {summary.forward_flops / 1e9:,.1f} GFLOPs ({summary.flops_note})")
    console.print(f"selective scan backend: {summary.scan_backend}")
    table = Table("stage", "features", "stride", "kernel", "block", "order", "feature map", "tokens")
    for stage in summary.stages:
        table.add_row(
            str(stage.stage),
            str(stage.features),
            _axes(stage.stride),
            _axes(stage.kernel),
            stage.block,
            "" if stage.order is None else str(stage.order),
            _axes(stage.feature_map),
            "" if stage.tokens is None else f"{stage.tokens:,}",
        )
    console.print(table)
