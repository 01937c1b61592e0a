"""Cross-validation (SPEC §11): the full validation of trained folds and what is decided from it.

This package sits above training, inference and evaluation and imports all three; none of them imports it.
"""

from __future__ import annotations

from clinix.crossval.merge import CrossvalResult, crossval
from clinix.crossval.validate import FoldValidation, train_and_validate, validate_fold

__all__ = ["CrossvalResult", "FoldValidation", "crossval", "train_and_validate", "validate_fold"]
