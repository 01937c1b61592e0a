"""A deterministic CT-sized chest phantom with small lung lesions: the hard case for CPU training and inference.

Each case is a thorax scan of 512 × 512 × 40–80 voxels at 0.6–0.8 × 0.6–0.8 × 5 mm in int16 HU, like a
clinical chest CT: a body of fat and muscle, ribs and a spine of bone, a mediastinum with the aorta, two
air-filled lungs (−870 HU, a slowly varying texture) narrowing to their apices, and in each lung a vessel
tree of tubes branching from the hilum, 6 mm down to under a millimetre in radius. Outside the circular
reconstruction field of view the scanner's padding value −1024 is stored, so cropping to nonzero keeps
the whole 512 × 512 grid, as on real scans.

Lesions (label 1): one to three lobulated nodules of 5–30 mm diameter (the first at least 10 mm), about
a third of them attached to a vessel, a third to the chest wall, the rest free in the lung. Two in three
are solid, at the attenuation of the vessels (0–60 HU, so only their shape tells them apart); the
others are subsolid (−650 to −350 HU). Every fourth case (index 3, 7, 11, ...) has no lesion. The lesion
volume is 10⁻⁵–10⁻³ of the image volume (``lesion_fraction``), the ratio of real lung-nodule datasets.

Intensities get a partial-volume blur in-plane, then Gaussian noise (12–30 HU), then integer HU. Case
``index`` is drawn from ``numpy.random.default_rng([seed, index])`` alone: the same seed writes the same
bytes, whatever the number of cases. ``size="tiny"`` draws the same anatomy on a coarse grid (about
14 × 88 × 88 voxels of 4 × 4 × 5 mm) for the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from clinix.data.phantom import prepare_phantom_folder, write_ct_cases
from clinix.errors import ClinixError
from clinix.io.atomic import write_json
from clinix.io.image import Geometry

LESION_NAME = "ClinixLesionPhantom"
LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".nii.gz"
PADDING_HU = -1024.0
CT_RANGE_HU = (-1024.0, 3071.0)
LESION_FREE_EVERY = 4  # case index 3, 7, 11, ... has no lesion
FRACTION_RANGE = (1e-5, 1e-3)  # lesion volume over image volume, per case with a lesion


@dataclass(frozen=True)
class SizePreset:
    """Grid of one size preset: slices (inclusive range), in-plane voxels, pixel size range (mm), slice mm."""

    slices: tuple[int, int]
    in_plane: int
    pixel_mm: tuple[float, float]
    slice_mm: float
    first_lesion_mm: tuple[float, float]  # diameter range of the first lesion
    lesion_mm: tuple[float, float]  # diameter range of the others


SIZES = {
    "default": SizePreset((40, 80), 512, (0.6, 0.8), 5.0, (10.0, 30.0), (5.0, 30.0)),
    "tiny": SizePreset((12, 16), 88, (3.6, 4.4), 5.0, (16.0, 30.0), (12.0, 30.0)),
}

Grid = tuple[np.ndarray, np.ndarray, np.ndarray]  # open (z, y, x) coordinates in mm from the volume centre


@dataclass(frozen=True)
class Segment:
    """One vessel: a tube of ``radius_mm`` from ``start`` to ``end`` (``(z, y, x)`` mm)."""

    start: np.ndarray
    end: np.ndarray
    radius_mm: float


def make_lesion_case(index: int, seed: int = 0, size: str = "default") -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Draw case ``index``: image ``(Z, Y, X)`` float32 integer HU, label ``(Z, Y, X)`` uint8 (1 = lesion), geometry.

    The geometry is an identity direction with a table position as origin; spacing ``(5, p, p)`` mm.
    """
    preset = _preset(size)
    rng = np.random.default_rng([seed, index])
    shape = (int(rng.integers(preset.slices[0], preset.slices[1] + 1)), preset.in_plane, preset.in_plane)
    pixel_mm = round(float(rng.uniform(*preset.pixel_mm)) * 512) / 512  # as scanners report it
    spacing = (preset.slice_mm, pixel_mm, pixel_mm)
    grid = _grid_mm(shape, spacing)
    fov_radius_mm = 0.5 * shape[1] * pixel_mm * rng.uniform(0.96, 1.0)

    anatomy = _thorax(rng, grid, fov_radius_mm)
    lungs = anatomy.pop("lungs")
    hu = _thorax_hu(rng, grid, anatomy, lungs)
    segments = [s for side in (-1.0, 1.0) for s in _vessel_tree(rng, grid, lungs, side)]
    vessel_hu = rng.uniform(20.0, 50.0)
    vessel = _draw_tubes(segments, grid, spacing, shape)
    vessel *= lungs  # the tree ends at the pleura
    hu += vessel * (vessel_hu - hu)

    label = np.zeros(shape, dtype=np.uint8)
    if index % LESION_FREE_EVERY != LESION_FREE_EVERY - 1:
        lesion_weight, lesion_mask = _lesions(rng, grid, spacing, lungs, segments, preset)
        solid = rng.random() < 2 / 3
        lesion_hu = rng.uniform(0.0, 60.0) if solid else rng.uniform(-650.0, -350.0)
        hu += lesion_weight * (lesion_hu - hu)
        label[lesion_mask] = LABELS["lesion"]

    fov = grid[1] ** 2 + grid[2] ** 2 <= fov_radius_mm**2  # (1, Y, X)
    image = _acquire(rng, hu, fov[0], rng.uniform(12.0, 30.0))
    origin = (float(rng.uniform(-200, -150)), float(rng.uniform(-200, -150)), float(rng.uniform(-600, -300)))
    return image, label, Geometry(spacing, origin, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def lesion_fraction(label: np.ndarray) -> float:
    """Lesion voxels over all voxels (the T/W ratio)."""
    return float(np.count_nonzero(label == LABELS["lesion"])) / label.size


def write_lesion_dataset(
    out_dir: str | Path,
    cases: int = 8,
    seed: int = 0,
    test_cases: int = 2,
    size: str = "default",
    overwrite: bool = False,
    on_case: Callable[[str], None] | None = None,
) -> Path:
    """Write the phantom as an nnU-Net v2 raw dataset (``lesion_XXX``); same folder rules as the CT phantom."""
    _preset(size)
    if cases < 1 or test_cases < 0 or seed < 0:
        raise ClinixError(f"need >= 1 training case and test cases, seed >= 0; got {cases}, {test_cases}, {seed}")
    out = Path(out_dir)
    prepare_phantom_folder(out, overwrite)
    write_json(out / "dataset.json", _dataset_json(cases, seed, test_cases, size))
    write_ct_cases(out, "lesion", cases, test_cases, lambda index: make_lesion_case(index, seed, size), on_case)
    return out


def _preset(size: str) -> SizePreset:
    if size not in SIZES:
        raise ClinixError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def _dataset_json(cases: int, seed: int, test_cases: int, size: str) -> dict:
    return {
        "name": LESION_NAME,
        "description": "Synthetic chest CT with small lung lesions (1) among vessels; every fourth case has none; "
        "imagesTs/labelsTs hold the held-out cases. Written by 'clinix phantom --kind lesion'.",
        "channel_names": {"0": "CT"},
        "labels": dict(LABELS),
        "numTraining": cases,
        "file_ending": FILE_ENDING,
        "phantom": {"kind": "lesion", "seed": seed, "size": size, "test_cases": test_cases},
    }


def _grid_mm(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Grid:
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing, strict=True)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1


def _thorax(rng: np.random.Generator, grid: Grid, fov_radius_mm: float) -> dict[str, np.ndarray]:
    """Boolean masks ``(Z, Y, X)`` (or broadcastable) of body, inner body, bone, aorta and lungs.

    Anterior is −y. The lungs are two lobulated half-ellipses beside the mediastinum whose width follows
    ``sqrt(1 − ((t − 0.3) / 0.7)²)`` along the scan (``t`` from the base to the apex), so they narrow
    upwards and end at the apex; the scan covers them from below the diaphragm dome to above the apex.
    """
    z, y, x = grid
    semi_x = rng.uniform(0.72, 0.8) * fov_radius_mm
    semi_y = rng.uniform(0.5, 0.58) * fov_radius_mm
    cy = rng.uniform(0.0, 0.06) * fov_radius_mm
    body = _ellipse(x, y, 0.0, cy, np.float32(semi_x), np.float32(semi_y))
    wall_mm = rng.uniform(0.08, 0.12) * semi_y
    inner = _ellipse(x, y, 0.0, cy, np.float32(semi_x - wall_mm), np.float32(semi_y - wall_mm))

    half_length = float(z.max())
    t = (z - z.min()) / (2 * half_length)  # 0 at the first slice, 1 at the last
    base, apex = rng.uniform(0.0, 0.12), rng.uniform(0.88, 1.0)
    u = np.clip((t - base) / (apex - base), 0.0, 1.0)
    width = np.sqrt(np.clip(1 - ((u - 0.3) / 0.7) ** 2, 0.0, 1.0)) * ((t >= base) & (t <= apex))
    lungs = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=bool)
    mediastinum = rng.uniform(0.16, 0.22) * semi_x
    for side in (-1.0, 1.0):
        lx = side * (mediastinum + 0.5 * (semi_x - wall_mm - mediastinum))
        ax = 0.5 * (semi_x - wall_mm - mediastinum) * rng.uniform(0.92, 1.0) * width + 1e-3
        ay = (semi_y - wall_mm) * rng.uniform(0.82, 0.92) * width + 1e-3
        level = ((x - lx) / ax) ** 2 + ((y - cy - 0.05 * semi_y) / ay) ** 2
        level = level + 0.12 * np.sin(x / rng.uniform(25, 40) + rng.uniform(0, 6.3)) * np.cos(z / rng.uniform(40, 70))
        lungs |= (level <= 1) & inner
    spine_y = cy + semi_y - wall_mm - rng.uniform(0.18, 0.24) * semi_y
    spine_r = rng.uniform(0.1, 0.13) * semi_y
    spine = _ellipse(x, y, 0.0, spine_y, np.float32(spine_r), np.float32(spine_r))
    canal = _ellipse(x, y, 0.0, spine_y + 0.35 * spine_r, np.float32(0.35 * spine_r), np.float32(0.3 * spine_r))
    ribs = _ribs(rng, grid, semi_x, semi_y, cy, wall_mm)
    aorta_r = rng.uniform(11.0, 15.0)
    aorta = _ellipse(x, y, -0.6 * spine_r - aorta_r, spine_y - 1.2 * spine_r, np.float32(aorta_r), np.float32(aorta_r))
    lungs &= ~(spine | aorta)
    return {"body": body, "inner": inner, "bone": (spine & ~canal) | ribs, "aorta": aorta & inner, "lungs": lungs}


def _ribs(rng: np.random.Generator, grid: Grid, semi_x: float, semi_y: float, cy: float, wall_mm: float) -> np.ndarray:
    """Ribs inside the chest wall: bands 8–12 mm thick every 25–35 mm that slope down towards the front,
    so an axial slice cuts several of them into arcs; none over the sternum."""
    z, y, x = grid
    period, thickness = rng.uniform(25.0, 35.0), rng.uniform(8.0, 12.0)
    angle = np.arctan2(y - cy, np.abs(x))  # −π/2 at the front, π/2 at the back, per side
    height = z + rng.uniform(20.0, 35.0) * angle + rng.uniform(0, period)
    in_rib = np.mod(height, period) < thickness
    ring = ~_ellipse(x, y, 0.0, cy, np.float32(semi_x - 0.8 * wall_mm), np.float32(semi_y - 0.8 * wall_mm))
    ring &= _ellipse(x, y, 0.0, cy, np.float32(semi_x - 0.2 * wall_mm), np.float32(semi_y - 0.2 * wall_mm))
    front = (y - cy < -0.6 * semi_y) & (np.abs(x) < 0.25 * semi_x)
    return in_rib & ring & ~front


def _thorax_hu(rng: np.random.Generator, grid: Grid, anatomy: dict[str, np.ndarray], lungs: np.ndarray) -> np.ndarray:
    """HU of the anatomy before vessels and lesions: air, fat, muscle, blood, bone, textured lung."""
    shape = lungs.shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to(anatomy["body"], shape)] = rng.uniform(-110.0, -80.0)
    hu[np.broadcast_to(anatomy["inner"], shape)] = rng.uniform(30.0, 50.0)
    hu[np.broadcast_to(anatomy["aorta"], shape)] = rng.uniform(40.0, 55.0)
    hu[np.broadcast_to(anatomy["bone"], shape)] = rng.uniform(350.0, 800.0)
    texture = ndimage.zoom(rng.standard_normal((4, 8, 8)).astype(np.float32), np.array(shape) / (4, 8, 8), order=1)
    hu[lungs] = (rng.uniform(-890.0, -850.0) + 25.0 * texture)[lungs]
    return hu


def _vessel_tree(rng: np.random.Generator, grid: Grid, lungs: np.ndarray, side: float) -> list[Segment]:
    """Branching tubes from the hilum of the lung on ``side`` (−1: the image's left half, +1: its right).

    Six trunks of 4–6 mm radius leave the hilum; each branch splits in two, 20–45° off its axis, with
    radius × 0.72–0.82 and length × 0.8–0.9, until the radius falls under 0.5 mm. A branch whose end
    lies outside the lung is kept (the caller clips the drawing to the lung) but grows no further.
    """
    z, _, x = (axis.ravel() for axis in grid)
    rows = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if len(rows) == 0:
        return []
    middle = rows[len(rows) // 2]
    lung_x = x[np.nonzero(lungs[middle].any(axis=0) & (np.sign(x) == side))[0]]
    if len(lung_x) == 0:
        return []
    hilum = np.array([z[middle], rng.uniform(-5.0, 10.0), side * (np.abs(lung_x).min() + 3.0)])
    origin = np.array([float(axis.ravel()[0]) for axis in grid])
    spacing = np.array([float(axis.ravel()[1] - axis.ravel()[0]) for axis in grid])

    def inside(point: np.ndarray) -> bool:
        voxel = np.rint((point - origin) / spacing).astype(int)
        return bool(np.all(voxel >= 0) and np.all(voxel < lungs.shape) and lungs[tuple(voxel)])

    stack = []
    for angle in np.linspace(0, 2 * np.pi, 6, endpoint=False) + rng.uniform(0, 1):
        direction = np.array([math.cos(angle), 0.6 * math.sin(angle), side * 0.8])
        stack.append((hilum, direction / np.linalg.norm(direction), rng.uniform(4.0, 6.0), rng.uniform(25.0, 35.0)))
    segments: list[Segment] = []
    while stack:
        start, direction, radius, length = stack.pop()
        end = start + direction * length
        segments.append(Segment(start, end, float(radius)))
        if radius * 0.82 < 0.5 or not inside(end):
            continue
        for _ in range(2):
            turn = rng.normal(size=3)
            turn -= turn.dot(direction) * direction
            turn /= np.linalg.norm(turn) + 1e-9
            angle = math.radians(rng.uniform(20.0, 45.0))
            child = math.cos(angle) * direction + math.sin(angle) * turn
            stack.append((end, child, radius * rng.uniform(0.72, 0.82), length * rng.uniform(0.8, 0.9)))
    return segments


def _draw_tubes(
    segments: list[Segment], grid: Grid, spacing: tuple[float, float, float], shape: tuple[int, int, int]
) -> np.ndarray:
    """Partial-volume occupancy in [0, 1] of the union of the tubes, ``(Z, Y, X)`` float32.

    Each tube is drawn inside its bounding box only: occupancy ``clip(0.5 − (d − r) / p, 0, 1)`` with
    ``d`` the distance to the segment's axis and ``p`` the pixel size, so a tube thinner than a voxel
    still leaves its partial signal.
    """
    occupancy = np.zeros(shape, dtype=np.float32)
    pixel = spacing[1]
    origin = np.array([float(axis.ravel()[0]) for axis in grid])
    step = np.array(spacing)
    for segment in segments:
        reach = segment.radius_mm + pixel
        low = np.floor((np.minimum(segment.start, segment.end) - reach - origin) / step).astype(int)
        high = np.ceil((np.maximum(segment.start, segment.end) + reach - origin) / step).astype(int) + 1
        low, high = np.maximum(low, 0), np.minimum(high, shape)
        if np.any(high <= low):
            continue
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
        coords = [axis.ravel()[b][tuple(slice(None) if i == a else None for i in range(3))] for a, (axis, b) in
                  enumerate(zip(grid, box, strict=True))]  # fmt: skip
        distance = _distance_to_segment(coords, segment.start, segment.end)
        value = np.clip(0.5 - (distance - segment.radius_mm) / pixel, 0.0, 1.0)
        np.maximum(occupancy[box], value, out=occupancy[box])
    return occupancy


def _distance_to_segment(coords: list[np.ndarray], start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance in mm of every point of the open grid ``coords`` to the segment ``start``–``end``."""
    axis = end - start
    length2 = float(axis.dot(axis)) or 1.0
    offsets = [c - s for c, s in zip(coords, start, strict=True)]
    along = np.clip(sum(o * a for o, a in zip(offsets, axis, strict=True)) / length2, 0.0, 1.0)
    return np.sqrt(sum((o - along * a) ** 2 for o, a in zip(offsets, axis, strict=True)))


def _lesions(
    rng: np.random.Generator,
    grid: Grid,
    spacing: tuple[float, float, float],
    lungs: np.ndarray,
    segments: list[Segment],
    preset: SizePreset,
) -> tuple[np.ndarray, np.ndarray]:
    """One to three separate lobulated nodules: occupancy ``(Z, Y, X)`` float32 in [0, 1] and the label.

    The label is the nodule inside the lung (a juxtapleural nodule's part in the wall is wall). Nodules
    keep 3 mm apart, so each is one lesion; the total volume stays within ``FRACTION_RANGE`` of the image
    (the later nodules shrink to fit). A placement that leaves under half the ball in the lung is redrawn.
    """
    occupancy = np.zeros(lungs.shape, dtype=np.float32)
    interior = ndimage.binary_erosion(lungs, iterations=1)
    wall = lungs & ~interior
    voxel_mm3 = math.prod(spacing)
    budget = 0.8 * FRACTION_RANGE[1] * lungs.size * voxel_mm3  # mm³ of lesion left to place
    smallest_first = (3 * FRACTION_RANGE[0] * lungs.size * voxel_mm3 / (math.pi / 6)) ** (1 / 3)
    placed: list[tuple[np.ndarray, float]] = []
    for number in range(int(rng.integers(1, 4))):
        if budget < math.pi / 6 * preset.lesion_mm[0] ** 3:
            break
        diameter = rng.uniform(*(preset.first_lesion_mm if number == 0 else preset.lesion_mm))
        if number == 0:
            diameter = max(diameter, smallest_first)
        radius = min(diameter, (budget / (math.pi / 6)) ** (1 / 3)) / 2
        for _ in range(10):
            centre = _lesion_centre(rng, grid, interior, wall, segments, radius)
            if any(np.linalg.norm(centre - c) < radius + r + 3.0 for c, r in placed):
                continue
            nodule = np.zeros_like(occupancy)
            _draw_nodule(rng, grid, spacing, centre, radius, nodule)
            if np.count_nonzero((nodule >= 0.5) & lungs) * voxel_mm3 >= 0.5 * math.pi * 4 / 3 * radius**3:
                np.maximum(occupancy, nodule, out=occupancy)
                placed.append((centre, radius))
                budget -= math.pi * 4 / 3 * radius**3
                break
    return occupancy, (occupancy >= 0.5) & lungs


def _lesion_centre(
    rng: np.random.Generator,
    grid: Grid,
    interior: np.ndarray,
    wall: np.ndarray,
    segments: list[Segment],
    radius_mm: float,
) -> np.ndarray:
    """Where a nodule of ``radius_mm`` goes: against a vessel, against the wall, or free (a third each);
    free in the lung when the chosen kind finds no place in 20 draws."""
    kind = int(rng.integers(3))
    vessels = [s for s in segments if s.radius_mm >= 1.0]
    points = np.flatnonzero(interior)
    for attempt in range(21):
        if attempt == 20:
            kind = 2
        if kind == 0 and vessels:
            segment = vessels[rng.integers(len(vessels))]
            point = segment.start + rng.uniform(0.2, 0.8) * (segment.end - segment.start)
            side = rng.normal(size=3)
            centre = point + side / np.linalg.norm(side) * (segment.radius_mm + 0.7 * radius_mm)
        else:
            candidates = np.flatnonzero(wall) if kind == 1 else points
            index = np.unravel_index(candidates[rng.integers(len(candidates))], interior.shape)
            centre = np.array([float(axis.ravel()[i]) for axis, i in zip(grid, index, strict=True)])
            if kind == 1:  # half a radius towards the body's axis, so the nodule touches the pleura
                centre[1:] *= 1 - 0.5 * radius_mm / max(float(np.linalg.norm(centre[1:])), 1.0)
        voxel = tuple(int(np.argmin(np.abs(axis.ravel() - c))) for axis, c in zip(grid, centre, strict=True))
        if interior[voxel] or attempt == 20:
            return centre
    raise AssertionError("unreachable")


def _draw_nodule(
    rng: np.random.Generator,
    grid: Grid,
    spacing: tuple[float, float, float],
    centre: np.ndarray,
    radius_mm: float,
    occupancy: np.ndarray,
) -> None:
    """Add a lobulated ball, ``r(θ) = radius · (1 + Σ 0.08 sin(k·u + φ))``, with a partial-volume edge."""
    pixel = spacing[1]
    reach = radius_mm * 1.3 + pixel
    origin = np.array([float(axis.ravel()[0]) for axis in grid])
    low = np.maximum(np.floor((centre - reach - origin) / spacing).astype(int), 0)
    high = np.minimum(np.ceil((centre + reach - origin) / spacing).astype(int) + 1, occupancy.shape)
    if np.any(high <= low):
        return
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    offsets = [
        axis.ravel()[b][tuple(slice(None) if i == a else None for i in range(3))] - c
        for a, (axis, b, c) in enumerate(zip(grid, box, centre, strict=True))
    ]
    distance = np.sqrt(sum(o**2 for o in offsets)) + 1e-6
    lobes = 1.0
    for _ in range(3):
        wave = rng.normal(size=3)
        wave *= rng.uniform(2.0, 4.0) / np.linalg.norm(wave)
        lobes = lobes + 0.08 * np.sin(
            sum(w * o / distance for w, o in zip(wave, offsets, strict=True)) + rng.uniform(0, 6.3)
        )
    value = np.clip(0.5 - (distance - radius_mm * lobes) / pixel, 0.0, 1.0).astype(np.float32)
    np.maximum(occupancy[box], value, out=occupancy[box])


def _acquire(rng: np.random.Generator, hu: np.ndarray, fov: np.ndarray, noise_hu: float) -> np.ndarray:
    """In-plane partial-volume blur, noise, integer HU; the padding value outside the field of view."""
    blurred = ndimage.gaussian_filter(hu, sigma=(0.0, rng.uniform(0.5, 0.8), rng.uniform(0.5, 0.8)))
    blurred += noise_hu * rng.standard_normal(hu.shape, dtype=np.float32)
    image = np.rint(np.clip(blurred, *CT_RANGE_HU))
    image[:, ~fov] = PADDING_HU
    return image
