"""Error and warning types. A ``ClinixError`` is a user-facing problem: the CLI prints it as one line
(one line per problem for ``CaseFailures``) and exits 2; a ``ClinixWarning`` is printed as one line too.

Every error here survives pickling with its attributes, so a worker process can raise it and the parent
reports the same file and message (``clinix.parallel``).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path


class ClinixError(Exception):
    """A problem with the user's input or usage (bad file, bad option, missing step)."""

    def lines(self) -> list[str]:
        """What the CLI prints, one ``error:`` line each."""
        return [str(self)]


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

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        return type(self), (self.path, self.problem)


class WorkerDied(ClinixError):
    """The process working on one case ended without a result (a crash, or killed: often out of memory).

    Attributes:
        case: the name of the case it was working on.
        exit_code: the process's exit code (negative: the number of the signal that ended it).
    """

    def __init__(self, case: str, exit_code: int | None) -> None:
        self.case = case
        self.exit_code = exit_code
        super().__init__(f"{case}: the worker process {describe_exit(exit_code)} while working on it")

    def __reduce__(self) -> tuple[type, tuple[str, int | None]]:
        return type(self), (self.case, self.exit_code)


class CaseFailures(ClinixError):
    """Several cases failed; each failure is one line, and the run as a whole exits 2."""

    def __init__(self, failures: Sequence[ClinixError], done: str = "") -> None:
        self.failures = list(failures)
        self.done = done
        head = f"{len(self.failures)} case(s) failed" + (f" ({done})" if done else "")
        super().__init__(head + ": " + "; ".join(str(f) for f in self.failures))

    def __reduce__(self) -> tuple[type, tuple[list[ClinixError], str]]:
        return type(self), (self.failures, self.done)

    def lines(self) -> list[str]:
        summary = f"{len(self.failures)} case(s) failed" + (f"; {self.done}" if self.done else "")
        return [line for failure in self.failures for line in failure.lines()] + [summary]


class ClinixWarning(UserWarning):
    """Something the user should know that does not stop the step; the CLI prints ``warning: <message>``."""


def describe_exit(exit_code: int | None) -> str:
    """``-9`` -> "was killed (SIGKILL, often the system running out of memory)", ``-11`` -> "crashed (SIGSEGV)"."""
    if exit_code is None:
        return "stopped answering"
    if exit_code >= 0:
        return f"exited with status {exit_code}"
    try:
        name = signal.Signals(-exit_code).name
    except ValueError:
        name = f"signal {-exit_code}"
    if name == "SIGKILL":
        return "was killed (SIGKILL, often the system running out of memory)"
    if name in ("SIGTERM", "SIGINT", "SIGHUP"):
        return f"was stopped ({name})"
    return f"crashed ({name})"
