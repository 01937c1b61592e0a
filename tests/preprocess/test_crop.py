from __future__ import annotations

import numpy as np

from clinix.preprocess.crop import crop_to_nonzero, uncrop


def body_with_notch_and_hole() -> tuple[np.ndarray, np.ndarray]:
    """A ``(1, 6, 8, 10)`` body filling box [1,5)x[2,7)x[3,9) but for a 2x2x2 notch at its corner and a
    one-voxel hole inside; label 1 inside the body and label 2 in the notch."""
    image = np.zeros((1, 6, 8, 10), dtype=np.float32)
    image[0, 1:5, 2:7, 3:9] = 50.0
    image[0, 1:3, 2:4, 3:5] = 0.0  # notch, open to the outside
    image[0, 3, 4, 6] = 0.0  # hole, enclosed on all six sides
    label = np.zeros((6, 8, 10), dtype=np.uint8)
    label[2, 5, 6] = 1
    label[1, 2, 3] = 2
    return image, label


def test_crop_box_is_the_nonzero_box() -> None:
    image, label = body_with_notch_and_hole()
    cropped, _, seg, box = crop_to_nonzero(image, label)
    assert box == [[1, 5], [2, 7], [3, 9]]
    assert cropped.shape == (1, 4, 5, 6)
    assert seg is not None and seg.shape == (4, 5, 6) and seg.dtype == np.int16


def test_background_outside_the_filled_body_becomes_minus_one() -> None:
    image, label = body_with_notch_and_hole()
    _, body, seg, _ = crop_to_nonzero(image, label)
    assert body.sum() == 4 * 5 * 6 - 8  # the notch is outside; the hole is filled
    assert seg[2, 2, 3] == 0  # the hole stays background
    assert np.count_nonzero(seg == -1) == 7  # the notch less its labelled voxel
    assert seg[0, 0, 0] == 2  # a foreground label outside the body is kept
    assert seg[1, 3, 3] == 1
    assert np.count_nonzero(seg == 0) == 4 * 5 * 6 - 7 - 2


def test_without_label_only_the_body_mask_is_returned() -> None:
    image, _ = body_with_notch_and_hole()
    cropped, body, seg, _ = crop_to_nonzero(image, None)
    assert seg is None
    assert body.shape == cropped.shape[1:]


def test_an_all_zero_image_keeps_its_full_extent() -> None:
    _, _, seg, box = crop_to_nonzero(np.zeros((1, 2, 3, 4), dtype=np.float32), np.zeros((2, 3, 4), dtype=np.uint8))
    assert box == [[0, 2], [0, 3], [0, 4]]
    assert np.all(seg == -1)


def test_uncrop_places_the_array_at_the_box_and_fills_elsewhere() -> None:
    cropped = np.arange(1, 9, dtype=np.int16).reshape(2, 2, 2)
    full = uncrop(cropped, [[1, 3], [0, 2], [2, 4]], (3, 3, 4), fill=-5)
    assert full.shape == (3, 3, 4)
    np.testing.assert_array_equal(full[1:3, 0:2, 2:4], cropped)
    assert np.count_nonzero(full == -5) == 36 - 8
