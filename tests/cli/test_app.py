"""The CLI's conventions: --help, --version, one-line errors with exit 2, --debug for a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clinix import __version__
from clinix.cli import app

runner = CliRunner()
COMMANDS = ("phantom", "validate", "fingerprint", "plan", "preprocess", "train", "predict", "evaluate", "info")


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"clinix {__version__}"


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_user_error_is_one_line_on_stderr_with_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["preprocess", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'plans.json'}: no plan yet; run 'clinix plan DATASET' first\n"


def test_debug_shows_the_exception_instead(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "preprocess", "--workdir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no plan yet" in str(result.exception)


def test_usage_errors_exit_2() -> None:
    result = runner.invoke(app, ["train", "--no-such-option"])
    assert result.exit_code == 2
