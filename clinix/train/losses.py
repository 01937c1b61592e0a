"""Training losses (paper §2.5, Table 5): cross-entropy, soft Dice, the region-specific Tversky term,
the four ``--loss`` compounds and the deep-supervision wrapper.

Shapes everywhere: logits ``(B, K, Z, Y, X)``; target an integer label map ``(B, 1, Z, Y, X)`` or
``(B, Z, Y, X)``. Voxels carrying ``ignore_label`` (dataset.json ``"ignore"``) are masked out of every
term. All losses follow one convention: 0 for a perfect prediction, so a compound is a plain sum.

Region datasets (BraTS: whole tumour, tumour core, enhancing tumour) train as nnU-Net does: one sigmoid
output per region, the targets are the region masks (``K`` = the number of regions), and the first term
is binary cross-entropy instead of the softmax's (nnU-Net's ``DC_and_BCE_loss``). The soft Dice and the
region-specific Tversky term then run on the sigmoid probabilities, one region channel at a time, exactly
as they run on the classes' softmax probabilities: the paper defines RS for classes that do not overlap,
and applied per region channel it is the same index (TP, FP and FN of one binary map, averaged over a
grid of sub-volumes), so overlapping regions are each judged on their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clinix.errors import ClinixError

DICE_SMOOTH = 1e-5
DEFAULT_REGION_GRID = (8, 8, 14)  # regions per axis (Z, Y, X), as the released TRS trainer
TVERSKY_BASE = 0.3  # A: the smallest weight an error type gets in the adaptive rule
TVERSKY_SPREAD = 0.4  # B: the gap between the smallest and the largest weight
RS_WEIGHT = 0.8  # w in L = CE + Dice + w·RS (released class default)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossVariant:
    """One ``--loss`` choice: the weight of the region-specific term and its α, β (None: adaptive)."""

    rs_weight: float
    alpha_beta: tuple[float, float] | None


# Paper Table 5, left to right. The three RS variants share w = 0.8 so that they differ only in α, β.
LOSS_VARIANTS: dict[str, LossVariant] = {
    "ce-dice": LossVariant(rs_weight=0.0, alpha_beta=None),
    "ce-dice-rs": LossVariant(rs_weight=RS_WEIGHT, alpha_beta=(0.5, 0.5)),
    "ce-dice-trs-fixed": LossVariant(rs_weight=RS_WEIGHT, alpha_beta=(0.3, 0.7)),
    "ce-dice-trs": LossVariant(rs_weight=RS_WEIGHT, alpha_beta=None),
}
LOSS_NAMES: tuple[str, ...] = tuple(LOSS_VARIANTS)
DEFAULT_LOSS = "ce-dice-trs"


def _label_map(target: torch.Tensor) -> torch.Tensor:
    """Label map ``(B, 1, Z, Y, X)`` or ``(B, Z, Y, X)`` -> ``(B, Z, Y, X)`` long."""
    return (target[:, 0] if target.ndim == 5 else target).long()


def split_ignore(target: torch.Tensor, ignore_label: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Label map ``(B, 1, Z, Y, X)`` or ``(B, Z, Y, X)`` -> labels ``(B, Z, Y, X)`` long, mask or None.

    Ignored voxels get label 0 and mask 0; the mask ``(B, 1, Z, Y, X)`` is 1 elsewhere (bool).
    """
    labels = _label_map(target)
    if ignore_label is None:
        return labels, None
    annotated = labels != ignore_label
    return labels * annotated, annotated[:, None]


def _class_maps(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None, do_bg: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and one-hot target, both ``(B, K', Z, Y, X)``, zero under the ignore mask.

    K' = K, or K − 1 without the background class. Probabilities are at least float32 (AMP-safe).
    """
    probs = torch.softmax(logits, dim=1, dtype=torch.promote_types(logits.dtype, torch.float32))
    onehot = torch.zeros_like(probs).scatter_(1, labels[:, None], 1.0)
    if mask is not None:
        probs = probs * mask
        onehot = onehot * mask
    if not do_bg:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    return probs, onehot


def _region_maps(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None, regions: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid probabilities and region masks, both ``(B, R, Z, Y, X)``, zero under the ignore mask."""
    probs = torch.sigmoid(logits.to(torch.promote_types(logits.dtype, torch.float32)))
    targets = torch.stack(
        [torch.isin(labels, torch.tensor(values, device=labels.device)) for values in regions], dim=1
    ).to(probs.dtype)
    if mask is not None:
        probs = probs * mask
        targets = targets * mask
    return probs, targets


def binary_cross_entropy_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean BCE of region logits and masks ``(B, R, Z, Y, X)`` over the annotated voxels; 0 when none."""
    terms = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    if mask is None:
        return terms.mean()
    return (terms * mask).sum() / (mask.sum() * terms.shape[1]).clamp_min(1)


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, *, ignore_label: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of logits ``(B, K, Z, Y, X)`` over the annotated voxels; 0 when there are none."""
    labels = _label_map(target)
    ignore_index = -100 if ignore_label is None else ignore_label
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    # a mean over annotated voxels, as ignore_index does, but 0 instead of NaN for a fully ignored batch
    return total / (labels != ignore_index).sum().clamp_min(1)


def _soft_dice_coefficient(
    probs: torch.Tensor, onehot: torch.Tensor, *, batch_dice: bool, smooth: float
) -> torch.Tensor:
    """Mean soft Dice (eq. 14) of probabilities and one-hot target ``(B, K', Z, Y, X)``.

    Sums per sample and class (over the batch too when ``batch_dice``), then the ratio, then the mean.
    """
    spatial = tuple(range(2, probs.ndim))
    intersection = (probs * onehot).sum(spatial)  # (B, K')
    total = probs.sum(spatial) + onehot.sum(spatial)
    if batch_dice:
        intersection, total = intersection.sum(0), total.sum(0)
    # the floor only matters with smooth = 0 on a class absent from target and prediction
    dice = (2 * intersection + smooth) / (total + smooth).clamp_min(1e-8)
    return dice.mean()


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    batch_dice: bool = False,
    do_bg: bool = False,
    smooth: float = DICE_SMOOTH,
    ignore_label: int | None = None,
) -> torch.Tensor:
    """``1 − mean soft Dice`` (eq. 14) of logits ``(B, K, Z, Y, X)`` over the foreground classes.

    ``do_bg`` keeps class 0; ``batch_dice`` pools the sums over the batch before the ratio.
    """
    labels, mask = split_ignore(target, ignore_label)
    probs, onehot = _class_maps(logits, labels, mask, do_bg)
    return 1 - _soft_dice_coefficient(probs, onehot, batch_dice=batch_dice, smooth=smooth)


def effective_region_grid(region_grid: Sequence[int], spatial_shape: Sequence[int]) -> tuple[int, ...]:
    """Regions per axis, never more than the voxels on that axis (low deep-supervision outputs)."""
    return tuple(min(regions, size) for regions, size in zip(region_grid, spatial_shape, strict=True))


def adaptive_tversky_weights(
    fp: torch.Tensor, fn: torch.Tensor, *, smooth: float = DICE_SMOOTH
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-region α (FP weight) and β (FN weight) in [A, A + B]: the dominant error type weighs more.

    ``α = A + B·(FP+ε)/(FP+FN+ε)``, ``β = A + B·(FN+ε)/(FP+FN+ε)``, A = 0.3, B = 0.4. Not detached:
    gradients flow through α and β, as in the released code.
    """
    errors = fp + fn + smooth
    alpha = TVERSKY_BASE + TVERSKY_SPREAD * (fp + smooth) / errors
    beta = TVERSKY_BASE + TVERSKY_SPREAD * (fn + smooth) / errors
    return alpha, beta


def _region_tversky_index(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    *,
    region_grid: Sequence[int],
    alpha_beta: tuple[float, float] | None,
    batch_dice: bool,
    smooth: float,
    clamp_grid: bool,
) -> torch.Tensor:
    """Mean region-specific Tversky index (eq. 16) of probabilities and one-hot ``(B, K', Z, Y, X)``.

    Regions hold means (adaptive average pooling, as released), so ε acts like ``n·ε`` on the sums of
    eq. 16 for a region of n voxels. With ``clamp_grid=False`` a grid finer than an axis is kept and
    pooling repeats voxels, reproducing the released behaviour on low-resolution outputs.
    """
    if clamp_grid:
        region_grid = effective_region_grid(region_grid, probs.shape[2:])
    pool = nn.AdaptiveAvgPool3d(tuple(region_grid))
    # pooling is linear: FP = p·(1−g) and FN = (1−p)·g follow from the pooled p, g and TP without
    # building two more full-size voxel maps
    tp = pool(probs * onehot)  # (B, K', *grid)
    fp = pool(probs) - tp
    fn = pool(onehot) - tp
    if batch_dice:
        tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
    if alpha_beta is None:
        alpha, beta = adaptive_tversky_weights(fp, fn, smooth=smooth)
    else:
        alpha, beta = alpha_beta
    tversky = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)  # eq. 15 per region
    return tversky.mean()


def region_tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    region_grid: Sequence[int] = DEFAULT_REGION_GRID,
    alpha_beta: tuple[float, float] | None = None,
    batch_dice: bool = False,
    do_bg: bool = False,
    smooth: float = DICE_SMOOTH,
    ignore_label: int | None = None,
    clamp_grid: bool = True,
) -> torch.Tensor:
    """``1 − mean T`` over regions and classes (eq. 16) of logits ``(B, K, Z, Y, X)``.

    Per class and region ``T = (TP+ε)/(TP + α·FP + β·FN + ε)`` on region means of the voxel maps
    ``TP = p·g``, ``FP = p·(1−g)``, ``FN = (1−p)·g`` (zero under the ignore mask). ``alpha_beta`` fixes
    α, β; None uses the adaptive rule. ``batch_dice`` sums TP, FP, FN over the batch before the ratio.
    The released code returns ``−mean T``; this is that value plus 1.
    """
    labels, mask = split_ignore(target, ignore_label)
    probs, onehot = _class_maps(logits, labels, mask, do_bg)
    index = _region_tversky_index(
        probs,
        onehot,
        region_grid=region_grid,
        alpha_beta=alpha_beta,
        batch_dice=batch_dice,
        smooth=smooth,
        clamp_grid=clamp_grid,
    )
    return 1 - index


class CompoundLoss(nn.Module):
    """``CE + (1 − Dice) + w·(1 − mean T)`` on logits ``(B, K, Z, Y, X)`` (paper §2.5); w = 0 drops RS.

    With ``regions`` (the label values of each of the K regions) it is ``BCE + (1 − Dice) + w·(1 − mean T)``
    on sigmoid outputs (module docstring).
    """

    def __init__(
        self,
        *,
        batch_dice: bool,
        ignore_label: int | None = None,
        rs_weight: float = RS_WEIGHT,
        alpha_beta: tuple[float, float] | None = None,
        region_grid: Sequence[int] = DEFAULT_REGION_GRID,
        do_bg: bool = False,
        smooth: float = DICE_SMOOTH,
        regions: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.regions = [tuple(values) for values in regions] if regions else None
        self.batch_dice = batch_dice
        self.ignore_label = ignore_label
        self.rs_weight = rs_weight
        self.alpha_beta = alpha_beta
        self.region_grid = tuple(region_grid)
        self.do_bg = do_bg
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of logits ``(B, K, Z, Y, X)`` against a label map of the same spatial shape."""
        labels, mask = split_ignore(target, self.ignore_label)
        if self.regions is not None:
            probs, onehot = _region_maps(logits, labels, mask, self.regions)
            ce = binary_cross_entropy_loss(logits, onehot, mask)
        else:
            probs, onehot = _class_maps(logits, labels, mask, self.do_bg)
            ce = cross_entropy_loss(logits, target, ignore_label=self.ignore_label)
        dice = _soft_dice_coefficient(probs, onehot, batch_dice=self.batch_dice, smooth=self.smooth)
        loss = ce + (1 - dice)
        if self.rs_weight:
            tversky = _region_tversky_index(
                probs,
                onehot,
                region_grid=self.region_grid,
                alpha_beta=self.alpha_beta,
                batch_dice=self.batch_dice,
                smooth=self.smooth,
                clamp_grid=True,
            )
            loss = loss + self.rs_weight * (1 - tversky)
        return loss


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """Weights of outputs 0 (full resolution) .. n−1: ``1/2^i``, the lowest set to 0, normalised.

    5 outputs give [8/15, 4/15, 2/15, 1/15, 0]. A single output keeps weight 1.
    """
    weights = [1 / 2**i for i in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = 0.0
    return [weight / sum(weights) for weight in weights]


def downsample_label_map(target: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour (``nearest-exact``) resize of a label map, keeping its layout and dtype."""
    if tuple(target.shape[-3:]) == tuple(spatial_shape):
        return target
    with_channel = target if target.ndim == 5 else target[:, None]
    # float32 holds every label value exactly; interpolate does not take integer tensors
    resized = F.interpolate(with_channel.float(), size=tuple(spatial_shape), mode="nearest-exact")
    resized = resized.to(target.dtype)
    return resized if target.ndim == 5 else resized[:, 0]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss`` over the outputs of a deep-supervised decoder, full resolution first.

    Outputs ``[(B, K, *shape_i)]``; the target is the full-resolution label map (downsampled here to
    each output) or one label map per output. Zero-weight terms are skipped, not computed.
    """

    def __init__(self, loss: Loss, weights: Sequence[float]) -> None:
        super().__init__()
        self.loss = loss
        self.weights = tuple(weights)

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Scalar ``Σ w_i · loss(output_i, target_i)``."""
        if len(outputs) != len(self.weights):
            raise ValueError(f"{len(outputs)} outputs for {len(self.weights)} deep-supervision weights")
        if isinstance(target, torch.Tensor):
            targets = [downsample_label_map(target, output.shape[2:]) for output in outputs]
        else:
            targets = list(target)
        terms = [
            weight * self.loss(output, output_target)
            for weight, output, output_target in zip(self.weights, outputs, targets, strict=True)
            if weight != 0
        ]
        return torch.stack(terms).sum()


def build_loss(
    name: str,
    *,
    batch_dice: bool,
    ignore_label: int | None = None,
    region_grid: Sequence[int] = DEFAULT_REGION_GRID,
    deep_supervision_weights: Sequence[float] | None = None,
    regions: Sequence[Sequence[int]] | None = None,
) -> nn.Module:
    """The ``--loss`` compound by name (one of ``LOSS_NAMES``), wrapped for deep supervision if weighted.

    Without ``deep_supervision_weights`` the module takes ``(logits, target)``; with them, a list of
    outputs (full resolution first) and the full-resolution target. ``regions`` (the values of each
    region, ``LabelSet.regions``) makes it a sigmoid, region-based loss.
    """
    if name not in LOSS_VARIANTS:
        raise ClinixError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    variant = LOSS_VARIANTS[name]
    loss = CompoundLoss(
        batch_dice=batch_dice,
        ignore_label=ignore_label,
        rs_weight=variant.rs_weight,
        alpha_beta=variant.alpha_beta,
        region_grid=region_grid,
        regions=regions,
    )
    if deep_supervision_weights is None:
        return loss
    return DeepSupervisionLoss(loss, deep_supervision_weights)
