"""Crop to the nonzero region (or the body of a CT) and put a cropped array back on the full grid.

The box is the fingerprint's (``nonzero_crop_box`` as nnU-Net, reference §2, §6.4; or ``body_crop_box``
for a plan with ``crop = "body"``), so the planner's shapes after cropping and the preprocessed arrays
agree. Inside the box, label −1 marks "outside the body": background voxels that no channel covers and that
no hole filling reaches.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clinix.fingerprint import body_crop_box, nonzero_crop_box

OUTSIDE_LABEL = -1


def box_slices(box: list[list[int]]) -> tuple[slice, ...]:
    """Half-open ``[[z0, z1], [y0, y1], [x0, x1]]`` as slices of the spatial axes."""
    return tuple(slice(lo, hi) for lo, hi in box)


def crop_box(
    image: np.ndarray,
    label: np.ndarray | None,
    crop: str = "nonzero",
    ct: list[int] | None = None,
    spacing: tuple[float, ...] | list[float] = (1.0, 1.0, 1.0),
) -> list[list[int]]:
    """The box a plan's ``crop`` keeps: the nonzero box, or the body box of the ``ct`` channels."""
    if crop == "body" and ct:
        return body_crop_box(image, ct, spacing, label)
    return nonzero_crop_box(image)


def crop_to_nonzero(
    image: np.ndarray, label: np.ndarray | None, box: list[list[int]] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[list[int]]]:
    """Crop image and label to ``box``, by default the box of the voxels nonzero in any channel.

    Args:
        image: ``(C, Z, Y, X)``.
        label: ``(Z, Y, X)`` integers, or None (inference).
        box: half-open ``[[z0, z1], [y0, y1], [x0, x1]]`` (``crop_box``), or None for the nonzero box.

    Returns:
        image ``(C, z, y, x)`` (a view), the body mask ``(z, y, x)`` bool (nonzero in any channel, holes
        filled), the label as int16 with background outside the mask set to −1 (None without a label), and
        the half-open box.
    """
    box = nonzero_crop_box(image) if box is None else box
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
