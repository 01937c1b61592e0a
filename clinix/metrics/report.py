"""The evaluation report: summary.json, summary.csv beside it (one row per case and class), a rich table."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from rich.table import Table

from clinix.io.atomic import atomic_write, write_json
from clinix.metrics.case import METRIC_NAMES
from clinix.metrics.summary import HD95_MISSING_RULES, EvaluationSummary

# (metric, column header, digits) of the on-screen table
TABLE_COLUMNS = (
    ("DSC", "DSC", 4),
    ("IoU", "IoU", 4),
    ("recall", "Recall", 4),
    ("precision", "Precision", 4),
    ("HD95", "HD95 mm", 2),
    ("NSD", "NSD", 4),
)


def write_report(summary: EvaluationSummary, json_path: str | Path) -> tuple[Path, Path]:
    """Write ``json_path`` and the CSV of the same name beside it, atomically. Returns both paths."""
    json_path = Path(json_path)
    csv_path = json_path.with_suffix(".csv")
    write_json(json_path, summary.to_json())
    atomic_write(csv_path, lambda tmp: tmp.write_text(summary_csv(summary), newline=""))
    return json_path, csv_path


def summary_csv(summary: EvaluationSummary) -> str:
    """Columns ``case, class, labels`` then ``METRIC_NAMES``; an undefined value is an empty cell."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["case", "class", "labels", *METRIC_NAMES])
    for case in summary.cases:
        for spec in summary.classes:
            record = case.metrics[spec.name]
            labels = "+".join(str(v) for v in spec.labels)
            writer.writerow([case.case_id, spec.name, labels, *(_cell(record[m]) for m in METRIC_NAMES)])
    return text.getvalue()


def summary_table(summary: EvaluationSummary) -> Table:
    """Per-class means, then the mean over classes; "DSC cases" counts the cases in the DSC mean.

    The caption holds what has no room at 80 columns: the missed and spurious structures, the lesions found
    out of the reference lesions with the false positives per case, and the HD95 rule.
    """
    table = Table(title=f"{len(summary.cases)} cases, NSD tolerance {summary.nsd_tolerance_mm:g} mm")
    longest = max((len(name) for name in summary.per_class), default=5)
    table.add_column("class", min_width=min(longest, 20), no_wrap=True)  # region names are long: keep them
    for _, header, _ in TABLE_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("DSC cases", justify="right")
    for name, class_summary in summary.per_class.items():
        in_mean = class_summary.n_cases - class_summary.n_undefined["DSC"]
        table.add_row(name, *_table_values(class_summary.mean), f"{in_mean}/{class_summary.n_cases}")
    table.add_section()
    table.add_row("mean", *_table_values(summary.foreground_mean), "", style="bold")
    table.caption = f"{_misses(summary)}. {_lesions(summary)}. HD95: {HD95_MISSING_RULES[summary.hd95_missing]}"
    return table


def _misses(summary: EvaluationSummary) -> str:
    """ "tumour: 1 missed, 2 spurious" for each class with a structure in only one map, or that there is none."""
    counts = [
        f"{name}: {s.n_missed} missed, {s.n_spurious} spurious"
        for name, s in summary.per_class.items()
        if s.n_missed or s.n_spurious
    ]
    return "; ".join(counts) if counts else "No structure missed or spurious"


def _lesions(summary: EvaluationSummary) -> str:
    """ "Lesions found (FP per case): tumour: 7/9 (0.33)", pooled over cases, for each class."""
    counts = [
        f"{name}: {s.lesions.found}/{s.lesions.reference} ({_number(s.lesions.false_positives_per_case, 2)})"
        for name, s in summary.per_class.items()
    ]
    return f"Lesions found (FP per case): {'; '.join(counts) or 'no class scored'}"


def _table_values(mean: dict[str, float]) -> list[str]:
    return [_number(mean[metric], digits) for metric, _, digits in TABLE_COLUMNS]


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _cell(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return str(float(value)) if math.isfinite(value) else ""
