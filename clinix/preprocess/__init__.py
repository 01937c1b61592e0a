"""Preprocessing: crop to nonzero, normalise, resample, store; and the way back to the original grid."""

from clinix.preprocess.case import CaseProperties, preprocess_case
from clinix.preprocess.inverse import restore_label_map, restore_probabilities
from clinix.preprocess.run import PREPROCESSED_DIR, PreprocessSummary, load_case, preprocess_dataset

__all__ = [
    "PREPROCESSED_DIR",
    "CaseProperties",
    "PreprocessSummary",
    "load_case",
    "preprocess_case",
    "preprocess_dataset",
    "restore_label_map",
    "restore_probabilities",
]
