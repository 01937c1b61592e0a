"""Running clinix as a user does (a fresh process, real exit code, real standard error) and judging it.

A user mistake must end with exit code 2, one ``error:`` line per problem, nothing else on standard error
but ``warning:`` lines and progress bars (no traceback, no message of ITK's own), and nothing half-written
under a final name.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clinix.io.atomic import TEMPORARY_GLOB
from clinix.io.image import has_image_ending, read_image

PROGRESS_BAR = "━"


@dataclass
class Fault:
    """One entry of the catalogue: a command on a broken input, and what it must print.

    ``errors`` / ``warnings`` are the expected lines without their ``error: `` / ``warning: `` prefix;
    one ending in "…" need only start with the rest. ``outputs`` are folders that must hold nothing partial.
    """

    command: Sequence[str | Path]
    errors: Sequence[str] = ()
    warnings: Sequence[str] = ()
    exit_code: int = 2
    outputs: Sequence[Path] = ()
    stdout: Sequence[str] = field(default_factory=list)  # lines stdout must contain
    then: Callable[[], None] | None = None  # further assertions on what the command left behind


def run_clinix(*arguments: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m clinix ARGUMENTS`` in a fresh process, as a user would type it."""
    environment = {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "default"}
    return subprocess.run(
        [sys.executable, "-m", "clinix", *(str(a) for a in arguments)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=600,
    )


def check_fault(fault: Fault, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = run_clinix(*fault.command, cwd=cwd)
    both = result.stdout + result.stderr
    assert "Traceback" not in both, both
    assert result.returncode == fault.exit_code, both
    lines = both.splitlines()
    _match([line[len("error: ") :] for line in lines if line.startswith("error: ")], fault.errors, both)
    _match([line[len("warning: ") :] for line in lines if line.startswith("warning: ")], fault.warnings, both)
    stray = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("error: ", "warning: ")) and PROGRESS_BAR not in line
    ]
    assert stray == [], both
    for expected in fault.stdout:
        assert expected in result.stdout.splitlines(), both
    for folder in fault.outputs:
        assert_nothing_partial(folder)
    if fault.then is not None:
        fault.then()
    return result


def _match(found: list[str], expected: Sequence[str], output: str) -> None:
    assert len(found) == len(expected), output
    for line, wanted in zip(found, expected, strict=True):
        if wanted.endswith("…"):
            assert line.startswith(wanted[:-1]), f"{line!r} does not start with {wanted[:-1]!r}\n{output}"
        else:
            assert line == wanted, output


def assert_nothing_partial(folder: Path) -> None:
    """No temporary leftover, and every JSON, array, image and checkpoint under ``folder`` reads whole."""
    if not folder.exists():
        return
    for path in folder.rglob("*"):
        assert not fnmatch.fnmatch(path.name, TEMPORARY_GLOB), f"leftover {path}"
        if not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npy":
            np.load(path, mmap_mode="r")
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True, mmap=True)
        elif has_image_ending(path):
            read_image(path)
