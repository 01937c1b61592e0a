"""Inference: sliding window, mirror TTA, fold ensembling, export to the input's grid (SPEC §7).

Importing this package imports torch; the CLI imports it inside ``clinix predict`` only.
"""

from clinix.device import resolve_device
from clinix.infer.folds import select_fold_checkpoints
from clinix.infer.predictor import Predictor
from clinix.infer.run import PredictionSummary, load_predictor, predict_case, predict_cases, predict_folder

__all__ = [
    "PredictionSummary",
    "Predictor",
    "load_predictor",
    "predict_case",
    "predict_cases",
    "predict_folder",
    "resolve_device",
    "select_fold_checkpoints",
]
