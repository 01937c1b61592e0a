"""A small version of the paper's ablations on a phantom, on CPU: Table 4 (``--arch``) and Table 5 (``--loss``).

One phantom, one CPU plan and one preprocessing are shared; every variant then trains fold 0 from the
same seed for the same number of iterations and is scored on its validation cases (DSC and recall per
class, from the final sliding-window validation). The baseline of each table (``resunet``, ``ce-dice``)
is measured in the same run; ratios are against it. Prints a table to stderr and JSON to stdout.

    python bench/ablate.py [--dataset ct|brats] [--epochs 4] [--iters 15] [--archs ...] [--losses ...] [--quick]

``--dataset brats`` runs them on the BraTS-like phantom (4 MRI channels, region training) and reports
whole tumour, tumour core and enhancing tumour, as the paper's Table 4 does.

Small runs rank variants noisily: read the numbers as a smoke test of the ablation machinery, and rerun
the real thing with ``clinix plan --arch A`` / ``--loss L`` on a dataset (see the README).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clinix.crossval import train_and_validate
from clinix.data import write_phantom_dataset
from clinix.data.brats import write_brats_dataset
from clinix.io.atomic import write_json
from clinix.net.network import NetworkConfig
from clinix.net.registry import config_for_arch
from clinix.plan import Plan, load_plan, plan_experiment
from clinix.plan.cost import measure_cost
from clinix.preprocess import preprocess_dataset
from clinix.train import TrainingOptions

ARCHS = ("resunet", "mamba-only", "hgcn-only", "umamba-bot", "mambaclinix")
LOSSES = ("ce-dice", "ce-dice-rs", "ce-dice-trs-fixed", "ce-dice-trs")


def variant_plan(base: Plan, arch: str | None = None, loss: str | None = None) -> Plan:
    """The base plan with another network family (same topology and features) or another loss."""
    network = NetworkConfig.from_dict(base.network)
    if arch is not None:
        network = config_for_arch(
            arch, network.in_channels, network.num_classes, network.features, network.kernel_sizes, network.strides
        )
    return Plan.from_json(
        {**base.to_json(), "arch": arch or base.arch, "loss": loss or base.loss, "network": network.to_dict()}
    )


def run_variant(base_work: Path, root: Path, name: str, plan: Plan, epochs: int, iterations: int) -> dict:
    """Train fold 0 of ``plan`` in its own working folder that shares the base's preprocessed data."""
    work = root / name
    work.mkdir(parents=True)
    (work / "preprocessed").symlink_to(base_work / "preprocessed")
    shutil.copy(base_work / "fingerprint.json", work / "fingerprint.json")
    write_json(work / "plans.json", plan.to_json())
    options = TrainingOptions(device="cpu", epochs=epochs, iterations=iterations, val_iterations=2, seed=0, echo=False)
    result = train_and_validate(work, 0, options, tta=False)
    records = [json.loads(line) for line in (result.folder / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(record["seconds"] for record in records)  # the epochs (training + validation iterations)
    summary = json.loads(result.validation_summary.read_text()) if result.validation_summary else {}
    per_class = summary.get("per_class", {})
    cost = measure_cost(plan.arch, NetworkConfig.from_dict(plan.network))
    return {
        "variant": name,
        "arch": plan.arch,
        "loss": plan.loss,
        "parameters": cost.parameters,
        "seconds_per_iteration": round(seconds / (epochs * iterations), 3),
        "dsc": {c: _round(v["mean"].get("DSC")) for c, v in per_class.items()},
        "recall": {c: _round(v["mean"].get("recall")) for c, v in per_class.items()},
        "mean_dsc": _round(summary.get("foreground_mean", {}).get("DSC")),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--archs", nargs="*", default=list(ARCHS))
    parser.add_argument("--losses", nargs="*", default=list(LOSSES))
    parser.add_argument("--quick", action="store_true", help="tiny phantom, 1 epoch x 2 iterations")
    parser.add_argument("--dataset", default="ct", choices=("ct", "brats"), help="the CT or the BraTS-like phantom")
    args = parser.parse_args()
    epochs, iterations = (1, 2) if args.quick else (args.epochs, args.iters)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write = write_brats_dataset if args.dataset == "brats" else write_phantom_dataset
        data = write(
            root / "phantom", cases=5 if args.quick else 8, test_cases=0, size="tiny" if args.quick else "default"
        )
        base_work = root / "base"
        plan_experiment(data, base_work, device="cpu", workers=1)
        preprocess_dataset(base_work, workers=1)
        base = load_plan(base_work)
        for arch in args.archs:
            rows.append(run_variant(base_work, root, f"arch-{arch}", variant_plan(base, arch=arch), epochs, iterations))
        for loss in args.losses:
            plan = variant_plan(base, loss=loss)
            rows.append(run_variant(base_work, root, f"loss-{loss}", plan, epochs, iterations))
    _add_ratios(rows, "arch-resunet", "arch-")
    _add_ratios(rows, "loss-ce-dice", "loss-")
    Console(stderr=True, width=160).print(_table(rows))
    report = {"benchmark": "ablate", "dataset": args.dataset, "epochs": epochs, "iterations": iterations, "rows": rows}
    json.dump(report, sys.stdout, indent=2)
    print()


def _add_ratios(rows: list[dict], baseline_name: str, prefix: str) -> None:
    baseline = next((r for r in rows if r["variant"] == baseline_name), None)
    if baseline is None:
        return
    for row in rows:
        if row["variant"].startswith(prefix):
            row["time_vs_baseline"] = round(row["seconds_per_iteration"] / baseline["seconds_per_iteration"], 2)


def _table(rows: list[dict]) -> Table:
    classes = list(dict.fromkeys(c for row in rows for c in row["dsc"]))  # in the dataset's order
    table = Table(title="ablation on a phantom (fold 0 validation)")
    short = [_abbreviation(c) for c in classes]
    columns = ("variant", "params (M)", "s/iter", *(f"DSC {c}" for c in short), *(f"recall {c}" for c in short))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["variant"],
            f"{row['parameters'] / 1e6:.2f}",
            f"{row['seconds_per_iteration']:.2f}",
            *(_cell(row["dsc"].get(c)) for c in classes),
            *(_cell(row["recall"].get(c)) for c in classes),
        )
    return table


def _abbreviation(name: str) -> str:
    """``whole_tumor`` -> ``WT``; a one-word name stays as it is."""
    words = name.replace("-", "_").split("_")
    return "".join(w[0].upper() for w in words if w) if len(words) > 1 else name


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
