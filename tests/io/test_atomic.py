from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from clinix import __version__
from clinix.io.atomic import atomic_path, write_json


def test_json_carries_the_version_first_and_is_indented(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"b": 1, "clinix_version": "stale"})
    text = (tmp_path / "a.json").read_text()
    assert json.loads(text) == {"clinix_version": __version__, "b": 1}
    assert text.startswith('{\n  "clinix_version"')


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_written_files_follow_the_umask_not_0600(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
