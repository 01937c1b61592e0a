"""``Predictor``: preprocess, sliding window with mirror TTA, fold ensemble, back to the image grid (SPEC §7).

Per model (fold) the tile logits are Gaussian-averaged (and averaged over the mirrorings) into one
``(K, z, y, x)`` float32 accumulator, turned into probabilities (softmax over classes, sigmoid per region of
a region dataset), and added to the ensemble sum;
the sum over folds is divided by their number: logits are averaged within a model as nnU-Net does,
probabilities across models as SPEC §7 says. Memory on the preprocessed grid: one model alone keeps one
``(K, z, y, x)`` float32 array (the accumulator becomes the result in place); an ensemble keeps two (the
running sum and the current model's accumulator). Networks are loaded one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clinix.device import precision_name, resolve_device, resolve_precision
from clinix.errors import ClinixError
from clinix.infer.models import ModelEntry, ModelSource, NetworkSlot, model_source
from clinix.infer.sliding_window import TileForward, sliding_window_logits
from clinix.infer.tta import mirrored_forward
from clinix.io.image import Geometry
from clinix.plan.model import Plan
from clinix.preprocess import CaseProperties, preprocess_case, restore_label_map

SOFTMAX_SLAB_VALUES = 1 << 22  # softmax runs on z-slabs of about this many values (16 MiB in float32)


def default_batch_tiles(device: torch.device) -> int:
    """Tiles per forward pass: 4 on CUDA, 2 elsewhere."""
    return 4 if device.type == "cuda" else 2


class Predictor:
    """Predict with an ensemble of models trained on one plan.

    Args:
        plan: the plan the models were trained with (preprocessing, patch size, classes).
        checkpoints: ensemble members, each a checkpoint path, a checkpoint dict, a bare ``state_dict`` or
            a ``torch.nn.Module`` already on ``device`` (see ``clinix.infer.models``).
        device: ``auto``, ``cpu``, ``cuda``, ``mps`` or a ``torch.device``.
        tta: mirror test-time augmentation over each model's ``mirror_axes``.
        step: tile step as a fraction of the patch (0.5: tiles overlap by half).
        batch_tiles: tiles per forward pass (default 4 on CUDA, 2 elsewhere).
        precision: ``auto``, ``fp32`` or ``bf16`` (``clinix.device.resolve_precision``): the autocast
            dtype of the network's forward; accumulation, softmax and resampling stay float32.
    """

    def __init__(
        self,
        plan: Plan,
        checkpoints: Sequence[ModelEntry],
        device: str | torch.device = "auto",
        tta: bool = True,
        step: float = 0.5,
        batch_tiles: int | None = None,
        precision: str = "auto",
    ) -> None:
        if not checkpoints:
            raise ClinixError("no model given to predict with")
        if not 0 < step <= 1:
            raise ClinixError(f"--step must be in (0, 1], got {step}")
        if batch_tiles is not None and batch_tiles < 1:
            raise ClinixError(f"--batch-tiles must be at least 1, got {batch_tiles}")
        self.plan = plan
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.tta = tta
        self.step = step
        self.batch_tiles = batch_tiles or default_batch_tiles(self.device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.precision = precision_name(self.autocast_dtype)
        self.models = [model_source(entry, plan, index) for index, entry in enumerate(checkpoints)]
        for source in self.models:
            if source.num_classes not in (None, plan.num_classes):
                classes = f"predicts {source.num_classes} classes, the plan has {plan.num_classes}"
                raise ClinixError(f"{source.name}: {classes}")
        self._slot = NetworkSlot(self.device)

    def predict_preprocessed(self, data: np.ndarray) -> np.ndarray:
        """Class probabilities of a preprocessed case.

        Args:
            data: ``(C, z, y, x)`` on the plan's grid (``preprocess_case`` output).

        Returns:
            ``(K, z, y, x)`` float32 probabilities (softmax over classes, or sigmoid per region), averaged
            over the models.
        """
        image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(self.device)
        total: np.ndarray | None = None
        with torch.inference_mode():
            for source in self.models:
                total = add_probabilities(total, self._model_logits(source, image), self.plan.labels.activation)
        assert total is not None
        if len(self.models) > 1:
            total /= len(self.models)
        return np.ascontiguousarray(total)

    def predict_probabilities(
        self, image: np.ndarray, geometry: Geometry, case_id: str = ""
    ) -> tuple[np.ndarray, CaseProperties]:
        """Preprocess a raw image ``(C, Z, Y, X)`` and predict: ``(K, z, y, x)`` probabilities and properties."""
        data, _, properties = preprocess_case(image, None, geometry, self.plan, case_id)
        return self.predict_preprocessed(data), properties

    def predict_image(self, image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
        """Labels ``(Z, Y, X)`` (uint8, uint16 beyond 255) of a raw image ``(C, Z, Y, X)``, and its geometry."""
        probabilities, properties = self.predict_probabilities(image, geometry)
        return restore_label_map(probabilities, properties, self.plan), properties.geometry

    def _model_logits(self, source: ModelSource, image: torch.Tensor) -> torch.Tensor:
        """Gaussian- and mirror-averaged logits ``(K, z, y, x)`` of one model."""
        with self._slot.network(source) as network:
            mirror_axes = source.mirror_axes if self.tta else None
            forward = mirrored_forward(_autocast_forward(network, self.device, self.autocast_dtype), mirror_axes)
            window = (forward, image, self.plan.patch_size, self.plan.num_classes, self.step, self.batch_tiles)
            try:
                return sliding_window_logits(*window)
            except torch.cuda.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                # as nnU-Net: retry with the accumulator in host memory, the network stays on the GPU
                torch.cuda.empty_cache()
                return sliding_window_logits(*window, accumulator_device="cpu")


def _autocast_forward(network: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> TileForward:
    """The network under ``dtype`` autocast on ``device`` (as is for None); logits come back as they are."""
    if dtype is None:
        return network

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return network(batch)

    return forward


def add_probabilities(total: np.ndarray | None, logits: torch.Tensor, activation: str = "softmax") -> np.ndarray:
    """Add ``softmax(logits)`` over classes (or ``sigmoid`` per region) to ``total``; the first call creates it.

    Works on z-slabs so no second full-size array is made: on the first call with CPU float32 logits the
    probabilities overwrite the logits in place and that memory becomes ``total``.

    Args:
        total: ``(K, z, y, x)`` float32 running sum, or None.
        logits: ``(K, z, y, x)`` on any device.
    """
    depth = logits.shape[1]
    slab = max(1, SOFTMAX_SLAB_VALUES // max(1, logits.shape[0] * logits.shape[2] * logits.shape[3]))
    in_place = total is None and logits.device.type == "cpu" and logits.dtype == torch.float32
    if total is None and not in_place:
        total = np.zeros(tuple(logits.shape), dtype=np.float32)
    for start in range(0, depth, slab):
        block = logits[:, start : start + slab]
        block32 = block.float()
        probabilities = torch.softmax(block32, dim=0) if activation == "softmax" else torch.sigmoid(block32)
        if in_place:
            block.copy_(probabilities)
        else:
            total[:, start : start + slab] += probabilities.cpu().numpy()  # type: ignore[index]
    return logits.numpy() if in_place else total  # type: ignore[return-value]
