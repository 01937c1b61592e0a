"""Will a case fit in memory? Checked from its header, before any voxel is read (SPEC §7).

Predicting a case holds, at its peak, one of three sets of arrays (N voxels of the input grid, n of the
plan's grid, C channels, K network outputs, all float32 unless said):

- reading and preprocessing: the image ``C·N``, its normalised crop ``C·N`` at most, the resampled data ``C·n``;
- the sliding window: the data ``C·n``, the accumulator ``K·n`` and the weight map ``n`` (the network's
  own activations are a few hundred MB for every plan clinix makes and are in ``RESIDENT_BYTES``);
- restoring: the probabilities ``K·n``, and on the input grid the int16 labels, two float32 class maps
  (the running maximum and the current class) and the uint8 output; ``--save-probabilities`` adds ``K·N``.

The crop box is not known before reading, so the whole grid counts: the estimate is an upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from clinix.plan.model import Plan
from clinix.plan.topology import resampled_shape

RESIDENT_BYTES = 1 << 30  # torch, the network, its activations and the rest of the process
FLOAT = 4


def prediction_peak_bytes(
    shape: Sequence[int],
    spacing: Sequence[float],
    channels: int,
    plan: Plan,
    save_probabilities: bool = False,
) -> int:
    """An upper bound of the memory predicting one ``shape`` case (``(z, y, x)`` at ``spacing`` mm) takes."""
    big = math.prod(shape)
    small = math.prod(resampled_shape(list(shape), list(spacing), plan.target_spacing))
    outputs = plan.num_classes
    reading = FLOAT * (2 * channels * big + channels * small)
    window = FLOAT * (channels * small + (outputs + 1) * small)
    restoring = FLOAT * outputs * small + big * (2 + 2 * FLOAT + 1)
    if save_probabilities:
        restoring += FLOAT * outputs * big
    return RESIDENT_BYTES + max(reading, window, restoring)


def available_memory_bytes() -> int | None:
    """Memory this process may still use: the kernel's ``MemAvailable``, lowered to the cgroup's limit
    (a container's) when one is set; None where neither can be read (not Linux): no check then.
    """
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        available = next(int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def memory_problem(
    shape: Sequence[int], spacing: Sequence[float], channels: int, plan: Plan, save_probabilities: bool = False
) -> str | None:
    """Why predicting this case would run out of memory (one sentence), or None when it fits."""
    needed = prediction_peak_bytes(shape, spacing, channels, plan, save_probabilities)
    available = available_memory_bytes()
    if available is None or needed <= available:
        return None
    size = "×".join(str(s) for s in shape)
    advice = " (or predict without --save-probabilities)" if save_probabilities else ""
    return (
        f"predicting this {size}-voxel case needs about {needed / 2**30:.1f} GB of memory and "
        f"{available / 2**30:.1f} GB are available; free memory or use a larger machine{advice}"
    )
