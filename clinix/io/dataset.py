"""Dataset layouts read directly: nnU-Net v2 raw and the Medical Segmentation Decathlon (SPEC §2).

``parse_dataset`` reads ``dataset.json`` and lists the cases, collecting every problem it finds instead of
stopping at the first; ``open_dataset`` is the strict form the pipeline uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clinix.errors import ClinixError, DatasetError
from clinix.io.image import Geometry, has_image_ending, read_image, read_label, require_finite, strip_ending
from clinix.io.labels import LabelSet, parse_label_set

Severity = Literal["error", "warning"]
NNUNET_REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
MSD_REQUIRED_KEYS = ("modality", "labels", "numTraining", "training")


@dataclass(frozen=True)
class Problem:
    """One finding of validation: a file and what is wrong with it."""

    severity: Severity
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"

    @classmethod
    def from_error(cls, error: ClinixError, path: Path) -> Problem:
        """The error-level problem ``error`` reports: a DatasetError's own file, else ``path``."""
        if isinstance(error, DatasetError):
            return cls("error", error.path, error.problem)
        return cls("error", path, str(error))


@dataclass(frozen=True)
class Case:
    """One training case: its channel files (one per channel, or one 4D file) and its label file."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class Dataset:
    """A dataset folder, whatever its layout; ``labels`` is None when dataset.json's cannot be read at all."""

    root: Path
    layout: Literal["nnunet", "msd"]
    name: str
    channel_names: list[str]
    labels: LabelSet | None
    file_ending: str
    num_training: int
    cases: list[Case] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DatasetError(self.root, f"no case named {case_id!r}")

    def case_digest(self, case: Case) -> str:
        """A hash of the sizes and modification times of the case's files: it changes when one does."""
        return files_digest([*case.images, *([case.label] if case.label is not None else [])])

    def digest(self) -> str:
        """``case_digest`` over dataset.json and every case: what a fingerprint of the dataset is valid for."""
        return files_digest([self.root / "dataset.json"], extra=[self.case_digest(case) for case in self.cases])

    def read_images(self, case: Case) -> tuple[np.ndarray, Geometry]:
        """A case's channels stacked to ``(C, Z, Y, X)`` float32, and the geometry of channel 0."""
        arrays = [read_image(path) for path in case.images]
        for path, (array, _) in zip(case.images, arrays, strict=True):
            require_finite(path, array)
        try:
            image = np.concatenate([a for a, _ in arrays], axis=0)
        except ValueError:  # channels of different shapes cannot be stacked
            shapes = [a.shape[1:] for a, _ in arrays]
            raise DatasetError(case.images[0], f"channels of case {case.case_id!r} differ in shape {shapes}") from None
        return image, arrays[0][1]

    def read_case(self, case: Case) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
        """Read a case: image ``(C, Z, Y, X)`` float32, label ``(Z, Y, X)`` int or None, geometry of channel 0."""
        image, geometry = self.read_images(case)
        label = read_label(case.label)[0] if case.label is not None else None
        return image, label, geometry

    def to_json(self) -> dict[str, Any]:
        """What later stages need to know of the dataset (cases are re-listed from the folder)."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "name": self.name,
            "channel_names": self.channel_names,
            **(self.labels.to_json() if self.labels is not None else {}),
            "file_ending": self.file_ending,
            "num_training": self.num_training,
        }


def files_digest(paths: list[Path], extra: list[str] | None = None) -> str:
    """A short hash of each file's path, size and modification time (links followed), and of ``extra``."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            status = path.stat()
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    for text in extra or []:
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def open_dataset(root: str | Path) -> Dataset:
    """Parse a dataset folder; raise ``DatasetError`` on the first error-level problem."""
    dataset, problems = parse_dataset(root)
    errors = [p for p in problems if p.severity == "error"]
    if errors or dataset is None:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems; run 'clinix validate')" if len(errors) > 1 else ""
        raise DatasetError(first.path, first.message + more)
    return dataset


def parse_dataset(root: str | Path) -> tuple[Dataset | None, list[Problem]]:
    """Read ``root/dataset.json`` and list cases. Returns the dataset (None if unusable) and all problems."""
    root = Path(root).expanduser().resolve()
    problems: list[Problem] = []
    meta_path = root / "dataset.json"
    if not root.is_dir():
        return None, [Problem("error", root, "dataset folder not found")]
    if not meta_path.is_file():
        return None, [Problem("error", meta_path, "missing dataset.json")]
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, [Problem("error", meta_path, f"is not valid JSON ({error})")]
    if not isinstance(meta, dict):
        return None, [Problem("error", meta_path, "must hold a JSON object")]

    layout: Literal["nnunet", "msd"] = "msd" if "training" in meta and "channel_names" not in meta else "nnunet"
    required = MSD_REQUIRED_KEYS if layout == "msd" else NNUNET_REQUIRED_KEYS
    missing = [k for k in required if k not in meta and not (k == "channel_names" and "modality" in meta)]
    problems += [Problem("error", meta_path, f"missing key '{k}'") for k in missing]
    if missing:
        return None, problems

    channel_names = _channel_names(meta.get("channel_names", meta.get("modality")), meta_path, problems)
    labels, findings = parse_label_set(meta["labels"], meta.get("regions_class_order"), layout)
    problems += [Problem(severity, meta_path, message) for severity, message in findings]
    file_ending = str(meta.get("file_ending", ".nii.gz"))
    if layout == "msd":
        cases = _msd_cases(root, meta["training"], meta_path, problems)
    elif "dataset" in meta:
        cases = _listed_cases(root, meta["dataset"], meta_path, problems)
    else:
        cases = _nnunet_cases(root, file_ending, len(channel_names), problems)

    num_training = meta["numTraining"]
    if not isinstance(num_training, int) or num_training != len(cases):
        problems.append(
            Problem("error", meta_path, f"numTraining is {num_training!r} but {len(cases)} cases were found")
        )
    dataset = Dataset(
        root=root,
        layout=layout,
        name=str(meta.get("name", root.name)),
        channel_names=channel_names,
        labels=labels,  # kept with its errors, if any, so that validation still checks the label files
        file_ending=file_ending,
        num_training=num_training if isinstance(num_training, int) else len(cases),
        cases=cases,
    )
    return dataset, problems


def _channel_names(raw: Any, meta_path: Path, problems: list[Problem]) -> list[str]:
    if not isinstance(raw, dict) or not raw:
        problems.append(Problem("error", meta_path, "'channel_names' must map '0', '1', ... to channel names"))
        return []
    try:
        indices = sorted(int(k) for k in raw)
    except ValueError:
        problems.append(Problem("error", meta_path, "'channel_names' keys must be channel indices '0', '1', ..."))
        return []
    if indices != list(range(len(indices))):
        problems.append(Problem("error", meta_path, f"'channel_names' indices must be 0..{len(indices) - 1}"))
    return [str(raw[str(i)]) if str(i) in raw else "" for i in range(len(indices))]


def _inside(root: Path, relative: Any, meta_path: Path, problems: list[Problem]) -> Path | None:
    """A path from dataset.json, inside the dataset folder; one that leaves it (``..``, absolute) is refused.

    A symbolic link inside the folder is followed wherever it points, as in the default layout.
    """
    if not isinstance(relative, str) or not relative:
        problems.append(Problem("error", meta_path, f"expected a file path, found {relative!r}"))
        return None
    path = Path(os.path.normpath(root / relative))
    if not path.is_relative_to(root):
        problems.append(Problem("error", meta_path, f"path '{relative}' points outside the dataset folder (refused)"))
        return None
    _warn_if_link_leaves(root, path, problems)
    return path


def _warn_if_link_leaves(root: Path, path: Path, problems: list[Problem]) -> None:
    """A file that is (or lies under) a symbolic link to outside ``root`` is read, with a warning."""
    target = path.resolve()
    if not target.is_relative_to(root):
        problems.append(Problem("warning", path, f"is a symbolic link to {target}, outside the dataset (followed)"))


def _nnunet_cases(root: Path, file_ending: str, num_channels: int, problems: list[Problem]) -> list[Case]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        problems.append(Problem("error", images_dir, "missing folder imagesTr"))
        return []
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(file_ending))
    channels: dict[str, dict[int, Path]] = {}
    for path in _dataset_files(images_dir, file_ending):
        match = pattern.fullmatch(path.name)
        if match is None:
            problems.append(Problem("error", path, f"image name must be CASE_XXXX{file_ending} (4-digit channel)"))
            continue
        _warn_if_link_leaves(root, path, problems)
        channels.setdefault(match.group(1), {})[int(match.group(2))] = path
    cases = []
    for case_id, files in sorted(channels.items()):
        label = labels_dir / f"{case_id}{file_ending}"
        if label.exists():
            _warn_if_link_leaves(root, label, problems)
        cases.append(Case(case_id, tuple(files[i] for i in sorted(files)), label))
    for label in _dataset_files(labels_dir, file_ending):
        case_id = label.name[: -len(file_ending)]
        if case_id not in channels:
            missing = ", ".join(f"imagesTr/{case_id}_{c:04d}{file_ending}" for c in range(max(num_channels, 1)))
            problems.append(Problem("error", label, f"label file without an image: {missing} not found"))
    return cases


def _dataset_files(folder: Path, file_ending: str) -> list[Path]:
    """The files of ``folder`` with ``file_ending``, hidden ones left out, sorted; [] without the folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name.endswith(file_ending))


def _msd_cases(root: Path, training: Any, meta_path: Path, problems: list[Problem]) -> list[Case]:
    if not isinstance(training, list):
        problems.append(Problem("error", meta_path, "'training' must be a list of {image, label} entries"))
        return []
    cases = []
    for entry in training:
        if not isinstance(entry, dict) or "image" not in entry:
            problems.append(Problem("error", meta_path, f"training entry {entry!r} has no 'image'"))
            continue
        image = _inside(root, entry["image"], meta_path, problems)
        label = _inside(root, entry["label"], meta_path, problems) if "label" in entry else None
        if image is None:
            continue
        if not has_image_ending(image):
            problems.append(Problem("error", image, "is not an image file SimpleITK reads"))
        cases.append(Case(strip_ending(image.name), (image,), label))
    return cases


def _listed_cases(root: Path, listing: Any, meta_path: Path, problems: list[Problem]) -> list[Case]:
    """nnU-Net's explicit listing: ``"dataset": {case_id: {"images": [...], "label": path}}``."""
    if not isinstance(listing, dict):
        problems.append(Problem("error", meta_path, "'dataset' must map case ids to {images, label}"))
        return []
    cases = []
    for case_id, entry in sorted(listing.items()):
        raw_images = entry.get("images") if isinstance(entry, dict) else None
        if not isinstance(raw_images, list) or not raw_images:
            problems.append(Problem("error", meta_path, f"case {case_id!r} needs a non-empty 'images' list"))
            continue
        images = [_inside(root, p, meta_path, problems) for p in raw_images]
        label = _inside(root, entry["label"], meta_path, problems) if "label" in entry else None
        if all(p is not None for p in images):
            cases.append(Case(str(case_id), tuple(p for p in images if p is not None), label))
    return cases
