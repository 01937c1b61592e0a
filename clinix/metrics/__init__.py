"""Segmentation metrics and the evaluation report (SPEC §8): ``evaluate_folders`` and ``evaluate_case``."""

from __future__ import annotations

from clinix.metrics.case import evaluate_case
from clinix.metrics.classes import ClassSpec, parse_labels_option, parse_regions_option
from clinix.metrics.evaluate import evaluate_folders
from clinix.metrics.report import summary_table, write_report
from clinix.metrics.summary import EvaluationSummary

__all__ = [
    "ClassSpec",
    "EvaluationSummary",
    "evaluate_case",
    "evaluate_folders",
    "parse_labels_option",
    "parse_regions_option",
    "summary_table",
    "write_report",
]
