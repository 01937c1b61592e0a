"""The working folder of the pipeline: ``--workdir``, else ``$CLINIX_WORKDIR``, else ``./clinix_work``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_WORKDIR = "clinix_work"


def resolve_workdir(workdir: str | Path | None) -> Path:
    chosen = workdir if workdir is not None else os.environ.get("CLINIX_WORKDIR", DEFAULT_WORKDIR)
    return Path(chosen).expanduser().resolve()
