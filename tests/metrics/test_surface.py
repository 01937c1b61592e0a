"""HD95 and NSD on a 4x4x4 box and its copy shifted by one voxel, worked out by hand.

Box A fills z, y, x in 1..4 (64 voxels); its erosion is the 2x2x2 core, so its surface has 56 voxels.
B is A shifted by one voxel along one axis. 36 of A's surface voxels are also on B's surface (the 48
voxels of A and B together minus the 12 voxels of the union of the two cores): distance 0. The other 20:
- the 16 voxels of A's face that B does not cover are one step, along the shift, from B's near face;
- the 4 voxels of A's far face inside B's core are one step from B's surface, the nearest step being
  along the shift or sideways, whichever is shorter in mm.
The situation from B to A is the mirror image. Sorted, the 56 distances place the 95th percentile (index
0.95 * 55 = 52.25) inside the 16 largest values (indices 40..55), so HD95 = one step along the shift.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from clinix.metrics.surface import directed_surface_distances, image_diagonal_mm, surface_metrics, surface_voxels

SHAPE = (7, 7, 8)


def _box_pair(shift_axis: int, shape: tuple[int, ...] = SHAPE, start: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros(shape, dtype=bool)
    a[start : start + 4, start : start + 4, start : start + 4] = True
    return a, np.roll(a, 1, axis=shift_axis)


def test_surface_of_a_box_is_the_box_minus_its_core():
    a, _ = _box_pair(2)
    assert np.count_nonzero(surface_voxels(a)) == 64 - 8


def test_box_filling_the_array_has_its_border_voxels_on_its_surface():
    assert np.count_nonzero(surface_voxels(np.ones((4, 4, 4), dtype=bool))) == 56


def test_directed_distances_of_a_one_voxel_shift_are_36_zeros_and_20_steps():
    a, b = _box_pair(2)
    a_to_b, b_to_a = directed_surface_distances(a, b, (1.0, 1.0, 1.0))
    for distances in (a_to_b, b_to_a):
        assert sorted(distances.tolist()) == [0.0] * 36 + [1.0] * 20


@pytest.mark.parametrize(("shift_axis", "expected_mm"), [(0, 3.0), (1, 1.0), (2, 1.0)])
def test_hd95_of_a_one_voxel_shift_is_the_spacing_along_the_shift(shift_axis, expected_mm):
    a, b = _box_pair(shift_axis)
    assert surface_metrics(b, a, (3.0, 1.0, 1.0), nsd_tolerance_mm=1.0)["HD95"] == expected_mm


def test_hd95_is_unchanged_when_the_boxes_touch_the_array_border():
    a, b = _box_pair(2, shape=(4, 4, 5), start=0)
    assert surface_metrics(b, a, (1.0, 1.0, 1.0), nsd_tolerance_mm=1.0)["HD95"] == 1.0


def test_nsd_is_one_when_the_tolerance_reaches_the_shift():
    a, b = _box_pair(0)
    assert surface_metrics(b, a, (3.0, 1.0, 1.0), nsd_tolerance_mm=3.0)["NSD"] == 1.0


def test_nsd_below_the_shift_counts_the_surface_voxels_within_tolerance():
    a, b = _box_pair(2)
    # 36 zeros of 56 on each side
    assert surface_metrics(b, a, (1.0, 1.0, 1.0), nsd_tolerance_mm=0.5)["NSD"] == pytest.approx(72 / 112)
    # z shift of 3 mm: the 4 far-face core voxels are 1 mm away sideways, the 16 uncovered ones 3 mm
    a, b = _box_pair(0)
    assert surface_metrics(b, a, (3.0, 1.0, 1.0), nsd_tolerance_mm=2.0)["NSD"] == pytest.approx(80 / 112)


def test_two_empty_masks_have_no_surface_metrics():
    empty = np.zeros(SHAPE, dtype=bool)
    metrics = surface_metrics(empty, empty, (1.0, 1.0, 1.0), nsd_tolerance_mm=1.0)
    assert math.isnan(metrics["HD95"]) and math.isnan(metrics["NSD"])


def test_a_missed_or_spurious_structure_scores_the_image_diagonal_and_zero_nsd():
    a, _ = _box_pair(2)
    spacing = (3.0, 1.0, 0.5)
    diagonal = math.sqrt(sum((size * step) ** 2 for size, step in zip(a.shape, spacing, strict=True)))
    for pred, ref in ((a, np.zeros_like(a)), (np.zeros_like(a), a)):
        metrics = surface_metrics(pred, ref, spacing, nsd_tolerance_mm=1.0)
        assert metrics == {"HD95": pytest.approx(diagonal), "NSD": 0.0}


def test_the_brats_diagonal_is_373_mm():
    assert image_diagonal_mm((155, 240, 240), (1.0, 1.0, 1.0)) == pytest.approx(373.13, abs=0.005)


def test_monai_convention_leaves_hd95_undefined_for_one_empty_mask():
    a, _ = _box_pair(2)
    for pred, ref in ((a, np.zeros_like(a)), (np.zeros_like(a), a)):
        metrics = surface_metrics(pred, ref, (1.0, 1.0, 1.0), nsd_tolerance_mm=1.0, hd95_missing="nan")
        assert math.isnan(metrics["HD95"]) and metrics["NSD"] == 0.0


def _sphere_and_ellipsoid() -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[:20, :24, :24]
    sphere = (z - 10) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 36
    ellipsoid = ((z - 9) / 5) ** 2 + ((y - 13) / 8) ** 2 + ((x - 11) / 6) ** 2 <= 1
    return sphere, ellipsoid


def test_hd95_matches_monai_on_a_sphere_against_an_ellipsoid():
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    sphere, ellipsoid = _sphere_and_ellipsoid()
    spacing = (2.0, 1.0, 0.5)
    expected = monai_metrics.compute_hausdorff_distance(
        torch.from_numpy(ellipsoid)[None, None].float(),
        torch.from_numpy(sphere)[None, None].float(),
        include_background=True,
        percentile=95,
        spacing=spacing,
    )
    ours = surface_metrics(ellipsoid, sphere, spacing, nsd_tolerance_mm=1.0)["HD95"]
    assert ours == pytest.approx(float(expected), rel=1e-6)


def test_hd95_matches_medpy_on_a_one_voxel_shift():
    # medpy takes the 95th percentile of both directed sets together; for a mirror-symmetric pair the two
    # conventions agree
    binary = pytest.importorskip("medpy.metric.binary")
    a, b = _box_pair(0)
    spacing = (3.0, 1.0, 1.0)
    assert surface_metrics(b, a, spacing, 1.0)["HD95"] == pytest.approx(binary.hd95(b, a, voxelspacing=spacing))
