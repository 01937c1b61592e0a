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
from clinix.plan.cpu_recipe import (
    CPU_MAX_MEDIAN_VOXELS,
    THIN_NETWORK_FEATURES,
    cpu_seconds_per_iteration,
    cpu_target_spacing,
    epochs_for_minutes,
    measured_step_seconds,
    oversampling_for,
    small_targets,
)
from clinix.plan.memory import MODEL_VERSION
from clinix.plan.model import (
    FOREGROUND_OVERSAMPLING,
    ChannelNormalization,
    OptimizerSettings,
    Plan,
    ResamplingSettings,
)
from clinix.plan.search import MIN_BATCH_SIZE, Budget, PatchSearch
from clinix.plan.speed import ASSUMED_CPU_FLOPS, cpu_training_flops
from clinix.plan.topology import (
    Topology,
    initial_patch,
    pool_and_kernel_topology,
    resampled_shape,
    shrink_patch,
    target_spacing,
)
from clinix.train.losses import DEFAULT_LOSS, LOSS_NAMES
from clinix.workdir import WorkDir

DEFAULT_ARCH = "mambaclinix"
MAX_DATASET_FRACTION_PER_BATCH = 0.05
NONZERO_MASK_THRESHOLD = 0.75  # z-score inside the body when cropping removed more than a quarter
NNUNET_REFERENCE_ELEMENTS = 560e6  # PlainConvUNet conv-output elements per sample at 8 GB, batch 2
CROPS = ("auto", "nonzero", "body")


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
    checkpointing: bool = False,
) -> tuple[Plan, Path]:
    """Plan ``3d_fullres`` for a dataset; runs the fingerprint first when it is missing.

    For the CPU the machine's training speed is measured once (``clinix.plan.speed``, cached;
    ``recalibrate`` measures again) and ``seconds_per_iteration`` replaces the profile's 2 s. ``crop``:
    ``nonzero`` (nnU-Net), ``body`` (CT only: the patient's box, air and table cut) or ``auto`` (body for a
    CT dataset planned for the CPU, else nonzero). ``train_minutes`` (CPU only): the epochs that fit that
    long on this machine (``epochs_for_minutes``) replace the profile's. ``checkpointing``: the network
    recomputes its activations in backward (``NetworkConfig.checkpointing``), and the patch search counts
    the memory that saves and the recompute's time.
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
        assert profile.seconds_per_iteration is not None
        seconds = seconds_per_iteration or cpu_seconds_per_iteration(fingerprint, profile.seconds_per_iteration)
        profile = dataclasses.replace(profile, seconds_per_iteration=seconds)
        flops = cpu_training_flops(arch, recalibrate)
    else:
        flops = None
    plan = make_plan(
        fingerprint, profile, memory_gb, arch, loss, orders, flops, active_scan_backend(device), crop, checkpointing
    )
    if train_minutes is not None:
        step = measured_step_seconds(plan)
        epochs = epochs_for_minutes(plan, train_minutes, step)
        note = (
            f"--train-minutes {train_minutes:g}: {epochs} epochs of {plan.iterations_per_epoch} iterations "
            f"({step:.2f} s per training step measured on this machine)"
        )
        plan = dataclasses.replace(plan, epochs=epochs, notes=[*plan.notes, note])
    path = write_json(WorkDir(workdir).plans, plan.to_json())
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
    checkpointing: bool = False,
) -> Plan:
    """The pure planning arithmetic, from a fingerprint (no file I/O, no measurement of the machine).

    ``flops_per_second``: this CPU's training speed (CPU profile; default ``ASSUMED_CPU_FLOPS``);
    ``scan_backend``: the selective scan that will train (its buffers are part of the memory); ``crop`` and
    ``checkpointing`` as ``plan_experiment``.
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
        lambda n_stages: stage_features(n_stages, profile), orders, budget, scan_backend, checkpointing,
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
