"""Atomic file writes: a temporary file in the same folder, then a rename.

An interrupted run never leaves a truncated file under a final name (SPEC §1).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clinix import __version__

TEMPORARY_GLOB = ".*.tmp*"  # the names given by atomic_path and atomic_files


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` when the block succeeds.

    ``suffix`` keeps the extension a writer needs to pick its format (e.g. ``.nii.gz``).
    On any exception (Ctrl-C included) the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_file_mode())  # mkstemp creates 0600; a result should be readable like any file
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_files(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``, for a writer that makes several files which name each
    other (``case.mhd`` and its ``case.zraw``). When the block succeeds every file it wrote is renamed
    into ``final``'s folder under its own name, ``final`` last, so a complete ``final`` means a complete
    set; on any exception the folder is removed and nothing is renamed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmpdir", dir=final.parent))
    try:
        yield folder
        written = sorted(folder.iterdir(), key=lambda file: file.name == final.name)
        if not written or written[-1].name != final.name:
            raise FileNotFoundError(f"the writer did not create {final.name}")
        for file in written:
            os.chmod(file, _default_file_mode())
            os.replace(file, final.parent / file.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_leftovers(folder: str | Path) -> None:
    """Delete the temporary files and folders that a killed run left in ``folder``."""
    for leftover in Path(folder).glob(TEMPORARY_GLOB):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(final: str | Path, write: Callable[[Path], Any], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``final`` atomically."""
    with atomic_path(final, suffix) as tmp:
        write(tmp)
    return Path(final)


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON with ``clinix_version`` first, atomically."""
    payload = {"clinix_version": __version__, **{k: v for k, v in data.items() if k != "clinix_version"}}
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(value: Any) -> Any:
    """Serialise numpy scalars/arrays and paths that ``json`` does not know."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
