"""Mirror test-time augmentation (nnU-Net reference §6.3.5).

Every subset of the allowed spatial axes is flipped on the way in and back on the way out; the logits of
all ``2^n`` passes (the identity included: 8 for three axes) are averaged, as nnU-Net does.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch

from clinix.infer.sliding_window import TileForward


def mirror_subsets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All subsets of the spatial ``axes`` (0 = z, 1 = y, 2 = x), the empty one (identity) first."""
    axes = sorted(set(axes))
    return [subset for size in range(len(axes) + 1) for subset in combinations(axes, size)]


def mirrored_forward(forward: TileForward, axes: Sequence[int] | None) -> TileForward:
    """``forward`` averaged over the mirrorings of ``axes``; ``forward`` itself when ``axes`` is empty/None.

    The returned function maps ``(B, C, z, y, x)`` -> ``(B, K, z, y, x)`` like ``forward``.
    """
    if not axes:
        return forward
    subsets = mirror_subsets(axes)

    def averaged(batch: torch.Tensor) -> torch.Tensor:
        total = forward(batch).float()
        for subset in subsets[1:]:
            dims = [2 + axis for axis in subset]  # spatial axis a is tensor dim 2 + a of (B, C, z, y, x)
            total += torch.flip(forward(torch.flip(batch, dims)), dims)
        return total / len(subsets)

    return averaged
