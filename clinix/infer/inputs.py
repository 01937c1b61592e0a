"""Find and read the images to predict (nnU-Net reference §6.2).

A file named ``CASE_XXXX<ending>`` (four-digit channel) is channel XXXX of case CASE; any other image
file is a case of its own, its name without the ending being the case id. ``IN`` may also be one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinix.errors import ClinixError, DatasetError
from clinix.io.image import Geometry, has_image_ending, read_image, require_finite, strip_ending

_CHANNEL_SUFFIX = re.compile(r"(.+)_(\d{4})")


@dataclass(frozen=True)
class InputCase:
    """One case to predict.

    Attributes:
        files: one file per channel in channel order, or one file (which may hold several channels).
        ending: the file ending of the input (``.nii.gz``, ``.nrrd``, ...), reused for the output.
        problem: why the files cannot form a case (reported when the case is predicted), or None.
    """

    case_id: str
    files: tuple[Path, ...]
    ending: str
    problem: str | None = None


def discover_inputs(path: str | Path) -> list[InputCase]:
    """The cases of a folder (or the single case of a file), sorted by case id."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and has_image_ending(p))
    else:
        raise ClinixError(f"{path}: no such file or folder")
    if not files:
        raise ClinixError(f"{path}: no images found (expected CASE_0000.nii.gz, ... or one image file per case)")
    groups: dict[str, list[tuple[int | None, Path]]] = {}
    for file in files:
        stem = strip_ending(file.name)
        match = _CHANNEL_SUFFIX.fullmatch(stem)
        case_id, channel = (match.group(1), int(match.group(2))) if match else (stem, None)
        groups.setdefault(case_id, []).append((channel, file))
    return [_input_case(case_id, entries) for case_id, entries in sorted(groups.items())]


def _input_case(case_id: str, entries: list[tuple[int | None, Path]]) -> InputCase:
    entries = sorted(entries, key=lambda entry: -1 if entry[0] is None else entry[0])
    files = tuple(file for _, file in entries)
    endings = {file.name[len(strip_ending(file.name)) :] for file in files}
    channels = [channel for channel, _ in entries]
    problem = None
    if len(endings) > 1:
        problem = f"its files have different endings ({', '.join(sorted(endings))})"
    elif None in channels and len(files) > 1:
        problem = f"{files[0].name} (no channel suffix) and channel files {case_id}_XXXX share one case id"
    elif None not in channels and channels != list(range(len(channels))):
        found = ", ".join(f"_{c:04d}" for c in channels)
        problem = f"channel files {found} are not numbered _0000 to _{len(channels) - 1:04d}"
    return InputCase(case_id, files, files[0].name[len(strip_ending(files[0].name)) :], problem)


def read_input_case(case: InputCase, channel_names: list[str]) -> tuple[np.ndarray, Geometry]:
    """Read a case as ``(C, Z, Y, X)`` float32 and the geometry of its first file.

    Raises DatasetError (naming the file) for a naming problem, an unreadable file, channel files of
    different shapes, or a channel count other than the model's.
    """
    if case.problem is not None:
        raise DatasetError(case.files[0], case.problem)
    arrays, geometry = [], None
    for file in case.files:
        array, file_geometry = read_image(file)
        require_finite(file, array)
        if arrays and array.shape[1:] != arrays[0].shape[1:]:
            first = f"{case.files[0].name}'s {arrays[0].shape[1:]}"
            raise DatasetError(file, f"shape {array.shape[1:]} differs from {first}")
        arrays.append(array)
        geometry = geometry or file_geometry
    image = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    if image.shape[0] != len(channel_names):
        found = f"case {case.case_id} has {image.shape[0]} channel(s)"
        expected = f"{len(channel_names)} ({', '.join(channel_names)})"
        raise DatasetError(case.files[0], f"{found}, the model expects {expected}")
    assert geometry is not None
    return image, geometry
