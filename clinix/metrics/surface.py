"""Surface-distance metrics in millimetres: HD95 and the normalised surface Dice (NSD).

Surface voxels of a mask are the mask XOR its erosion by the 6-neighbour cross (a voxel on the array
border counts as surface). Each surface voxel's distance to the other mask's surface comes from
``scipy.ndimage.distance_transform_edt`` with the voxel spacing as sampling, so anisotropic voxels are
measured in mm.

- HD95 = max(95th percentile of pred->ref distances, 95th percentile of ref->pred distances), the two
  directed percentiles taken separately (numpy's linear interpolation), the convention of MONAI's
  ``compute_hausdorff_distance(percentile=95)``.
- NSD at tolerance t = (#pred surface voxels within t of the ref surface + #ref surface voxels within t of
  the pred surface) / (#pred surface voxels + #ref surface voxels): Nikolov et al.'s surface Dice, counted in
  surface voxels rather than surface area elements.
- Empty masks: both empty -> HD95 and NSD NaN. Exactly one empty (a missed structure, or a spurious one) ->
  NSD 0 (no surface voxel lies within t of a missing surface) and HD95 by ``hd95_missing``: ``"max"`` (the
  default) gives the image's diagonal in mm, sqrt(Σ (size_i · spacing_i)²), the worst distance the image
  allows (BraTS scores a missed region so: 373.13 mm for 240×240×155 at 1 mm), so a missed lesion raises the
  mean HD95 instead of vanishing from it; ``"nan"`` gives NaN, MONAI's convention, which leaves such cases
  out of the mean (the summary counts them either way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean mask (same shape) of the voxels of ``mask`` that have a face neighbour outside it."""
    return mask & ~ndimage.binary_erosion(mask)


def directed_surface_distances(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of one mask to the nearest surface voxel of the other.

    Args:
        pred_mask, ref_mask: non-empty boolean masks of one shape, e.g. ``(Z, Y, X)``.
        spacing: voxel size per axis in mm, in the masks' axis order.

    Returns:
        ``(pred_to_ref, ref_to_pred)``: 1D arrays, one value per surface voxel of pred and of ref.
    """
    # Cropping to the union's bounding box (plus one voxel, so erosion sees background where the image does)
    # changes no distance: every surface voxel, source or target, lies inside the box.
    box = _bounding_box(pred_mask | ref_mask, margin=1)
    pred_surface = surface_voxels(pred_mask[box])
    ref_surface = surface_voxels(ref_mask[box])
    to_ref_surface = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    to_pred_surface = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return to_ref_surface[pred_surface], to_pred_surface[ref_surface]


def hd95(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> float:
    """The larger of the two directed 95th-percentile distances (MONAI's convention)."""
    return float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))


def normalized_surface_dice(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray, tolerance_mm: float) -> float:
    """Fraction of both surfaces lying within ``tolerance_mm`` of the other surface."""
    within = np.count_nonzero(pred_to_ref <= tolerance_mm) + np.count_nonzero(ref_to_pred <= tolerance_mm)
    return float(within / (pred_to_ref.size + ref_to_pred.size))


HD95_MISSING = ("max", "nan")


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The diagonal of an image of ``shape`` voxels of ``spacing`` mm: sqrt(Σ (size_i · spacing_i)²)."""
    return float(np.sqrt(sum((size * step) ** 2 for size, step in zip(shape, spacing, strict=True))))


def surface_metrics(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing: Sequence[float],
    nsd_tolerance_mm: float,
    hd95_missing: str = "max",
) -> dict[str, float]:
    """``{"HD95": mm, "NSD": fraction}`` of two boolean masks, with the empty-mask rules of this module."""
    if hd95_missing not in HD95_MISSING:
        raise ValueError(f"hd95_missing must be one of {HD95_MISSING}, got {hd95_missing!r}")
    pred_empty, ref_empty = not pred_mask.any(), not ref_mask.any()
    if pred_empty and ref_empty:
        return {"HD95": float("nan"), "NSD": float("nan")}
    if pred_empty or ref_empty:
        worst = image_diagonal_mm(ref_mask.shape, spacing) if hd95_missing == "max" else float("nan")
        return {"HD95": worst, "NSD": 0.0}
    pred_to_ref, ref_to_pred = directed_surface_distances(pred_mask, ref_mask, spacing)
    return {
        "HD95": hd95(pred_to_ref, ref_to_pred),
        "NSD": normalized_surface_dice(pred_to_ref, ref_to_pred, nsd_tolerance_mm),
    }


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel, grown by ``margin`` and clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(hits[0] - margin, 0), min(hits[-1] + 1 + margin, mask.shape[axis])))
    return tuple(box)
