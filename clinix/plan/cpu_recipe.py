"""The CPU plan's rules for real data on a 2-core machine: a voxel budget for the spacing, the patch budget,
batch Dice and foreground oversampling for small targets, and the epochs of ``--train-minutes``.

``make_plan`` and ``plan_experiment`` (planner.py) apply them to CPU plans only; GPU plans follow nnU-Net.
"""

from __future__ import annotations

import math

import numpy as np

from clinix.fingerprint import Fingerprint
from clinix.plan.model import FOREGROUND_OVERSAMPLING, Plan
from clinix.plan.speed import time_training_steps

# A CPU plan resamples so the median case has at most this many voxels. Measured on 2 cores: the CPU plan's
# network runs at 0.57 µs per tile voxel in bf16, a tile pass costs 0.23 s at patch 32×96×128 and step 0.5
# tiles a case about 5× over, so with 8-fold mirror TTA a case costs about 20 µs per voxel: 2.5 M voxels is
# about 50 s (the tile count is discrete, so single cases vary by ±40 %). Only the axes finer than the
# coarsest are coarsened (thick slices stay as they are), never past the coarsest.
CPU_MAX_MEDIAN_VOXELS = 2_500_000
# Short CPU runs see few foreground patches: the oversampled share grows from nnU-Net's 1/3 for targets of
# 1 % of the image (T/W) to 0.9 for targets of 1e-4 and less, log-linearly between. On the lesion phantom,
# 16×56×80 patches with batch Dice: the seed that had not found a lesion after 150 iterations at 0.63 reached
# patch DSC 0.57 after 50 and 0.77 after 150 at 0.9.
OVERSAMPLING_RANGE = ((1e-2, 0.33), (1e-4, 0.9))
# Targets this small (mean T/W of the smallest class) get, on the CPU, a patch sized for SMALL_TARGET_SECONDS
# per iteration instead of 2 s, and batch Dice. Measured on the lesion phantom (T/W 1e-5..1e-3, 150
# iterations each, patch DSC on lesion-centred validation patches): 24×80×96 and 32×96×128 patches had not
# predicted one lesion voxel after 150 and 200 iterations; at 16×56×80 per-sample Dice, in patches without a
# lesion, rewards predicting nothing (and the region-specific term does so region by region), and 2 of 3
# seeds collapsed to "no lesion anywhere"; with batch Dice (Dice over the batch, as nnU-Net's 3d_fullres of a
# cascade) they learned. Six times the iterations in the same minutes, each patch a larger share of lesion,
# and still 80 mm of context at 1.2 mm.
SMALL_TARGET_FRACTION = 1e-3
SMALL_TARGET_SECONDS = 0.35
THIN_NETWORK_FEATURES = 16  # a first stage narrower than this trains without drop-path (nothing to regularise)
VALIDATION_STEP_SHARE = 1 / 3  # a validation iteration (forward only) costs about a third of a training step
EPOCH_OVERHEAD_S = 2.0  # per epoch: EMA, checkpoint, the log line
# on 2 cores the loader's threads (sampling, augmentation) slow each step: the 20-minute lesion recipe
# (108 epochs) took 21.3 minutes at 10 %, i.e. 19 % measured
LOADER_SHARE = 0.2


def smallest_target_fraction(fingerprint: Fingerprint) -> float | None:
    """The mean T/W (share of the image) of the smallest foreground class present, or None."""
    fractions = [stats.get("fraction_mean", 0.0) for stats in fingerprint.labels.values() if stats["values"] != [0]]
    present = [f for f in fractions if f > 0]
    return min(present) if present else None


def small_targets(fingerprint: Fingerprint) -> bool:
    """True when the smallest target's mean T/W is below ``SMALL_TARGET_FRACTION``."""
    fraction = smallest_target_fraction(fingerprint)
    return fraction is not None and fraction < SMALL_TARGET_FRACTION


def cpu_seconds_per_iteration(fingerprint: Fingerprint, seconds: float) -> float:
    """The CPU profile's iteration budget ``seconds``, or ``SMALL_TARGET_SECONDS`` for small targets."""
    return min(seconds, SMALL_TARGET_SECONDS) if small_targets(fingerprint) else seconds


def measured_step_seconds(plan: Plan) -> float:
    """Seconds of one training step of the plan's own network, loss, patch and batch on this machine: the
    median of five steps after a warm-up (the median of two varied by 30 % from run to run). The planner's
    FLOP estimate leaves out the loss and the network's memory-bound layers; this is what the epochs of
    ``--train-minutes`` are counted in.
    """
    labels = plan.labels
    classes = max(labels.label_values) + 1
    args = (plan.arch, plan.network, plan.patch_size, plan.batch_size, plan.loss, plan.num_channels, classes)
    seconds = time_training_steps(*args, steps=6, regions=[list(r) for r in labels.regions] or None)
    return float(np.median(seconds[1:]))


def epochs_for_minutes(plan: Plan, minutes: float, step: float | None = None) -> int:
    """The epochs a CPU plan's training fits in ``minutes`` at ``step`` seconds per training step (default:
    the plan's estimate), validation iterations and per-epoch overhead included (≥ 1).
    """
    step = step or plan.seconds_per_iteration_estimate or plan.seconds_per_iteration_budget or 2.0
    iterations = plan.iterations_per_epoch + VALIDATION_STEP_SHARE * plan.val_iterations
    per_epoch = step * (1 + LOADER_SHARE) * iterations + EPOCH_OVERHEAD_S
    return max(1, int(minutes * 60 // per_epoch))


def oversampling_for(fingerprint: Fingerprint) -> float:
    """The share of foreground-centred patches for the smallest target's mean T/W (``OVERSAMPLING_RANGE``)."""
    fraction = smallest_target_fraction(fingerprint)
    if fraction is None:
        return FOREGROUND_OVERSAMPLING
    (large, low), (small, high) = OVERSAMPLING_RANGE
    position = (math.log10(large) - math.log10(fraction)) / (math.log10(large) - math.log10(small))
    return round(low + (high - low) * min(max(position, 0.0), 1.0), 3)


def cpu_target_spacing(spacings: np.ndarray, shapes: np.ndarray, spacing: list[float]) -> list[float]:
    """``spacing`` with its finest axes coarsened until the median case has ≤ ``CPU_MAX_MEDIAN_VOXELS``.

    Args:
        spacings: ``(n_cases, 3)`` original spacings in mm; shapes: ``(n_cases, 3)`` sizes after cropping.
        spacing: the target spacing nnU-Net's rules chose.

    The finest axes grow together in 1 % steps (each stops at the coarsest axis' spacing, so thick slices
    are never resampled finer or coarser than they were planned); isotropic data coarsens on all axes.
    """
    millimetres = np.median(spacings * shapes, axis=0)  # the median case's extent per axis

    def voxels(candidate: np.ndarray) -> float:
        return float(np.prod(np.rint(millimetres / candidate)))

    current = np.asarray(spacing, dtype=float)
    coarsest = current.max()
    while voxels(current) > CPU_MAX_MEDIAN_VOXELS and current.min() < coarsest:
        finest = current <= current.min() * 1.0001
        current[finest] = np.minimum(current[finest] * 1.01, coarsest)
    if voxels(current) > CPU_MAX_MEDIAN_VOXELS:  # isotropic (or all axes now equal): coarsen all together
        current *= (voxels(current) / CPU_MAX_MEDIAN_VOXELS) ** (1 / 3)
    return [round(float(v), 5) for v in current] if not np.allclose(current, spacing) else list(spacing)
