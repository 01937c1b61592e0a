"""Preprocessing: crop to nonzero, normalise, resample, store; and the way back to the original grid."""

from clinix.preprocess.case import CaseProperties, plan_digest, preprocess_case
from clinix.preprocess.inverse import labels_from_probabilities, restore_label_map, restore_probabilities
from clinix.preprocess.run import (
    PreprocessSummary,
    cases_not_preprocessed_for,
    load_case,
    preprocess_dataset,
)

__all__ = [
    "CaseProperties",
    "PreprocessSummary",
    "cases_not_preprocessed_for",
    "labels_from_probabilities",
    "load_case",
    "plan_digest",
    "preprocess_case",
    "preprocess_dataset",
    "restore_label_map",
    "restore_probabilities",
]
