"""Resampling to a target spacing, with nnU-Net's separate-axis rule (nnU-Net reference §4.3).

Interpolation maps voxel centres the way ``skimage.transform.resize`` does (``ndimage.zoom`` with
``grid_mode=True``: a voxel covers ``[i, i + 1)``, edges extended). When the source or the target spacing
is anisotropic (largest / smallest > threshold), each slice across the thick axis is resampled in-plane
with the requested order, then the thick axis alone with ``order_z`` (0: nearest slice), so thick slices
are never blurred into each other.

Label maps are resampled as one-hot maps with linear interpolation; each voxel takes the label whose
interpolated map is largest (an argmax, ties to the higher label as nnU-Net's overwrite order). Unlike
nnU-Net's "≥ 0.5, later labels overwrite", every voxel gets a label even where three or more labels meet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from clinix.plan.model import ResamplingSettings

Shape = tuple[int, int, int]


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> Shape:
    """``round(spacing / target · shape)`` per axis (at least 1 voxel); NumPy rounds halves to even."""
    ratio = np.asarray(spacing, dtype=float) / np.asarray(target_spacing, dtype=float)
    new_shape = np.maximum(np.round(ratio * np.asarray(shape, dtype=float)), 1)
    return tuple(int(n) for n in new_shape)  # type: ignore[return-value]


def separate_axis(source_spacing: Sequence[float], target_spacing: Sequence[float], threshold: float) -> int | None:
    """The thick axis to resample on its own, or None.

    The source spacing decides when it is anisotropic, else the target spacing; when the largest spacing
    is shared by two or three axes there is no single thick axis and nothing is separated.
    """
    for spacing in (np.asarray(source_spacing, dtype=float), np.asarray(target_spacing, dtype=float)):
        if spacing.max() / spacing.min() > threshold:
            thick = np.flatnonzero(spacing == spacing.max())
            return int(thick[0]) if thick.size == 1 else None
    return None


def resample_volume(
    volume: np.ndarray,
    new_shape: Sequence[int],
    source_spacing: Sequence[float],
    target_spacing: Sequence[float],
    order: int,
    settings: ResamplingSettings,
) -> np.ndarray:
    """Resample one ``(Z, Y, X)`` volume to ``new_shape``; returns float32 (a new array)."""
    new_shape = tuple(int(n) for n in new_shape)
    volume = volume.astype(np.float32, copy=False)
    if volume.shape == new_shape:
        return volume.copy()
    axis = separate_axis(source_spacing, target_spacing, settings.anisotropy_threshold)
    if axis is None:
        return _zoom(volume, new_shape, order)
    slices = np.moveaxis(volume, axis, 0)  # (thick, a, b)
    plane_shape = tuple(n for a, n in enumerate(new_shape) if a != axis)
    in_plane = np.empty((slices.shape[0], *plane_shape), dtype=np.float32)
    for index, plane in enumerate(slices):
        in_plane[index] = _zoom(plane, plane_shape, order)
    across = _zoom(in_plane, (new_shape[axis], *plane_shape), settings.order_z)
    return np.ascontiguousarray(np.moveaxis(across, 0, axis))


def _zoom(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    if array.shape == shape:
        return array.copy()
    factors = [new / old for new, old in zip(shape, array.shape, strict=True)]
    out = np.empty(shape, dtype=np.float32)
    ndimage.zoom(array, factors, output=out, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    return out


def resample_image(
    image: np.ndarray,
    new_shape: Sequence[int],
    source_spacing: Sequence[float],
    target_spacing: Sequence[float],
    settings: ResamplingSettings,
) -> np.ndarray:
    """``(C, Z, Y, X)`` -> ``(C, *new_shape)`` float32, each channel with ``settings.image_order``."""
    return np.stack(
        [resample_volume(c, new_shape, source_spacing, target_spacing, settings.image_order, settings) for c in image]
    )


def resample_labels(
    seg: np.ndarray,
    new_shape: Sequence[int],
    source_spacing: Sequence[float],
    target_spacing: Sequence[float],
    settings: ResamplingSettings,
    order: int,
) -> np.ndarray:
    """Resample a ``(Z, Y, X)`` label map through the one-hot maps of the labels present (module docstring).

    A label absent from the map would never win the argmax, so one-hot maps of the present labels suffice.
    Returns ``new_shape`` int16.
    """
    if seg.shape == tuple(new_shape):
        return seg.astype(np.int16)
    one_hot = ((int(v), (seg == v).astype(np.float32)) for v in np.unique(seg))
    return resampled_argmax(one_hot, new_shape, source_spacing, target_spacing, order, settings)


def resampled_argmax(
    scores: Iterable[tuple[int, np.ndarray]],
    new_shape: Sequence[int],
    source_spacing: Sequence[float],
    target_spacing: Sequence[float],
    order: int,
    settings: ResamplingSettings,
) -> np.ndarray:
    """Per voxel, the value whose resampled score map is largest (ties: the later value).

    ``scores`` yields ``(value, (Z, Y, X) map)`` one at a time, so only one full-size map is held besides
    the running maximum. Returns ``new_shape`` int16.
    """
    new_shape = tuple(int(n) for n in new_shape)
    best_score = np.full(new_shape, -np.inf, dtype=np.float32)
    best_value = np.zeros(new_shape, dtype=np.int16)
    for value, score in scores:
        resampled = resample_volume(score, new_shape, source_spacing, target_spacing, order, settings)
        better = resampled >= best_score
        best_value[better] = value
        np.maximum(best_score, resampled, out=best_score)
    return best_value
