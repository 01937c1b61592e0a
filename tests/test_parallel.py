from __future__ import annotations

import pytest

from clinix.errors import ClinixError
from clinix.parallel import map_cases


def square_or_fail(value: int) -> int:
    if value == 3:
        raise ValueError("cannot handle three")
    if value == 4:
        raise ClinixError("case4: bad input")
    return value * value


@pytest.mark.parametrize("workers", [1, 2])
def test_results_keep_the_input_order(workers: int) -> None:
    assert map_cases(square_or_fail, [5, 1, 2], workers, "squares") == [25, 1, 4]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_case_names_itself(workers: int) -> None:
    with pytest.raises(RuntimeError, match="case-3: ValueError: cannot handle three"):
        map_cases(square_or_fail, [1, 3], workers, "squares", name_of=lambda v: f"case-{v}")


def test_user_errors_pass_through_unchanged() -> None:
    with pytest.raises(ClinixError, match="case4: bad input"):
        map_cases(square_or_fail, [4], 1, "squares")


def test_importing_the_cli_does_not_load_torch() -> None:
    import subprocess
    import sys

    code = "import sys, clinix.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
