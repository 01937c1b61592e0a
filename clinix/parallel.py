"""Run one function over many cases, in worker processes, with a rich progress bar.

Every case ends in an ``Outcome``: its value, or the ``ClinixError`` that stopped it, so a caller can
report every bad case rather than the first. A worker's ``ClinixError`` reaches the parent whole (its
file and message: the errors in ``clinix.errors`` pickle with their attributes). A worker that dies
outright (a crash in a reader, the kernel's out-of-memory killer) fails only the case it was working on,
as ``WorkerDied``, and a fresh worker takes the cases left. Any other exception is a bug: it stops the
run, named after its case, with the worker's traceback.

Workers are spawned, never forked (the parent may hold threads or a torch runtime), and never outlive
the parent: on Linux the kernel kills them when it dies (``PR_SET_PDEATHSIG``); everywhere a thread in
each worker watches a pipe from the parent and ends the worker when the pipe closes. When the parent
stops early (Ctrl-C, a bug) it sends its workers SIGTERM, which they turn into an exception so that
half-written temporary files are removed (``clinix.io.atomic``) before they exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clinix.errors import CaseFailures, ClinixError, WorkerDied

T = TypeVar("T")
R = TypeVar("R")

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
STOP_TIMEOUT_S = 10.0  # how long stopped workers get to clean up before they are killed


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


@dataclass
class Outcome(Generic[R]):
    """How one case ended: ``value``, or ``error`` (the user-facing problem that stopped it)."""

    name: str
    value: R | None = None
    error: ClinixError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def map_cases(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    description: str,
    name_of: Callable[[T], str] = str,
) -> list[Outcome[R]]:
    """The outcome of ``fn(item)`` for every item, in order, from ``workers`` spawned processes (in this
    process when 1). A ``ClinixError`` fails its item; any other exception is raised here as a
    ``RuntimeError`` naming the item.
    """
    names = [name_of(item) for item in items]
    outcomes: list[Outcome[R] | None] = [None] * len(items)
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(items))

        def settle(index: int, outcome: Outcome[R]) -> None:
            outcomes[index] = outcome
            progress.advance(task)

        if workers <= 1 or len(items) <= 1:
            for index, item in enumerate(items):
                settle(index, _run_here(fn, item, names[index]))
        else:
            _WorkerPool(fn, items, names, min(workers, len(items)), settle).run()
    return outcomes  # type: ignore[return-value]


def values_or_raise(outcomes: Sequence[Outcome[R]], done: str = "") -> list[R]:
    """The values of ``outcomes``, or ``CaseFailures`` (every failure, one line each) if any case failed."""
    failures = [outcome.error for outcome in outcomes if outcome.error is not None]
    if failures:
        raise CaseFailures(failures, done)
    return [outcome.value for outcome in outcomes]  # type: ignore[misc]


def _run_here(fn: Callable[[T], R], item: T, name: str) -> Outcome[R]:
    try:
        return Outcome(name, value=fn(item))
    except ClinixError as error:
        return Outcome(name, error=error)
    except Exception as error:
        raise RuntimeError(f"{name}: {type(error).__name__}: {error}") from error


class _Worker:
    """One spawned process, its task pipe, its lifeline, and the index of the case it works on."""

    def __init__(self, context: Any) -> None:
        self.tasks, child_tasks = context.Pipe()
        child_lifeline, self.lifeline = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_worker_main, args=(child_tasks, child_lifeline, os.getpid()), daemon=True
        )
        self.process.start()
        child_tasks.close()
        child_lifeline.close()
        self.index: int | None = None

    def close(self) -> None:
        for connection in (self.tasks, self.lifeline):
            connection.close()


class _WorkerPool:
    """Hands cases to workers one at a time, so a dead worker names the case it died on."""

    def __init__(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        names: list[str],
        count: int,
        settle: Callable[[int, Outcome[R]], None],
    ) -> None:
        self.fn, self.items, self.names, self.settle = fn, items, names, settle
        self.context = multiprocessing.get_context("spawn")
        self.pending = deque(range(len(items)))
        self.workers = [_Worker(self.context) for _ in range(count)]

    def run(self) -> None:
        try:
            for worker in self.workers:
                self._assign(worker)
            while busy := [worker for worker in self.workers if worker.index is not None]:
                wait([w.tasks for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    self._check(worker)
        except BaseException:
            self._stop(graceful=False)
            raise
        self._stop(graceful=True)

    def _assign(self, worker: _Worker) -> None:
        """Give ``worker`` the next pending case (nothing when none is left); a dead worker is replaced."""
        if not self.pending:
            return
        index = self.pending.popleft()
        if not worker.process.is_alive():
            worker = self._replace(worker)
        try:
            worker.tasks.send((self.fn, self.items[index]))
        except OSError:  # it died after finishing its last case
            worker.process.join()
            worker = self._replace(worker)
            worker.tasks.send((self.fn, self.items[index]))
        worker.index = index

    def _check(self, worker: _Worker) -> None:
        """Settle ``worker``'s case if it answered or died; then give it (or its successor) the next one."""
        index = worker.index
        assert index is not None
        if worker.tasks.poll():
            try:
                message = worker.tasks.recv()
            except (EOFError, OSError):  # its end closed: it is dying
                pass
            else:
                worker.index = None
                self.settle(index, self._outcome(index, message))
                self._assign(worker)
                return
        elif worker.process.is_alive():
            return  # still working; another worker woke the wait
        worker.process.join()
        worker.index = None
        self.settle(index, Outcome(self.names[index], error=WorkerDied(self.names[index], worker.process.exitcode)))
        self._assign(worker)  # a fresh worker takes the next case

    def _outcome(self, index: int, message: tuple[str, Any, str, list[tuple[type[Warning], str]]]) -> Outcome:
        kind, payload, worker_traceback, worker_warnings = message
        for category, text in worker_warnings:
            warnings.warn(text, category, stacklevel=1)
        name = self.names[index]
        if kind == "value":
            return Outcome(name, value=payload)
        if kind == "error":
            return Outcome(name, error=payload)
        raise RuntimeError(f"{name}: {payload}\n\nin the worker process:\n{worker_traceback}")

    def _replace(self, worker: _Worker) -> _Worker:
        worker.close()
        fresh = _Worker(self.context)
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def _stop(self, graceful: bool) -> None:
        """Graceful: ask idle workers to exit. Otherwise SIGTERM (they clean up), then SIGKILL after a wait."""
        for worker in self.workers:
            if worker.process.is_alive():
                if graceful:
                    with contextlib.suppress(OSError):
                        worker.tasks.send(None)
                else:
                    worker.process.terminate()
        for worker in self.workers:
            worker.process.join(STOP_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.close()


def _worker_main(tasks: Connection, lifeline: Connection, parent_pid: int) -> None:
    """A worker's life: run the cases it is sent until it is sent None or the parent goes away."""
    _die_with_parent(lifeline, parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    while True:
        try:
            message = tasks.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, item = message
        reply = _attempt(fn, item)
        try:
            tasks.send(reply)
        except OSError:  # the parent is gone
            return
        except Exception as error:  # the result does not pickle
            tasks.send(("bug", f"its result cannot be sent to the parent ({type(error).__name__}: {error})", "", []))


def _attempt(fn: Callable[[Any], Any], item: Any) -> tuple[str, Any, str, list[tuple[type[Warning], str]]]:
    """``(kind, payload, traceback, warnings)``: kind "value" (payload the result), "error" (a ClinixError)
    or "bug" (a summary, with the traceback); the warnings are re-issued by the parent, which shows them.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reply = "value", fn(item), ""
        except ClinixError as error:
            reply = "error", _sendable(error), ""
        except Exception as error:
            reply = "bug", f"{type(error).__name__}: {error}", traceback.format_exc()
    return (*reply, [(w.category, str(w.message)) for w in caught])


def _sendable(error: ClinixError) -> ClinixError:
    """``error`` itself if it survives pickling, else a plain ClinixError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return ClinixError(str(error))
    return error


def _die_with_parent(lifeline: Connection, parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_exit_when_closed, args=(lifeline,), daemon=True, name="clinix-lifeline").start()


def _exit_when_closed(lifeline: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()  # the parent never writes: this returns when its end closes
    os._exit(1)


def _exit_on_terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
