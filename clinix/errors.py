"""Error types. A ``ClinixError`` is a user-facing problem: the CLI prints it as one line and exits 2."""

from __future__ import annotations

from pathlib import Path


class ClinixError(Exception):
    """A problem with the user's input or usage (bad file, bad option, missing step)."""


class DatasetError(ClinixError):
    """A problem with one file of a dataset.

    Attributes:
        path: the file (or folder) the problem is about.
        problem: what is wrong, in a few words.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
