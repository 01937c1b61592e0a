"""SimpleITK calls with ITK's own messages captured and read into one-line problems.

ITK and the libraries below it (MetaIO, NrrdIO, niftilib) print from C and C++ straight to the process's
standard error ("MetaImage: M_ReadElementsData: data not read completely"), beside the exception
SimpleITK raises, whose text often names only a source line ("sitkImageReaderBase.cxx:99"). ``itk_call``
runs a SimpleITK call with file descriptor 2 sent to a temporary file, so nothing leaks onto the terminal,
and turns a failure into a ``DatasetError`` that says what is wrong: an empty file, a truncated one, a
format SimpleITK does not read, a data file that cannot be opened, an unsupported pixel type.
Messages printed by a call that succeeds become one ``ClinixWarning`` each, or the call's error when
they say data was lost.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from clinix.errors import ClinixWarning, DatasetError
from clinix.io.voxel_data import GZIP_MAGIC, content_chunks, read_nifti_header

R = TypeVar("R")

_redirect_lock = threading.Lock()  # file descriptor 2 is one per process
FORMAT_NAMES = {
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".gipl.gz": "GIPL",
    ".gipl": "GIPL",
}
_TRUNCATION = (
    (re.compile(r"ideal = (\d+) : actual = (\d+)"), lambda m: (int(m[2]), int(m[1]))),  # MetaIO
    (re.compile(r"expected (\d+) bytes but received (\d+)"), lambda m: (int(m[2]), int(m[1]))),  # NrrdIO gzip
    (  # NrrdIO raw
        re.compile(r"fread got only (\d+) (\d+)-sized things, not (\d+)"),
        lambda m: (int(m[1]) * int(m[2]), int(m[3]) * int(m[2])),
    ),
)
_DATA_LOSS = re.compile(r"not read completely|trouble|error|truncat|cannot|can't|couldn't|fail", re.IGNORECASE)
_NOISE = (re.compile(r"\(0x[0-9a-f]+\)"), re.compile(r"\S+\.(?:cxx|cpp|h|hxx|c):\d+:?"))


@contextmanager
def captured_native_stderr() -> Iterator[list[str]]:
    """Send what native code writes to file descriptor 2 inside the block to a list (filled on exit).

    Python's own ``sys.stderr`` (progress bars, warnings) keeps writing to the terminal meanwhile.
    """
    lines: list[str] = []
    with _redirect_lock:
        try:
            saved = os.dup(2)
        except OSError:  # no standard error at all: nothing can leak
            yield lines
            return
        python_stderr = sys.stderr
        terminal = None
        try:
            with tempfile.TemporaryFile() as sink:
                if python_stderr is not None:
                    python_stderr.flush()
                    terminal = os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="replace", buffering=1)
                    sys.stderr = terminal
                os.dup2(sink.fileno(), 2)
                try:
                    yield lines
                finally:
                    os.dup2(saved, 2)
                    sink.seek(0)
                    text = sink.read().decode("utf-8", errors="replace")
                    lines.extend(line.strip() for line in text.splitlines() if line.strip())
        finally:
            sys.stderr = python_stderr
            if terminal is not None:
                terminal.close()
            os.close(saved)


def itk_call(path: Path, call: Callable[[], R]) -> R:
    """``call()`` (a SimpleITK read or write of ``path``) with ITK's messages captured (module docstring)."""
    failure: str | None = None
    with captured_native_stderr() as native:
        try:
            result = call()
        except RuntimeError as error:
            failure = str(error)
    if failure is not None:
        raise DatasetError(path, explain_failure(path, failure, native))
    loss = [line for line in native if _DATA_LOSS.search(line)]
    if loss:
        raise DatasetError(path, explain_failure(path, "", native))
    for line in native:
        warnings.warn(f"{path}: {_clean(line)}", ClinixWarning, stacklevel=2)
    return result


def explain_failure(path: Path, exception_text: str, native: list[str]) -> str:
    """What is wrong with ``path``, in a few words, from SimpleITK's exception text and ITK's messages."""
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        return "empty file (0 bytes)"
    text = "\n".join([*native, exception_text])
    for pattern, read_and_expected in _TRUNCATION:
        match = pattern.search(text)
        if match:
            got, expected = read_and_expected(match)
            return f"truncated: it holds {got:,} of the {expected:,} bytes of voxel data"
    data_file = re.search(r"couldn't open \"([^\"]+)\" \(data file", text)
    if data_file or "Cannot open data file" in text:
        named = f" ({Path(data_file[1]).name})" if data_file else ""
        return f"the data file its header names{named} cannot be opened: missing, or not readable"
    if "Unable to determine ImageIO reader" in text:
        return _unknown_format(path)
    pixel = re.search(r"pixel ?type[^\n]*(?:not supported|unsupported)[^\n]*|unsupported[^\n]*pixel[^\n]*", text, re.I)
    if pixel:
        return f"unsupported pixel type ({_clean(pixel[0])})"
    if "is not recognized as a NIFTI file" in text or "nifti_convert_nhdr2nim" in text:
        detail = next((_clean(line) for line in native if "nifti" in line.lower()), "")
        return "not a valid NIfTI file" + (f" ({detail})" if detail else "")
    return _most_specific_line(text)


def _unknown_format(path: Path) -> str:
    name = path.name.lower()
    ending = next((e for e in sorted(FORMAT_NAMES, key=len, reverse=True) if name.endswith(e)), None)
    try:
        with path.open("rb") as file:
            head = file.read(2)
    except OSError as error:
        return f"cannot be opened ({error.strerror})"
    if ending is None:
        return "not an image format SimpleITK reads (unknown file ending)"
    expected = FORMAT_NAMES[ending]
    if expected == "NIfTI" and _nifti_version(path) == 2:
        return "a NIfTI-2 file, which SimpleITK does not read; save it as NIfTI-1 (nibabel: Nifti1Image)"
    if head == GZIP_MAGIC:
        try:
            for _ in content_chunks(path):  # a gzip stream cut short or corrupt says so
                pass
        except DatasetError as error:
            return error.problem
        return f"not a {expected} file SimpleITK can read (gzip data, but its content does not start like one)"
    if ending.endswith(".gz"):
        return f"not a {expected} file SimpleITK can read (named {ending}, but not gzip-compressed)"
    return f"not a {expected} file SimpleITK can read (its content does not start like one)"


def _nifti_version(path: Path) -> int | None:
    try:
        return read_nifti_header(path).version
    except DatasetError:
        return None


def _most_specific_line(text: str) -> str:
    """The last line that says something: ITK's messages end with the most specific cause."""
    lines = [_clean(line) for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception thrown in SimpleITK")]
    return (lines[-1] if lines else "SimpleITK gave no reason")[:200]


def _clean(line: str) -> str:
    """Drop object addresses, source locations and the library prefixes from one of ITK's lines."""
    for noise in _NOISE:
        line = noise.sub("", line)
    line = re.sub(r"^(?:\*\* )?(?:ITK |itk::|sitk::)?(?:ERROR|WARNING):?\s*", "", line.strip())
    line = re.sub(r"^\[nrrd\] \w+:\s*", "", line)
    return re.sub(r"\s+", " ", line).strip(" :")
