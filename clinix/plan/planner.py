"""``plan_experiment``: from a dataset fingerprint to ``WORK/plans.json`` (SPEC §3, nnU-Net reference §3).

Target spacing, normalisation and nnU-Net's topology rules as the reference has them; the patch search
(search.py) judges "fits" for the network actually planned: the memory of its training step, simulated
(memory.py), against ``--memory-gb``, and on a CPU its FLOPs at this machine's measured speed (speed.py)
against the seconds-per-iteration budget.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinix.errors import ClinixError, DatasetError
from clinix.fingerprint import Fingerprint, extract_fingerprint
from clinix.io.atomic import write_json
from clinix.io.labels import LabelSet
from clinix.net.registry import block_map_for_arch
from clinix.net.scan.dispatch import active_scan_backend
from clinix.plan.memory import MODEL_VERSION
from clinix.plan.model import (
    FOREGROUND_OVERSAMPLING,
    PLANS_FILE,
    ChannelNormalization,
    OptimizerSettings,
    Plan,
    ResamplingSettings,
)
from clinix.plan.search import MIN_BATCH_SIZE, Budget, PatchSearch
from clinix.plan.speed import ASSUMED_CPU_FLOPS, cpu_training_flops, time_training_steps
from clinix.plan.topology import (
    Topology,
    initial_patch,
    pool_and_kernel_topology,
    resampled_shape,
    shrink_patch,
    target_spacing,
)
from clinix.train.losses import DEFAULT_LOSS, LOSS_NAMES

DEFAULT_ARCH = "mambaclinix"
MAX_DATASET_FRACTION_PER_BATCH = 0.05
NONZERO_MASK_THRESHOLD = 0.75  # z-score inside the body when cropping removed more than a quarter
NNUNET_REFERENCE_ELEMENTS = 560e6  # PlainConvUNet conv-output elements per sample at 8 GB, batch 2
CROPS = ("auto", "nonzero", "body")
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
LOADER_SHARE = 0.1  # on 2 cores the loader's threads (sampling, augmentation) slow each step by about 10 %


@dataclass(frozen=True)
class DeviceProfile:
    """What the planner optimises for. ``seconds_per_iteration`` is None on a GPU (memory decides)."""

    device: str
    base_features: int
    max_features: int
    seconds_per_iteration: float | None
    epochs: int
    iterations_per_epoch: int
    val_iterations: int
    learning_rate: float


# The released MambaClinix trainer: Adam 1e-4 over 1000 x 250 iterations.
GPU_PROFILE = DeviceProfile(
    "cuda", 32, 320, None, epochs=1000, iterations_per_epoch=250, val_iterations=50, learning_rate=1e-4
)
# A 2-core laptop: thin features, a patch sized so one iteration takes about 2 s, 300 iterations. So short a
# schedule needs Adam at 1e-3 (the first public MambaClinix commit's rate): on the phantom, 1e-4 left the
# tumour at pseudo-Dice 0 after 300 iterations, 1e-3 reached 0.82 (organ 0.93) by iteration 225.
CPU_PROFILE = DeviceProfile(
    "cpu", 8, 128, 2.0, epochs=12, iterations_per_epoch=25, val_iterations=5, learning_rate=1e-3
)
PROFILES = {"cuda": GPU_PROFILE, "cpu": CPU_PROFILE}


def plan_experiment(
    dataset_root: str | Path,
    workdir: Path,
    memory_gb: float = 8.0,
    device: str = "cuda",
    arch: str = DEFAULT_ARCH,
    loss: str = DEFAULT_LOSS,
    orders: list[int] | None = None,
    workers: int | None = None,
    seconds_per_iteration: float | None = None,
    recalibrate: bool = False,
    crop: str = "auto",
    train_minutes: float | None = None,
) -> tuple[Plan, Path]:
    """Plan ``3d_fullres`` for a dataset; runs the fingerprint first when it is missing.

    For the CPU the machine's training speed is measured once (``clinix.plan.speed``, cached;
    ``recalibrate`` measures again) and ``seconds_per_iteration`` replaces the profile's 2 s. ``crop``:
    ``nonzero`` (nnU-Net), ``body`` (CT only: the patient's box, air and table cut) or ``auto`` (body for a
    CT dataset planned for the CPU, else nonzero). ``train_minutes`` (CPU only): the epochs that fit that
    long on this machine (``epochs_for_minutes``) replace the profile's.
    """
    if train_minutes is not None and (not 0 < train_minutes < math.inf):
        raise ClinixError(f"--train-minutes must be a positive number of minutes, not {train_minutes:g}")
    if train_minutes is not None and device != "cpu":
        raise ClinixError("--train-minutes needs --device cpu (a GPU plan's speed is not measured)")
    if device not in PROFILES:
        raise ClinixError(f"unknown device {device!r}; plan for 'cuda' or 'cpu'")
    if loss not in LOSS_NAMES:
        raise ClinixError(f"unknown loss {loss!r}; choose from {', '.join(LOSS_NAMES)}")
    if not math.isfinite(memory_gb) or memory_gb <= 0:
        raise ClinixError(f"--memory-gb must be a positive number of GB, not {memory_gb:g}")
    if seconds_per_iteration is not None and (device != "cpu" or not 0 < seconds_per_iteration < math.inf):
        raise ClinixError("--seconds-per-iteration takes a positive number of seconds, and only with --device cpu")
    if crop not in CROPS:
        raise ClinixError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
    block_map_for_arch(arch, 2)  # an unknown --arch is refused before the fingerprint runs
    fingerprint, _ = extract_fingerprint(dataset_root, workdir, workers=workers)
    profile = PROFILES[device]
    if device == "cpu":
        seconds = seconds_per_iteration or cpu_seconds_per_iteration(fingerprint, profile)
        profile = dataclasses.replace(profile, seconds_per_iteration=seconds)
        flops = cpu_training_flops(arch, recalibrate)
    else:
        flops = None
    plan = make_plan(fingerprint, profile, memory_gb, arch, loss, orders, flops, active_scan_backend(device), crop)
    if train_minutes is not None:
        step = measured_step_seconds(plan)
        epochs = epochs_for_minutes(plan, train_minutes, step)
        note = (
            f"--train-minutes {train_minutes:g}: {epochs} epochs of {plan.iterations_per_epoch} iterations "
            f"({step:.2f} s per training step measured on this machine)"
        )
        plan = dataclasses.replace(plan, epochs=epochs, notes=[*plan.notes, note])
    path = write_json(workdir / PLANS_FILE, plan.to_json())
    return plan, path


def make_plan(
    fingerprint: Fingerprint,
    profile: DeviceProfile,
    memory_gb: float,
    arch: str,
    loss: str,
    orders: list[int] | None = None,
    flops_per_second: float | None = None,
    scan_backend: str = "chunked",
    crop: str = "auto",
) -> Plan:
    """The pure planning arithmetic, from a fingerprint (no file I/O, no measurement of the machine).

    ``flops_per_second``: this CPU's training speed (CPU profile; default ``ASSUMED_CPU_FLOPS``);
    ``scan_backend``: the selective scan that will train (its buffers are part of the memory); ``crop`` as
    ``plan_experiment``.
    """
    dataset = fingerprint.dataset
    if not any(stats["voxels"] for stats in fingerprint.labels.values() if stats["values"] != [0]):
        # nothing to learn, and a CT channel would have no foreground intensities to normalise with
        raise DatasetError(Path(dataset["root"]), "no label map of any case has a foreground voxel; check the labels")
    on_cpu = profile.seconds_per_iteration is not None
    crop = _choose_crop(fingerprint, crop, on_cpu)
    shapes = fingerprint.shapes_after(crop)
    _check_geometry(fingerprint, shapes)
    notes = []
    spacing = target_spacing(fingerprint.spacings, shapes)
    if on_cpu:
        coarser = cpu_target_spacing(fingerprint.spacings, shapes, spacing)
        if coarser != spacing:
            notes.append(
                f"CPU plan: spacing {_mm(spacing)} coarsened to {_mm(coarser)} so the median case has at most "
                f"{CPU_MAX_MEDIAN_VOXELS / 1e6:g} M voxels (inference about a minute on 2 cores)"
            )
            spacing = coarser
    new_shapes = np.array(
        [resampled_shape(shape, c.spacing, spacing) for shape, c in zip(shapes, fingerprint.cases, strict=True)],
        dtype=float,
    )
    median_shape = [int(v) for v in np.median(new_shapes, axis=0)]
    num_classes = LabelSet.from_json(dataset).num_outputs
    optimizer = OptimizerSettings(lr=profile.learning_rate)
    budget = Budget(
        profile.device,
        memory_gb,
        profile.seconds_per_iteration,
        (flops_per_second or ASSUMED_CPU_FLOPS) if on_cpu else None,
    )
    search = PatchSearch(
        arch, loss, optimizer, len(dataset["channel_names"]), num_classes,
        lambda n_stages: stage_features(n_stages, profile), orders, budget, scan_backend,
    )  # fmt: skip
    n_voxels_dataset = float(np.prod(median_shape)) * len(fingerprint.cases)

    def max_batch(patch: list[int]) -> int:  # one batch sees at most 5 % of the dataset's voxels (nnU-Net)
        return round(n_voxels_dataset * MAX_DATASET_FRACTION_PER_BATCH / math.prod(patch))

    found = search.run(spacing, median_shape, max_batch)
    topology = found.candidate.topology
    network = found.candidate.config.to_dict()
    if network["features"][0] < THIN_NETWORK_FEATURES:
        network["drop_path_rate"] = 0.0
    return Plan(
        dataset_root=dataset["root"],
        dataset=dataset,
        target_spacing=spacing,
        median_shape=median_shape,
        normalization=channel_normalization(fingerprint),
        resampling=ResamplingSettings(),
        patch_size=list(topology.patch_size),
        batch_size=found.batch_size,
        # nnU-Net: True only when a 3d_lowres stage exists, which clinix does not plan; CPU small targets: True
        batch_dice=on_cpu and small_targets(fingerprint),
        arch=arch,
        loss=loss,
        network=network,
        optimizer=optimizer,
        epochs=profile.epochs,
        foreground_oversampling=oversampling_for(fingerprint) if on_cpu else FOREGROUND_OVERSAMPLING,
        iterations_per_epoch=profile.iterations_per_epoch,
        val_iterations=profile.val_iterations,
        device=profile.device,
        memory_gb=memory_gb,
        memory_estimate_gb=round(found.memory_gb, 3),
        memory_model_version=MODEL_VERSION,
        seconds_per_iteration_budget=profile.seconds_per_iteration,
        seconds_per_iteration_estimate=None
        if found.seconds_per_iteration is None
        else round(found.seconds_per_iteration, 3),
        cpu_flops_per_second=budget.flops_per_second,
        crop=crop,
        notes=[*notes, nnunet_comparison(spacing, median_shape, num_classes, n_voxels_dataset, memory_gb)],
    )


def smallest_target_fraction(fingerprint: Fingerprint) -> float | None:
    """The mean T/W (share of the image) of the smallest foreground class present, or None."""
    fractions = [stats.get("fraction_mean", 0.0) for stats in fingerprint.labels.values() if stats["values"] != [0]]
    present = [f for f in fractions if f > 0]
    return min(present) if present else None


def small_targets(fingerprint: Fingerprint) -> bool:
    """True when the smallest target's mean T/W is below ``SMALL_TARGET_FRACTION``."""
    fraction = smallest_target_fraction(fingerprint)
    return fraction is not None and fraction < SMALL_TARGET_FRACTION


def cpu_seconds_per_iteration(fingerprint: Fingerprint, profile: DeviceProfile) -> float:
    """The CPU profile's iteration budget, or ``SMALL_TARGET_SECONDS`` for a dataset of small targets."""
    assert profile.seconds_per_iteration is not None
    if small_targets(fingerprint):
        return min(profile.seconds_per_iteration, SMALL_TARGET_SECONDS)
    return profile.seconds_per_iteration


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


def _mm(spacing: list[float]) -> str:
    return "×".join(f"{s:.3g}" for s in spacing) + " mm"


def _choose_crop(fingerprint: Fingerprint, crop: str, on_cpu: bool) -> str:
    """``auto``: ``body`` for a CT dataset planned for the CPU, else ``nonzero``; ``body`` needs a CT channel."""
    if crop == "auto":
        return "body" if on_cpu and fingerprint.has_body_boxes else "nonzero"
    if crop == "body" and not fingerprint.has_body_boxes:
        raise DatasetError(
            Path(fingerprint.dataset["root"]), "--crop body needs a channel named CT (the body is found in HU)"
        )
    return crop


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


def _check_geometry(fingerprint: Fingerprint, shapes: np.ndarray) -> None:
    """A degenerate fingerprint (no case, a spacing ≤ 0 or not finite, an axis of one voxel) is one line."""
    root = Path(fingerprint.dataset["root"])
    if not fingerprint.cases:
        raise DatasetError(root, "the fingerprint holds no case; re-run 'clinix fingerprint'")
    spacings = fingerprint.spacings
    if not np.all(np.isfinite(spacings)) or np.any(spacings <= 0):
        bad = next(c for c in fingerprint.cases if not all(0 < s < math.inf for s in c.spacing))
        raise DatasetError(root, f"case {bad.case_id} has spacing {bad.spacing} mm: every spacing must be positive")
    thin = [axis for axis in range(3) if np.median(shapes[:, axis]) < 2]
    if thin:
        axis = "zyx"[thin[0]]
        raise DatasetError(
            root, f"the cases are one voxel thick along {axis} (2D images?): clinix plans 3D networks only"
        )


def stage_features(n_stages: int, profile: DeviceProfile) -> list[int]:
    """``base · 2^s`` capped at ``max`` (32..320 on a GPU, 8..128 on a CPU)."""
    return [min(profile.base_features * 2**s, profile.max_features) for s in range(n_stages)]


def channel_normalization(fingerprint: Fingerprint) -> list[ChannelNormalization]:
    """CT channels: dataset-wide clip + z-score; ``noNorm``: none; others: z-score per image."""
    use_mask = fingerprint.median_relative_size_after_crop < NONZERO_MASK_THRESHOLD
    schemes = []
    for _, stats in sorted(fingerprint.intensity.items(), key=lambda item: int(item[0])):
        name = stats["name"]
        if name.casefold() == "ct":
            schemes.append(
                ChannelNormalization(
                    name, "ct", False, stats["mean"], stats["std"], stats["percentile_00_5"], stats["percentile_99_5"]
                )
            )
        elif name.casefold() == "nonorm":
            schemes.append(ChannelNormalization(name, "none"))
        else:
            schemes.append(ChannelNormalization(name, "zscore", use_mask))
    return schemes


def plain_unet_feature_map_elements(topology: Topology, features: list[int], num_classes: int) -> int:
    """nnU-Net's VRAM proxy for its PlainConvUNet: conv-output elements of one sample (reference §3.5)."""
    size = np.asarray(topology.patch_size, dtype=np.int64)
    per_stage = []
    for stride in topology.strides:
        size = size // np.asarray(stride)
        per_stage.append(int(np.prod(size)))
    encoder = sum(2 * c * v for c, v in zip(features, per_stage, strict=True))
    decoder = sum(3 * c * v for c, v in zip(features[:-1], per_stage[:-1], strict=True))  # up-conv + 2 convs
    return encoder + decoder + num_classes * per_stage[0]


def nnunet_plan(
    spacing: list[float], median_shape: list[int], num_classes: int, n_voxels_dataset: float, memory_gb: float
) -> tuple[Topology, int]:
    """What nnU-Net's default planner would choose (PlainConvUNet estimate), for comparison."""
    reference = NNUNET_REFERENCE_ELEMENTS * memory_gb / 8.0
    topology = pool_and_kernel_topology(spacing, initial_patch(spacing, median_shape))

    def estimate(t: Topology) -> int:
        return plain_unet_feature_map_elements(t, stage_features(t.n_stages, GPU_PROFILE), num_classes)

    while estimate(topology) > reference:
        topology = pool_and_kernel_topology(spacing, shrink_patch(topology, spacing, median_shape))
    batch = round(reference / estimate(topology) * 2)
    cap = round(n_voxels_dataset * MAX_DATASET_FRACTION_PER_BATCH / math.prod(topology.patch_size))
    return topology, max(MIN_BATCH_SIZE, min(batch, cap))


def nnunet_comparison(
    spacing: list[float], median_shape: list[int], num_classes: int, n_voxels_dataset: float, memory_gb: float
) -> str:
    topology, batch = nnunet_plan(spacing, median_shape, num_classes, n_voxels_dataset, memory_gb)
    return (
        f"nnU-Net's rules (PlainConvUNet estimate, {memory_gb:g} GB) would give patch "
        f"{list(topology.patch_size)}, batch {batch}, {topology.n_stages} stages, pools {list(topology.pools_per_axis)}"
    )
