"""Training patches from the preprocessed cases, with nnU-Net's foreground oversampling (reference §5.2).

A batch draws its cases uniformly with replacement. Its last ``batch_size − round(batch_size · (1 − p))``
samples are forced to contain foreground: a class with stored locations is picked uniformly, then one of
its stored voxels, and the patch is centred on that voxel. The others are random crops whose bounds let
the patch reach past the image by half of the extra margin the augmentation needs. Where a patch reaches
past the image, data is padded with 0 and the label map with −1 ("outside").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clinix.errors import ClinixError
from clinix.preprocess import load_case

DATA_PADDING = 0.0
SEG_PADDING = -1  # "outside the image", as the body mask's outside (reference §5.2)


def forced_foreground_positions(
    batch_size: int, oversample_foreground: float, rank: int = 0, world_size: int = 1
) -> list[bool]:
    """Per sample of one process's batch, whether it must contain foreground.

    The rule holds for the global batch of ``B = batch_size · world_size`` samples, as nnU-Net's DDP
    trainer has it: global sample j is forced iff ``j >= round(B · (1 − p))``, and rank r holds the global
    samples ``r · batch_size .. (r + 1) · batch_size − 1``. So two processes of one sample each force
    exactly as one process of two samples does (one of the two), instead of none.
    """
    first_forced = round(batch_size * world_size * (1 - oversample_foreground))
    return [rank * batch_size + j >= first_forced for j in range(batch_size)]


def crop_bounds(shape: Sequence[int], sample_patch: Sequence[int], final_patch: Sequence[int]) -> list[tuple[int, int]]:
    """Inclusive range ``(lb, ub)`` of a patch's lower corner along each axis (reference §5.2).

    ``need_to_pad = sample_patch − final_patch``, widened to ``sample_patch − shape`` where the image is
    too small; ``lb = −need // 2``, ``ub = shape + need // 2 + need % 2 − sample_patch``.
    """
    bounds = []
    for size, patch, final in zip(shape, sample_patch, final_patch, strict=True):
        need = patch - final
        if size + need < patch:
            need = patch - size
        bounds.append((-need // 2, size + need // 2 + need % 2 - patch))
    return bounds


def crop_with_padding(array: np.ndarray, lower: Sequence[int], patch: Sequence[int], padding: float) -> np.ndarray:
    """The ``(C, *patch)`` box of a ``(C, *shape)`` array starting at ``lower``; ``padding`` outside the array."""
    out = np.full((array.shape[0], *patch), padding, dtype=array.dtype)
    source, target = [slice(None)], [slice(None)]
    for start, size, extent in zip(lower, patch, array.shape[1:], strict=True):
        begin, end = max(start, 0), min(start + size, extent)
        if begin >= end:  # the box lies wholly outside along this axis
            return out
        source.append(slice(begin, end))
        target.append(slice(begin - start, end - start))
    out[tuple(target)] = array[tuple(source)]
    return out


class PatchSampler:
    """Draws batches of patches from memory-mapped preprocessed cases.

    Args:
        workdir: the working folder (or the preprocessed folder itself).
        case_ids: the cases to draw from (e.g. a fold's training cases).
        patch_size: the plan's patch ``[z, y, x]``: the size the network sees.
        batch_size: samples per batch.
        oversample_foreground: fraction of a batch forced to contain foreground (nnU-Net: 0.33).
        enlarged_patch: the larger patch the spatial augmentation crops from
            (``clinix.train.augment.enlarged_patch_size``); None samples the plan patch (validation).
        rank, world_size: this process's place among the training processes; the forced share is that
            of the global batch (``forced_foreground_positions``).
    """

    def __init__(
        self,
        workdir: str | Path,
        case_ids: Sequence[str],
        patch_size: Sequence[int],
        batch_size: int,
        oversample_foreground: float = 0.33,
        enlarged_patch: Sequence[int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not case_ids:
            raise ClinixError("no cases to sample training patches from")
        self.case_ids = list(case_ids)
        self.patch_size = [int(s) for s in patch_size]
        self.sample_patch = [int(s) for s in (enlarged_patch or patch_size)]
        self.batch_size = batch_size
        self.forced = forced_foreground_positions(batch_size, oversample_foreground, rank, world_size)
        self._data, self._seg, self._locations = [], [], []
        for case_id in self.case_ids:  # opened once: the memory maps are reused for every patch
            data, seg, properties = load_case(workdir, case_id, mmap=True)
            if seg is None:
                raise ClinixError(f"case {case_id!r} has no preprocessed label map; it cannot be trained on")
            self._data.append(data)
            self._seg.append(seg)
            self._locations.append(
                [np.asarray(voxels, dtype=np.int64) for voxels in properties.class_locations.values() if voxels]
            )
        channels = {data.shape[0] for data in self._data}
        if len(channels) > 1:
            raise ClinixError(f"preprocessed cases have different channel counts {sorted(channels)}")
        self.num_channels = channels.pop()

    def sample_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One batch: data ``(B, C, *P)`` float32 and seg ``(B, 1, *P)`` int16, ``P`` the sample patch.

        Deterministic given ``rng``'s state.
        """
        cases = rng.integers(0, len(self.case_ids), size=self.batch_size)
        data = np.empty((self.batch_size, self.num_channels, *self.sample_patch), dtype=np.float32)
        seg = np.empty((self.batch_size, 1, *self.sample_patch), dtype=np.int16)
        for j, case in enumerate(cases):
            lower = self._patch_lower_corner(int(case), self.forced[j], rng)
            data[j] = crop_with_padding(self._data[case], lower, self.sample_patch, DATA_PADDING)
            seg[j] = crop_with_padding(self._seg[case], lower, self.sample_patch, SEG_PADDING)
        return data, seg

    def _patch_lower_corner(self, case: int, forced: bool, rng: np.random.Generator) -> list[int]:
        bounds = crop_bounds(self._data[case].shape[1:], self.sample_patch, self.patch_size)
        classes = self._locations[case]
        if forced and classes:
            voxels = classes[rng.integers(0, len(classes))]
            voxel = voxels[rng.integers(0, len(voxels))]
            # Centred on the voxel; only the lower end is clamped, padding covers the rest (reference §5.2).
            return [max(lb, int(v) - p // 2) for (lb, _), v, p in zip(bounds, voxel, self.sample_patch, strict=True)]
        return [int(rng.integers(lb, ub + 1)) for lb, ub in bounds]
