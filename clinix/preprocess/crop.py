"""Crop to the nonzero region and put a cropped array back on the full grid (nnU-Net reference §2, §6.4).

The box is the fingerprint's (``nonzero_crop_box``), so the planner's shapes after cropping and the
preprocessed arrays agree. Inside the box, label −1 marks "outside the body": background voxels that no
channel covers and that no hole filling reaches.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clinix.fingerprint import nonzero_crop_box

OUTSIDE_LABEL = -1


def box_slices(box: list[list[int]]) -> tuple[slice, ...]:
    """Half-open ``[[z0, z1], [y0, y1], [x0, x1]]`` as slices of the spatial axes."""
    return tuple(slice(lo, hi) for lo, hi in box)


def crop_to_nonzero(
    image: np.ndarray, label: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[list[int]]]:
    """Crop image and label to the box of the voxels nonzero in any channel.

    Args:
        image: ``(C, Z, Y, X)``.
        label: ``(Z, Y, X)`` integers, or None (inference).

    Returns:
        image ``(C, z, y, x)`` (a view), the body mask ``(z, y, x)`` bool (nonzero in any channel, holes
        filled), the label as int16 with background outside the mask set to −1 (None without a label), and
        the half-open box.
    """
    box = nonzero_crop_box(image)
    crop = box_slices(box)
    cropped = image[(slice(None), *crop)]
    # Filling holes inside the box equals filling them on the full grid: everything outside the box is
    # zero, so a zero region touching the box face is connected to the image border either way.
    body = ndimage.binary_fill_holes(np.any(cropped != 0, axis=0))
    if label is None:
        return cropped, body, None, box
    seg = label[crop].astype(np.int16)
    seg[(seg == 0) & ~body] = OUTSIDE_LABEL
    return cropped, body, seg, box


def uncrop(cropped: np.ndarray, box: list[list[int]], shape: tuple[int, ...], fill: float = 0) -> np.ndarray:
    """Place a ``(..., z, y, x)`` array at ``box`` of a grid of spatial ``shape``, ``fill`` elsewhere."""
    full = np.full((*cropped.shape[:-3], *shape), fill, dtype=cropped.dtype)
    full[(..., *box_slices(box))] = cropped
    return full
