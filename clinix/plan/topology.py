"""Target spacing, pooling and kernel topology, patch arithmetic (nnU-Net reference §3.2–3.5).

All shapes and spacings are in array order ``(z, y, x)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ANISOTROPY_THRESHOLD = 3.0
MIN_FEATURE_MAP_EDGE = 4
INITIAL_PATCH_VOXELS = 256**3


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> list[float]:
    """Median spacing, with nnU-Net's rule for anisotropic data.

    Args:
        spacings: ``(n_cases, 3)`` voxel spacings in mm.
        shapes: ``(n_cases, 3)`` sizes after crop-to-nonzero.

    When the coarsest axis is more than 3x coarser than the others *and* has fewer than a third of their
    voxels, its target becomes the 10th percentile of that axis' spacings (finer), so thick-slice cases
    are not all upsampled to the thickest median.
    """
    target = np.percentile(spacings, 50, axis=0)
    median_size = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    anisotropic = target[worst] > ANISOTROPY_THRESHOLD * max(target[others]) and median_size[
        worst
    ] * ANISOTROPY_THRESHOLD < min(median_size[others])
    if anisotropic:
        finer = float(np.percentile(spacings[:, worst], 10))
        if finer < max(target[others]):
            finer = max(max(target[others]), finer) + 1e-5
        target[worst] = finer
    return [float(v) for v in target]


def resampled_shape(shape: list[int] | np.ndarray, spacing: list[float], new_spacing: list[float]) -> list[int]:
    """``round(spacing / new_spacing · shape)`` per axis (half to even, like numpy)."""
    return [int(np.rint(s * sp / nsp)) for s, sp, nsp in zip(shape, spacing, new_spacing, strict=True)]


@dataclass(frozen=True)
class Topology:
    """U-Net topology for a patch: one stride and one kernel per stage (first stride all ones)."""

    strides: tuple[tuple[int, int, int], ...]
    kernel_sizes: tuple[tuple[int, int, int], ...]
    patch_size: tuple[int, int, int]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> tuple[int, ...]:
        """The patch must be a multiple of this per axis (the product of strides)."""
        return tuple(int(np.prod([s[a] for s in self.strides])) for a in range(3))

    @property
    def pools_per_axis(self) -> tuple[int, ...]:
        return tuple(sum(1 for s in self.strides if s[a] == 2) for a in range(3))


def pool_and_kernel_topology(spacing: list[float], patch: list[int], max_stages: int | None = None) -> Topology:
    """nnU-Net's ``get_pool_and_conv_props``: pool an axis while its map is ≥ 8 voxels and its spacing
    is within 2x of the finest; a kernel axis becomes 3 once its spacing is within 2x of the finest.

    The patch is padded up to a multiple of the pooling product.
    """
    current_spacing = list(spacing)
    current_size = list(patch)
    kernel = [1, 1, 1]
    strides: list[tuple[int, int, int]] = [(1, 1, 1)]
    kernels: list[tuple[int, int, int]] = []
    while max_stages is None or len(strides) < max_stages:
        valid = [a for a in range(3) if current_size[a] >= 2 * MIN_FEATURE_MAP_EDGE]
        if not valid:
            break
        finest_valid = min(current_spacing[a] for a in valid)
        valid = [a for a in valid if current_spacing[a] / finest_valid < 2]
        if len(valid) == 1 and current_size[valid[0]] < 3 * MIN_FEATURE_MAP_EDGE:
            break
        finest = min(current_spacing)
        kernel = [3 if kernel[a] == 3 or current_spacing[a] / finest < 2 else 1 for a in range(3)]
        stride = tuple(2 if a in valid else 1 for a in range(3))
        for a in valid:
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
        strides.append(stride)  # type: ignore[arg-type]
        kernels.append(tuple(kernel))  # type: ignore[arg-type]
    kernels.append((3, 3, 3))  # the bottleneck
    divisor = [int(np.prod([s[a] for s in strides])) for a in range(3)]
    padded = tuple(int(math.ceil(p / d) * d) for p, d in zip(patch, divisor, strict=True))
    return Topology(tuple(strides), tuple(kernels), padded)  # type: ignore[arg-type]


def initial_patch(spacing: list[float], median_shape: list[int]) -> list[int]:
    """A 256³-voxel volume with the aspect ratio of the inverse spacing, clipped to the median shape."""
    inverse = 1.0 / np.asarray(spacing, dtype=float)
    scaled = inverse * (INITIAL_PATCH_VOXELS / np.prod(inverse)) ** (1 / 3)
    return [int(min(round(v), m)) for v, m in zip(scaled, median_shape, strict=True)]


def shrink_patch(topology: Topology, spacing: list[float], median_shape: list[int]) -> list[int]:
    """One step of nnU-Net's shrink loop: reduce the axis most over its median size by one divisor.

    The divisor is recomputed after the first subtraction so that e.g. 256 can become 224, not 192.
    """
    patch = list(topology.patch_size)
    ratios = np.asarray(patch, dtype=float) / np.asarray(median_shape, dtype=float)
    axis = int(np.argsort(ratios, kind="stable")[-1])
    trial = list(patch)
    trial[axis] -= topology.divisor[axis]
    new_divisor = pool_and_kernel_topology(spacing, trial).divisor
    patch[axis] -= new_divisor[axis]
    return patch
