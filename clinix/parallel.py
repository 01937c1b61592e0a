"""Run one function over many cases, in worker processes, with a rich progress bar."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clinix.errors import ClinixError

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=transient,
        console=Console(stderr=True),
    )


def map_cases(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    description: str,
    name_of: Callable[[T], str] = str,
) -> list[R]:
    """``[fn(item) for item in items]`` in ``workers`` spawned processes (in-process when 1), order kept.

    An exception in a worker is re-raised here as a ``RuntimeError`` that names the item, so a failing
    case names itself instead of "a worker died".
    """
    results: list[R | None] = [None] * len(items)
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(items))
        if workers <= 1 or len(items) <= 1:
            for index, item in enumerate(items):
                results[index] = _call(fn, item, name_of)
                progress.advance(task)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
                futures = {pool.submit(fn, item): index for index, item in enumerate(items)}
                for future in as_completed(futures):
                    index = futures[future]
                    error = future.exception()
                    if isinstance(error, ClinixError):
                        raise error
                    if error is not None:
                        raise RuntimeError(f"{name_of(items[index])}: {type(error).__name__}: {error}") from error
                    results[index] = future.result()
                    progress.advance(task)
    return results  # type: ignore[return-value]


def _call(fn: Callable[[T], R], item: T, name_of: Callable[[T], str]) -> R:
    try:
        return fn(item)
    except Exception as error:
        if isinstance(error, ClinixError):
            raise
        raise RuntimeError(f"{name_of(item)}: {type(error).__name__}: {error}") from error
