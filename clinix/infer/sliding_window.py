"""Sliding-window inference over a preprocessed volume (nnU-Net reference §6.3).

Tiles of the patch size overlap by ``1 − step``; each tile's logits are weighted by a Gaussian importance
map, so a voxel near a tile's centre counts more than one at its border, where the network saw little
context. Memory: one ``(K, z, y, x)`` float32 accumulator for the weighted logits and one ``(z, y, x)``
weight map; tiles run in batches and each batch is added in place before the next is computed.

The accumulator is float32 on every device, CUDA included (nnU-Net uses float16 there): a tile corner
weighs e^−24 ≈ 4·10^−11 of its centre for σ = patch/8, and that weight times a logit underflows to 0 in
float16, so a voxel seen only by tile corners (a corner of the volume) would lose its prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

Slices = tuple[slice, slice, slice]
TileForward = Callable[[torch.Tensor], torch.Tensor]  # (B, C, *patch) -> (B, K, *patch) logits
SIGMA_SCALE = 1 / 8  # σ = patch / 8 per axis, as nnU-Net


def tile_starts(size: int, tile: int, step: float) -> list[int]:
    """First voxel of every tile along one axis (``size >= tile``).

    ``n = ceil((size − tile) / (tile · step)) + 1`` tiles at ``round(i · (size − tile) / (n − 1))``, so the
    first starts at 0, the last ends at ``size`` and neighbours are evenly spaced; e.g. 110/64/0.5 → 0, 23, 46.
    """
    if size < tile:
        raise ValueError(f"axis of {size} voxels is smaller than the tile of {tile}; pad first")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    count = math.ceil((size - tile) / (tile * step)) + 1
    if count == 1:
        return [0]
    spacing = (size - tile) / (count - 1)
    return [round(i * spacing) for i in range(count)]


def tile_slices(shape: Sequence[int], patch: Sequence[int], step: float) -> list[Slices]:
    """Every tile of a ``shape`` volume (each axis ``>= patch``), in raster order of their starts."""
    starts = [tile_starts(size, tile, step) for size, tile in zip(shape, patch, strict=True)]
    return [
        (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
        for z in starts[0]
        for y in starts[1]
        for x in starts[2]
    ]


@lru_cache(maxsize=8)
def gaussian_importance_map(patch: tuple[int, int, int], sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """``exp(−Σ_a (i_a − c_a)² / 2σ_a²)`` with ``σ_a = patch_a · sigma_scale``, max 1, float32 ``patch``.

    Centred at ``c_a = (patch_a − 1) / 2`` so the map is mirror-symmetric (a flipped tile keeps its weights;
    nnU-Net centres on ``patch // 2``). Zeros (none in float32 for σ = patch/8) would become the smallest
    nonzero value, so every voxel of a tile has weight > 0. Read-only: it is cached.
    """
    axes = []
    for size in patch:
        sigma = size * sigma_scale
        offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
        axes.append(np.exp(-(offsets**2) / (2 * sigma**2)))
    weights = np.einsum("z,y,x->zyx", *axes)
    weights = (weights / weights.max()).astype(np.float32)
    weights[weights == 0] = weights[weights > 0].min()
    weights.flags.writeable = False
    return weights


def pad_to_patch(image: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, Slices]:
    """Pad ``(C, z, y, x)`` with zeros to at least ``patch`` per axis, evenly (the odd voxel after).

    Returns the padded tensor (``image`` itself when no axis is short) and the slices of the original
    voxels inside it.
    """
    before, after = [], []
    for size, tile in zip(image.shape[1:], patch, strict=True):
        missing = max(tile - size, 0)
        before.append(missing // 2)
        after.append(missing - missing // 2)
    region: Slices = tuple(slice(b, b + n) for b, n in zip(before, image.shape[1:], strict=True))  # type: ignore[assignment]
    if not any(before) and not any(after):
        return image, region
    # F.pad lists the last axis first: (x_before, x_after, y_before, y_after, z_before, z_after)
    pads = [p for axis in (2, 1, 0) for p in (before[axis], after[axis])]
    return F.pad(image, pads, value=0.0), region


def importance_weights(shape: Sequence[int], tiles: Sequence[Slices], gaussian: torch.Tensor) -> torch.Tensor:
    """Σ over tiles of the Gaussian placed at each tile: ``(z, y, x)`` on ``gaussian``'s device."""
    weights = torch.zeros(tuple(shape), dtype=torch.float32, device=gaussian.device)
    for tile in tiles:
        weights[tile] += gaussian
    return weights


def sliding_window_logits(
    forward: TileForward,
    image: torch.Tensor,
    patch: Sequence[int],
    num_classes: int,
    step: float = 0.5,
    batch_tiles: int = 2,
    accumulator_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Gaussian-weighted average of the tile logits at every voxel.

    Args:
        forward: maps a batch of tiles ``(B, C, *patch)`` to logits ``(B, K, *patch)`` (TTA included).
        image: ``(C, z, y, x)`` on the device the network runs on; any size (short axes are padded).
        accumulator_device: where the ``(K, z, y, x)`` sum lives; default ``image``'s device.

    Returns:
        ``(K, z, y, x)`` float32 logits on ``accumulator_device`` (a view into the padded accumulator
        when the image was padded).
    """
    padded, region = pad_to_patch(image, patch)
    target = torch.device(accumulator_device) if accumulator_device is not None else image.device
    tiles = tile_slices(padded.shape[1:], patch, step)
    gaussian = torch.tensor(gaussian_importance_map(tuple(int(p) for p in patch)), device=target)
    accumulator = torch.zeros((num_classes, *padded.shape[1:]), dtype=torch.float32, device=target)
    for first in range(0, len(tiles), batch_tiles):
        _accumulate_batch(forward, padded, tiles[first : first + batch_tiles], gaussian, accumulator)
    accumulator /= importance_weights(padded.shape[1:], tiles, gaussian)
    return accumulator[(slice(None), *region)]


def _accumulate_batch(
    forward: TileForward,
    image: torch.Tensor,
    tiles: Sequence[Slices],
    gaussian: torch.Tensor,
    accumulator: torch.Tensor,
) -> None:
    """Run one batch of tiles and add ``logits · Gaussian`` at their places in ``accumulator``.

    A function of its own so the batch's logits are freed on return, before the next forward allocates.
    """
    batch = torch.stack([image[(slice(None), *tile)] for tile in tiles])
    logits = forward(batch).to(device=accumulator.device, dtype=torch.float32)
    for tile, tile_logits in zip(tiles, logits, strict=True):
        accumulator[(slice(None), *tile)].addcmul_(tile_logits, gaussian)  # += logits · Gaussian, in one pass
