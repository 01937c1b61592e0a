"""map_cases: outcomes in order, user errors that cross the process boundary whole, workers that die
alone, and workers that never outlive their parent."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from clinix.errors import CaseFailures, ClinixError, ClinixWarning, DatasetError, WorkerDied
from clinix.parallel import map_cases, values_or_raise


def square_or_fail(value: int) -> int:
    if value == 3:
        raise ValueError("cannot handle three")
    if value == 4:
        raise DatasetError(f"/data/case{value}.nii.gz", "truncated")
    if value == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    if value == 6:
        os.kill(os.getpid(), signal.SIGSEGV)
    if value == 7:
        warnings.warn(f"case{value} looks odd", ClinixWarning, stacklevel=1)
    return value * value


@pytest.mark.parametrize("workers", [1, 2])
def test_results_keep_the_input_order(workers: int) -> None:
    outcomes = map_cases(square_or_fail, [0, 1, 2, 8], workers, "squares")
    assert [outcome.value for outcome in outcomes] == [0, 1, 4, 64]
    assert all(outcome.ok for outcome in outcomes)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dataset_error_keeps_its_file_and_problem_across_the_process_boundary(workers: int) -> None:
    outcomes = map_cases(square_or_fail, [1, 4, 2], workers, "squares", name_of=lambda v: f"case{v}")
    error = outcomes[1].error
    assert isinstance(error, DatasetError)
    assert (error.path, error.problem) == (Path("/data/case4.nii.gz"), "truncated")
    assert [outcome.value for outcome in outcomes] == [1, None, 4]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bug_stops_the_run_naming_its_case(workers: int) -> None:
    with pytest.raises(RuntimeError, match="case-3: ValueError: cannot handle three"):
        map_cases(square_or_fail, [1, 3], workers, "squares", name_of=lambda v: f"case-{v}")


def test_a_killed_worker_fails_only_its_case_and_a_fresh_worker_takes_the_rest() -> None:
    outcomes = map_cases(square_or_fail, [1, 5, 2, 6, 8, 9], 2, "squares", name_of=lambda v: f"case{v}")
    assert [outcome.value for outcome in outcomes] == [1, None, 4, None, 64, 81]
    killed, crashed = outcomes[1].error, outcomes[3].error
    assert isinstance(killed, WorkerDied) and isinstance(crashed, WorkerDied)
    assert str(killed) == (
        "case5: the worker process was killed (SIGKILL, often the system running out of memory) while working on it"
    )
    assert str(crashed) == "case6: the worker process crashed (SIGSEGV) while working on it"


def test_warnings_of_a_worker_are_issued_in_the_parent() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        map_cases(square_or_fail, [7, 1], 2, "squares")
    assert [(w.category, str(w.message)) for w in caught] == [(ClinixWarning, "case7 looks odd")]


def test_values_or_raise_lists_every_failure() -> None:
    outcomes = map_cases(square_or_fail, [4, 1, 4], 1, "squares")
    with pytest.raises(CaseFailures) as raised:
        values_or_raise(outcomes, "1 of 3 done")
    assert raised.value.lines() == [
        "/data/case4.nii.gz: truncated",
        "/data/case4.nii.gz: truncated",
        "2 case(s) failed; 1 of 3 done",
    ]
    assert values_or_raise(outcomes[1:2]) == [1]


@pytest.mark.parametrize(
    "error",
    [DatasetError("/a/b.nii", "bad"), WorkerDied("case1", -9), CaseFailures([DatasetError("/x", "y")], "done")],
)
def test_every_clinix_error_survives_pickling(error: ClinixError) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error) and again.lines() == error.lines()


SLEEPER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from clinix.parallel import map_cases

    def sleep(index):
        Path(sys.argv[1], f"{index}.pid").write_text(str(os.getpid()))
        time.sleep(120)

    if __name__ == "__main__":
        map_cases(sleep, [0, 1], 2, "sleeping")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stderr=subprocess.DEVNULL)
    try:
        pid_files = [tmp_path / "0.pid", tmp_path / "1.pid"]
        deadline = time.monotonic() + 60
        while not all(f.is_file() and f.read_text() for f in pid_files) and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [int(f.read_text()) for f in pid_files]
        assert all(_alive(pid) for pid in workers)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_importing_the_cli_does_not_load_torch() -> None:
    code = "import sys, clinix.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
