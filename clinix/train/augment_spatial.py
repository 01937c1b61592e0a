"""Spatial augmentation of a batch: rotation and scaling in one resampling, centre crop, mirroring.

nnU-Net's SpatialTransform and MirrorTransform (reference §5.3, §5.4 items 1 and 10), batched in torch.
Tensors are ``(B, C, Z, Y, X)`` on any device; every random number is drawn on the CPU from the caller's
``torch.Generator`` in a fixed order, so a seed gives the same augmentation on every run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

OUTSIDE_LABEL = -1  # label of voxels outside the image (the sampler's padding, the resampling's border)
DUMMY_2D_ASPECT = 3  # a patch with max(patch) / patch[0] above this is augmented slice-wise (reference §5.3)
ROTATION_DEGREES_3D = 30.0
ROTATION_DEGREES_DUMMY_2D = 180.0
ENLARGEMENT_SCALE_MIN = 0.85  # nnU-Net sizes the enlarged patch for scales down to 0.85
LABELS_PER_PASS = 8  # label masks resampled together: fewer passes, bounded memory


def chance(generator: torch.Generator, probability: float, *shape: int) -> torch.Tensor:
    """Boolean CPU tensor of ``shape``, each entry True with ``probability``."""
    return torch.rand(shape, generator=generator) < probability


def uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    """CPU float64 tensor of ``shape`` drawn from U(low, high)."""
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def is_dummy_2d(patch_size: Sequence[int]) -> bool:
    """Whether a 3D patch is so flat along z that it is rotated and scaled within its slices only."""
    return max(patch_size) / patch_size[0] > DUMMY_2D_ASPECT


def default_rotation(patch_size: Sequence[int]) -> tuple[float, tuple[int, ...]]:
    """nnU-Net's rotation for a patch: (maximum angle in degrees, axes rotated about)."""
    if is_dummy_2d(patch_size):
        return ROTATION_DEGREES_DUMMY_2D, (0,)
    return ROTATION_DEGREES_3D, (0, 1, 2)


def enlarged_patch_size(
    patch_size: Sequence[int], rotation_degrees: float | None = None, scale_min: float = ENLARGEMENT_SCALE_MIN
) -> list[int]:
    """The patch to sample so that rotating and scaling it still covers the plan patch (reference §5.3).

    nnU-Net's rule: the patch-size vector is rotated by the maximum angle (capped at 90°) about each
    rotation axis in turn; per axis the largest absolute component (or the patch itself) is kept, divided
    by ``scale_min`` and truncated. Dummy-2D patches rotate about axis 0 only and keep ``patch[0]``.
    ``rotation_degrees`` None takes ``default_rotation``. 128³ → 205³; 40×56×40 → 73×80×64.
    """
    default_degrees, axes = default_rotation(patch_size)
    angle = math.radians(min(default_degrees if rotation_degrees is None else rotation_degrees, 90.0))
    cos, sin = math.cos(angle), math.sin(angle)
    extent = [float(size) for size in patch_size]
    for axis in axes:
        first, second = (axis + 1) % 3, (axis + 2) % 3  # the rotated plane, in cyclic order
        extent[first] = max(extent[first], abs(patch_size[first] * cos + patch_size[second] * sin))
        extent[second] = max(extent[second], abs(patch_size[second] * cos - patch_size[first] * sin))
    enlarged = [int(size / scale_min) for size in extent]
    if is_dummy_2d(patch_size):
        enlarged[0] = int(patch_size[0])
    return [max(int(p), e) for p, e in zip(patch_size, enlarged, strict=True)]


def rotation_matrix(axis: int, angle: float) -> torch.Tensor:
    """3×3 float64 rotation about array axis ``axis`` by ``angle`` radians (turning axis+1 towards axis+2)."""
    first, second = (axis + 1) % 3, (axis + 2) % 3
    matrix = torch.eye(3, dtype=torch.float64)
    cos, sin = math.cos(angle), math.sin(angle)
    matrix[first, first], matrix[first, second] = cos, -sin
    matrix[second, first], matrix[second, second] = sin, cos
    return matrix


def centre_crop_offsets(source: Sequence[int], target: Sequence[int]) -> list[int]:
    """Lower corner of the centred ``target`` box inside ``source``."""
    return [(s - t) // 2 for s, t in zip(source, target, strict=True)]


def centre_crop(array: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """The centred ``patch_size`` box of ``(B, C, *S)`` as a new tensor ``(B, C, *patch_size)``."""
    offsets = centre_crop_offsets(array.shape[2:], patch_size)
    box = tuple(slice(o, o + p) for o, p in zip(offsets, patch_size, strict=True))
    return array[(slice(None), slice(None), *box)].clone()


def _affine_theta(matrices: torch.Tensor, source: Sequence[int], target: Sequence[int]) -> torch.Tensor:
    """``F.affine_grid`` parameters ``(N, 3, 4)`` for voxel-space maps ``(N, 3, 3)`` from target to source.

    A target voxel at ``q`` (relative to the centred crop's centre) samples the source at ``A q`` relative
    to the same centre, so the identity map reproduces ``centre_crop`` exactly. ``align_corners=False``
    puts normalised coordinate ``u`` at ``u · size / 2`` voxels from an axis' centre.
    """
    source_half = torch.tensor([s / 2 for s in source], dtype=torch.float64)
    target_half = torch.tensor([t / 2 for t in target], dtype=torch.float64)
    offsets = centre_crop_offsets(source, target)
    # Half a voxel where source − target is odd: the crop's centre lies below the source's.
    shift = torch.tensor(
        [o - (s - t) / 2 for o, s, t in zip(offsets, source, target, strict=True)], dtype=torch.float64
    )
    linear = matrices * target_half[None, None, :] / source_half[None, :, None]
    translation = (shift / source_half).expand(matrices.shape[0], 3)
    # affine_grid orders coordinates (x, y, z), the reverse of the array axes (z, y, x).
    theta = torch.cat([linear.flip(1, 2), translation.flip(1)[:, :, None]], dim=2)
    return theta.float()


def _present_labels(seg: torch.Tensor) -> list[int]:
    """The label values (other than −1) present in ``seg``; a histogram is faster than ``torch.unique``."""
    lowest = int(seg.min())
    counts = torch.bincount((seg.flatten() - lowest).int())
    return [value for value in (counts.nonzero().flatten() + lowest).tolist() if value != OUTSIDE_LABEL]


def _resample_labels(seg: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample ``(N, 1, *S)`` labels on ``grid``: each label's mask linearly, then the heaviest label wins.

    Whatever weight no label claims (the border, or stored −1 voxels) belongs to ``OUTSIDE_LABEL``, so
    the result holds only labels of the input and −1; never an interpolated value. Labels are resampled
    ``LABELS_PER_PASS`` at a time, as channels of one ``grid_sample``.
    """
    shape = (seg.shape[0], 1, *grid.shape[1:-1])
    result = torch.full(shape, OUTSIDE_LABEL, dtype=seg.dtype, device=seg.device)
    heaviest = torch.zeros(shape, dtype=torch.float32, device=seg.device)
    claimed = torch.zeros_like(heaviest)
    values = _present_labels(seg)
    for start in range(0, len(values), LABELS_PER_PASS):
        group = torch.tensor(values[start : start + LABELS_PER_PASS], dtype=seg.dtype, device=seg.device)
        masks = (seg == group.view(1, -1, *[1] * (seg.ndim - 2))).float()  # (N, k, *S)
        weights = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        claimed += weights.sum(dim=1, keepdim=True)
        group_weight, group_index = weights.max(dim=1, keepdim=True)
        result = torch.where(group_weight > heaviest, group[group_index], result)
        heaviest = torch.maximum(heaviest, group_weight)
    return result.masked_fill(1 - claimed > heaviest, OUTSIDE_LABEL)


def spatial_transform(
    data: torch.Tensor,
    seg: torch.Tensor,
    patch_size: Sequence[int],
    generator: torch.Generator,
    p_rotation: float,
    rotation_range: tuple[float, float],
    rotation_axes: Sequence[int],
    p_scaling: float,
    scale_range: tuple[float, float],
    scale_axes: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate and scale each sample with its own chance, then centre-crop to ``patch_size``.

    Args:
        data: ``(B, C, *S)`` float images, ``S`` ≥ ``patch_size`` (the enlarged patch).
        seg: ``(B, 1, *S)`` integer labels, −1 outside.
        rotation_range: angle range in degrees, one angle drawn per axis of ``rotation_axes``.
        scale_range: one factor per sample for all ``scale_axes``; above 1 zooms out (sees more).

    Returns:
        data ``(B, C, *patch_size)`` (trilinear, zero outside) and seg ``(B, 1, *patch_size)``. Samples
        drawn neither rotation nor scaling are cut out as integer crops, without resampling.
    """
    batch = data.shape[0]
    rotate = chance(generator, p_rotation, batch)
    angles = torch.deg2rad(uniform(generator, *rotation_range, batch, 3))
    scale = chance(generator, p_scaling, batch)
    factors = uniform(generator, *scale_range, batch)
    data_out, seg_out = centre_crop(data, patch_size), centre_crop(seg, patch_size)
    resampled = torch.nonzero(rotate | scale).flatten().tolist()
    if not resampled:
        return data_out, seg_out
    matrices = []
    for b in resampled:
        matrix = torch.eye(3, dtype=torch.float64)
        if scale[b]:
            matrix[scale_axes, scale_axes] = factors[b]
        if rotate[b]:
            for axis in rotation_axes:  # R2 · R1 · R0 · S, as nnU-Net's Rz · Ry · Rx · S
                matrix = rotation_matrix(axis, float(angles[b, axis])) @ matrix
        matrices.append(matrix)
    theta = _affine_theta(torch.stack(matrices), data.shape[2:], patch_size).to(data.device)
    grid = F.affine_grid(theta, [len(resampled), 1, *patch_size], align_corners=False)
    index = torch.tensor(resampled, device=data.device)
    data_out[index] = F.grid_sample(data[index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    seg_out[index] = _resample_labels(seg[index], grid)
    return data_out, seg_out


def mirror(
    data: torch.Tensor, seg: torch.Tensor, generator: torch.Generator, probability: float, axes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip image and labels of each sample along each of ``axes`` (0 = z) independently with ``probability``."""
    flips = chance(generator, probability, data.shape[0], 3)
    data_out, seg_out = data, seg
    for b in range(data.shape[0]):
        dims = [axis + 1 for axis in axes if flips[b, axis]]  # +1: the channel axis of one sample
        if dims:
            if data_out is data:
                data_out, seg_out = data.clone(), seg.clone()
            data_out[b] = data[b].flip(dims)
            seg_out[b] = seg[b].flip(dims)
    return data_out, seg_out
