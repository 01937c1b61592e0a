"""The working folder of the pipeline and every path inside it (SPEC §1): the one owner of its layout.

``--workdir``, else ``$CLINIX_WORKDIR``, else ``./clinix_work``::

    WORK/fingerprint.json  plans.json  splits.json
    WORK/preprocessed/<config>/<case>.{npy,json}, <case>_seg.npy
    WORK/results/<config>/fold_<F>/{checkpoint_*.pt, log.txt, metrics.jsonl, progress.png, validation/}
    WORK/results/<config>/postprocessing.json
    WORK/crossval/<config>/<case>.nii.gz, summary.json

Every stage builds its paths here; none joins folder names of its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKDIR = "clinix_work"
CONFIGURATION = "3d_fullres"  # the one configuration clinix plans today
FINGERPRINT_FILE = "fingerprint.json"
PLANS_FILE = "plans.json"
SPLITS_FILE = "splits.json"
POSTPROCESSING_FILE = "postprocessing.json"
VALIDATION_DIR = "validation"
_FOLD_DIR = re.compile(r"fold_(\d+|all)")


def resolve_workdir(workdir: str | Path | None) -> Path:
    chosen = workdir if workdir is not None else os.environ.get("CLINIX_WORKDIR", DEFAULT_WORKDIR)
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class WorkDir:
    """The paths of one working folder ``root`` (nothing is created or checked here)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def fingerprint(self) -> Path:
        return self.root / FINGERPRINT_FILE

    @property
    def plans(self) -> Path:
        return self.root / PLANS_FILE

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_FILE

    def preprocessed(self, configuration: str = CONFIGURATION) -> Path:
        return self.root / "preprocessed" / configuration

    def results(self, configuration: str = CONFIGURATION) -> Path:
        return self.root / "results" / configuration

    def fold(self, fold: int | str, configuration: str = CONFIGURATION) -> Path:
        return self.results(configuration) / f"fold_{fold}"

    def fold_names(self, configuration: str = CONFIGURATION) -> list[int | str]:
        """The folds that have a ``fold_F`` folder: the numbered ones ascending, then ``"all"``."""
        folder = self.results(configuration)
        names = [m.group(1) for d in folder.glob("fold_*") if d.is_dir() and (m := _FOLD_DIR.fullmatch(d.name))]
        folds: list[int | str] = sorted(int(name) for name in names if name != "all")
        return folds + (["all"] if "all" in names else [])

    def checkpoint(self, fold: int | str, name: str, configuration: str = CONFIGURATION) -> Path:
        """``name``: final, best or latest."""
        return self.fold(fold, configuration) / f"checkpoint_{name}.pt"

    def validation(self, fold: int | str, configuration: str = CONFIGURATION) -> Path:
        return self.fold(fold, configuration) / VALIDATION_DIR

    def postprocessing(self, configuration: str = CONFIGURATION) -> Path:
        return self.results(configuration) / POSTPROCESSING_FILE

    def crossval(self, configuration: str = CONFIGURATION) -> Path:
        return self.root / "crossval" / configuration
