from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from clinix import __version__
from clinix.io.atomic import atomic_files, atomic_path, remove_leftovers, write_json


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


def test_a_set_of_files_lands_under_final_names_header_last(tmp_path: Path, monkeypatch) -> None:
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(Path(dst).name), real_replace(src, dst)))
    with atomic_files(tmp_path / "case.mhd") as folder:
        (folder / "case.mhd").write_text("ElementDataFile = case.zraw\n")
        (folder / "case.zraw").write_bytes(b"data")
    assert renamed == ["case.zraw", "case.mhd"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.mhd", "case.zraw"]


def test_a_failed_set_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_files(tmp_path / "case.nhdr") as folder:
        (folder / "case.raw.gz").write_bytes(b"half")
        raise RuntimeError("writer failed")
    with (
        pytest.raises(FileNotFoundError, match=r"did not create case\.nhdr"),
        atomic_files(tmp_path / "case.nhdr") as f,
    ):
        (f / "case.raw.gz").write_bytes(b"data only")
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".case.npy.abc.tmp").write_bytes(b"half")
    (tmp_path / ".case.mhd.xyz.tmpdir").mkdir()
    (tmp_path / ".case.mhd.xyz.tmpdir" / "case.zraw").write_bytes(b"half")
    (tmp_path / "case.npy").write_bytes(b"whole")
    remove_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["case.npy"]
