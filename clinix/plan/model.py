"""The plan: everything later stages need, as plain JSON (``WORK/plans.json``).

Axis order is the array order ``(z, y, x)`` everywhere; clinix does not transpose axes the way nnU-Net
does, because its 3D-only configuration plans kernels and pooling per axis anyway.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clinix.errors import ClinixError
from clinix.io.labels import LabelSet
from clinix.workdir import CONFIGURATION, WorkDir


@dataclass
class ChannelNormalization:
    """How one channel is normalised (nnU-Net reference §4.2).

    ``scheme``: ``"ct"`` clips to the dataset's foreground [lower, upper] percentiles then z-scores with the
    dataset's foreground mean/std; ``"zscore"`` z-scores each image with its own statistics (inside the
    nonzero mask when ``use_nonzero_mask``); ``"none"`` only casts to float32.
    """

    name: str
    scheme: str
    use_nonzero_mask: bool = False
    mean: float | None = None
    std: float | None = None
    lower: float | None = None
    upper: float | None = None


@dataclass
class ResamplingSettings:
    """Interpolation used by preprocessing and by the inverse path at inference.

    Images: spline ``image_order``; labels: one-hot ``label_order`` (1 = linear per label, then the
    largest); probabilities: ``probability_order``. When the anisotropy of the source or target spacing
    exceeds ``anisotropy_threshold``, the in-plane axes use those orders and the thick axis ``order_z``.
    """

    image_order: int = 3
    label_order: int = 1
    probability_order: int = 1
    order_z: int = 0
    anisotropy_threshold: float = 3.0


@dataclass
class OptimizerSettings:
    name: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 1e-5
    eps: float = 1e-5
    momentum: float = 0.99
    poly_exponent: float = 0.9
    grad_clip: float = 12.0


FOREGROUND_OVERSAMPLING = 0.33  # nnU-Net's share of patches centred on a foreground voxel


@dataclass
class Plan:
    """The experiment plan of one dataset, configuration ``3d_fullres``."""

    dataset_root: str
    dataset: dict[str, Any]
    target_spacing: list[float]
    median_shape: list[int]
    normalization: list[ChannelNormalization]
    resampling: ResamplingSettings
    patch_size: list[int]
    batch_size: int
    batch_dice: bool
    arch: str
    loss: str
    network: dict[str, Any]
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    foreground_oversampling: float = FOREGROUND_OVERSAMPLING
    crop: str = "nonzero"  # the box preprocessing keeps: "nonzero" (nnU-Net) or "body" (CT: the patient's box)
    device: str = "cuda"
    memory_gb: float = 8.0
    memory_estimate_gb: float | None = None
    memory_model_version: int = 1
    seconds_per_iteration_budget: float | None = None
    seconds_per_iteration_estimate: float | None = None
    cpu_flops_per_second: float | None = None
    configuration: str = CONFIGURATION
    notes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> LabelSet:
        """The dataset's labels (classes or regions), as ``clinix.io.labels`` reads them."""
        return LabelSet.from_json(self.dataset)

    @property
    def num_classes(self) -> int:
        """Network outputs: one per class with the background (softmax), or one per region (sigmoid)."""
        return self.labels.num_outputs

    @property
    def num_channels(self) -> int:
        return len(self.dataset["channel_names"])

    @property
    def channel_names(self) -> list[str]:
        """The input channels in order (``channel_names`` is a list, or a dict keyed "0", "1", ...)."""
        names = self.dataset["channel_names"]
        if isinstance(names, dict):
            return [str(names[key]) for key in sorted(names, key=int)]
        return [str(name) for name in names]

    @property
    def ignore_label(self) -> int | None:
        return self.dataset.get("ignore_label")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        data = {k: v for k, v in data.items() if k != "clinix_version"}
        try:
            return cls(
                **{
                    **data,
                    "normalization": [ChannelNormalization(**n) for n in data["normalization"]],
                    "resampling": ResamplingSettings(**data["resampling"]),
                    "optimizer": OptimizerSettings(**data.get("optimizer", {})),
                }
            )
        except (KeyError, TypeError) as error:
            raise ClinixError(f"plans.json is not a clinix plan ({error})") from None


def load_plan(workdir: Path) -> Plan:
    """Read ``workdir/plans.json``; a clear error when planning has not run yet."""
    path = WorkDir(workdir).plans
    if not path.is_file():
        raise ClinixError(f"{path}: no plan yet; run 'clinix plan DATASET' first")
    try:
        return Plan.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise ClinixError(f"{path}: is not valid JSON ({error})") from None
