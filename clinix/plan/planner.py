"""``plan_experiment``: from a dataset fingerprint to ``WORK/plans.json`` (SPEC §3, nnU-Net reference §3).

The search is nnU-Net's — start from a 256³-voxel patch shaped by the inverse spacing, shrink the axis
most over its median size until the network fits — but "fits" is judged for the network actually
planned (``clinix.plan.cost``): its measured activation memory against ``--memory-gb`` on a GPU, and its
measured FLOPs against a seconds-per-iteration budget on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinix.errors import ClinixError, DatasetError
from clinix.fingerprint import Fingerprint, extract_fingerprint
from clinix.io.atomic import write_json
from clinix.net.network import NetworkConfig
from clinix.net.registry import config_for_arch
from clinix.plan.cost import NetworkCost, measure_cost
from clinix.plan.model import PLANS_FILE, ChannelNormalization, OptimizerSettings, Plan, ResamplingSettings
from clinix.plan.topology import (
    MIN_FEATURE_MAP_EDGE,
    Topology,
    initial_patch,
    pool_and_kernel_topology,
    resampled_shape,
    shrink_patch,
    target_spacing,
)
from clinix.train.losses import DEFAULT_LOSS, LOSS_NAMES

DEFAULT_ARCH = "mambaclinix"
MIN_BATCH_SIZE = 2
MAX_DATASET_FRACTION_PER_BATCH = 0.05
NONZERO_MASK_THRESHOLD = 0.75  # z-score inside the body when cropping removed more than a quarter
NNUNET_REFERENCE_ELEMENTS = 560e6  # PlainConvUNet conv-output elements per sample at 8 GB, batch 2


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
) -> tuple[Plan, Path]:
    """Plan ``3d_fullres`` for a dataset; runs the fingerprint first when it is missing."""
    if device not in PROFILES:
        raise ClinixError(f"unknown device {device!r}; plan for 'cuda' or 'cpu'")
    if loss not in LOSS_NAMES:
        raise ClinixError(f"unknown loss {loss!r}; choose from {', '.join(LOSS_NAMES)}")
    if memory_gb <= 0:
        raise ClinixError(f"--memory-gb must be positive, not {memory_gb}")
    fingerprint, _ = extract_fingerprint(dataset_root, workdir, workers=workers)
    plan = make_plan(fingerprint, PROFILES[device], memory_gb, arch, loss, orders)
    path = write_json(workdir / PLANS_FILE, plan.to_json())
    return plan, path


def make_plan(
    fingerprint: Fingerprint,
    profile: DeviceProfile,
    memory_gb: float,
    arch: str,
    loss: str,
    orders: list[int] | None = None,
) -> Plan:
    """The pure planning arithmetic, from a fingerprint (no file I/O)."""
    dataset = fingerprint.dataset
    if not any(stats["voxels"] for stats in fingerprint.labels.values() if stats["value"] != 0):
        # nothing to learn, and a CT channel would have no foreground intensities to normalise with
        raise DatasetError(Path(dataset["root"]), "no label map of any case has a foreground voxel; check the labels")
    spacing = target_spacing(fingerprint.spacings, fingerprint.shapes_after_crop)
    new_shapes = np.array(
        [resampled_shape(c.shape_after_crop, c.spacing, spacing) for c in fingerprint.cases], dtype=float
    )
    median_shape = [int(v) for v in np.median(new_shapes, axis=0)]
    num_classes = len({v for v in dataset["labels"].values() if isinstance(v, int)})
    in_channels = len(dataset["channel_names"])

    def network_for(topology: Topology, hgcn_orders: list[int] | None = None) -> tuple[NetworkConfig, NetworkCost]:
        config = config_for_arch(
            arch,
            in_channels,
            num_classes,
            stage_features(topology.n_stages, profile),
            topology.kernel_sizes,
            topology.strides,
            orders=hgcn_orders,
        )
        return config, measure_cost(arch, config)

    def too_costly(topology: Topology, cost: NetworkCost) -> bool:
        if cost.training_memory_gb(topology.patch_size, MIN_BATCH_SIZE, profile.device) > memory_gb:
            return True
        budget = profile.seconds_per_iteration
        return budget is not None and cost.cpu_seconds_per_iteration(topology.patch_size, MIN_BATCH_SIZE) > budget

    topology = pool_and_kernel_topology(spacing, initial_patch(spacing, median_shape))
    if topology.n_stages < 2:  # images smaller than one pooling step: pad the patch so the U-Net has 2 stages
        topology = pool_and_kernel_topology(spacing, [max(p, 2 * MIN_FEATURE_MAP_EDGE) for p in topology.patch_size])
    config, cost = network_for(topology)
    while too_costly(topology, cost):
        smaller = shrink_patch(topology, spacing, median_shape)
        if min(smaller) < MIN_FEATURE_MAP_EDGE or pool_and_kernel_topology(spacing, smaller).n_stages < 2:
            raise ClinixError(f"no patch of {arch} fits {memory_gb:g} GB on {profile.device}; raise --memory-gb")
        topology = pool_and_kernel_topology(spacing, smaller)
        config, cost = network_for(topology)
    if orders is not None:  # the search uses the default orders; the user's apply to the final topology
        config, cost = network_for(topology, orders)

    n_voxels_dataset = float(np.prod(median_shape)) * len(fingerprint.cases)
    batch_size = _batch_size(cost, topology, profile, memory_gb, n_voxels_dataset)
    normalization = channel_normalization(fingerprint)
    return Plan(
        dataset_root=dataset["root"],
        dataset=dataset,
        target_spacing=spacing,
        median_shape=median_shape,
        normalization=normalization,
        resampling=ResamplingSettings(),
        patch_size=list(topology.patch_size),
        batch_size=batch_size,
        batch_dice=False,  # nnU-Net: True only when a 3d_lowres stage exists, which clinix does not plan
        arch=arch,
        loss=loss,
        network=config.to_dict(),
        optimizer=OptimizerSettings(lr=profile.learning_rate),
        epochs=profile.epochs,
        iterations_per_epoch=profile.iterations_per_epoch,
        val_iterations=profile.val_iterations,
        device=profile.device,
        memory_gb=memory_gb,
        memory_estimate_gb=round(cost.training_memory_gb(topology.patch_size, batch_size, profile.device), 3),
        seconds_per_iteration_budget=profile.seconds_per_iteration,
        notes=[nnunet_comparison(spacing, median_shape, num_classes, n_voxels_dataset, memory_gb)],
    )


def stage_features(n_stages: int, profile: DeviceProfile) -> list[int]:
    """``base · 2^s`` capped at ``max`` (32..320 on a GPU, 8..128 on a CPU)."""
    return [min(profile.base_features * 2**s, profile.max_features) for s in range(n_stages)]


def _batch_size(
    cost: NetworkCost, topology: Topology, profile: DeviceProfile, memory_gb: float, n_voxels_dataset: float
) -> int:
    """As many samples as fit (CPU: the minimum), capped so one batch sees ≤ 5 % of the dataset's voxels."""
    if profile.seconds_per_iteration is not None:
        return MIN_BATCH_SIZE
    batch = MIN_BATCH_SIZE
    while cost.training_memory_gb(topology.patch_size, batch + 1, profile.device) <= memory_gb:
        batch += 1
    cap = round(n_voxels_dataset * MAX_DATASET_FRACTION_PER_BATCH / math.prod(topology.patch_size))
    return max(MIN_BATCH_SIZE, min(batch, cap))


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
