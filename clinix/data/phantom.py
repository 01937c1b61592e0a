"""A deterministic synthetic CT-like dataset in nnU-Net v2 raw layout, for the demo and the tests.

Each case is an abdomen-like scan: an elliptic body of soft tissue under a fat layer, a spine of
bright vertebrae, one smooth irregular organ (label 1) holding one to three small darker tumours
(label 2), inside a circular reconstruction field of view. As in many DICOM exports, voxels outside
that circle are exactly 0 while air inside it is -1000 HU, so nnU-Net's crop-to-nonzero has a box to
cut (reference §2). Intensities are blurred (partial volume) before Gaussian noise is added, then
rounded to integer HU and stored as int16 like scanner output.

Case ``index`` is drawn from ``numpy.random.default_rng([seed, index])`` alone, so it does not depend
on how many other cases are generated, and the same seed writes the same bytes.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from clinix.errors import ClinixError, DatasetError
from clinix.io.atomic import write_json
from clinix.io.image import Geometry, write_image

PHANTOM_NAME = "ClinixPhantom"
LABELS = {"background": 0, "organ": 1, "tumour": 2}
FILE_ENDING = ".nii.gz"
# (slices, in-plane voxels) ranges per size preset, inclusive; spacing ranges are the same for all.
SIZES = {"default": ((32, 48), (64, 96)), "tiny": ((16, 20), (32, 40))}
Z_SPACINGS_MM = (1.5, 2.0, 2.5, 3.0)
AIR_HU = -1000.0
CT_RANGE_HU = (-1024.0, 3071.0)
# Every fourth case, starting at index 1, is stored with a flipped or rotated direction.
OBLIQUE_EVERY = 4
_CUBE = np.ones((3, 3, 3), dtype=bool)
_DATASET_ENTRIES = ("dataset.json", "imagesTr", "labelsTr", "imagesTs", "labelsTs")

Grid = tuple[np.ndarray, np.ndarray, np.ndarray]  # open (z, y, x) coordinates in mm from the volume centre
BodyAxes = tuple[float, float, float, float]  # body ellipse: centre x, centre y, semi-axis x, semi-axis y (mm)


def make_phantom_case(index: int, seed: int = 0, size: str = "default") -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Draw case ``index`` of the phantom with ``seed``.

    Returns:
        image: ``(Z, Y, X)`` float32 in integer HU; exactly 0 outside the reconstruction circle.
        label: ``(Z, Y, X)`` uint8; 0 background (bone included), 1 organ, 2 tumour.
        geometry: spacing ``(z, y, x)`` in mm, anisotropic; a flipped or rotated direction and a
            non-zero origin for every fourth case (index 1, 5, 9, ...), identity and zero otherwise.
    """
    _check_size(size)
    rng = np.random.default_rng([seed, index])
    shape, spacing = _draw_grid(rng, size)
    grid = _grid_mm(shape, spacing)
    fov_radius_mm = rng.uniform(0.82, 0.92) * min(shape[1] * spacing[1], shape[2] * spacing[2]) / 2
    body, inner, body_axes = _body(rng, grid, fov_radius_mm)
    spine, bone = _spine(rng, grid, body_axes, inner)
    organ, organ_axes_mm = _organ(rng, grid, body_axes, inner & ~spine)
    tumour = _tumours(rng, grid, spacing, organ, organ_axes_mm)

    noise_hu = rng.uniform(10.0, 20.0)
    organ_hu = rng.uniform(60.0, 100.0)
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    hu[body] = rng.uniform(-120.0, -80.0)  # the fat layer; the inner body is overwritten next
    hu[inner] = rng.uniform(30.0, 50.0)
    hu[bone] = rng.uniform(400.0, 1000.0)
    hu[organ] = organ_hu
    # Findable by construction: the tumour is 4-6 noise sigmas darker than the organ.
    hu[tumour] = organ_hu - noise_hu * rng.uniform(4.0, 6.0)

    fov = grid[1] ** 2 + grid[2] ** 2 <= fov_radius_mm**2  # (1, Y, X)
    image = _acquire(rng, hu, fov, noise_hu)
    label = np.zeros(shape, dtype=np.uint8)
    label[organ] = LABELS["organ"]
    label[tumour] = LABELS["tumour"]
    return image, label, _draw_geometry(rng, index, shape, spacing)


def write_phantom_dataset(
    out_dir: str | Path,
    cases: int = 8,
    seed: int = 0,
    test_cases: int = 2,
    size: str = "default",
    overwrite: bool = False,
    on_case: Callable[[str], None] | None = None,
) -> Path:
    """Write ``cases`` training and ``test_cases`` held-out phantom cases as an nnU-Net v2 raw dataset.

    Layout: ``dataset.json``, ``imagesTr/phantom_XXX_0000.nii.gz``, ``labelsTr/phantom_XXX.nii.gz`` for
    indices ``0 .. cases-1``, and ``imagesTs/`` with ``labelsTs/`` for the next ``test_cases`` indices.
    ``out_dir`` must be missing, empty, or an earlier phantom (which is replaced); any other non-empty
    folder is refused unless ``overwrite``, which replaces its dataset entries and keeps other files.
    ``on_case(case_id)`` is called after each case is written. Returns ``out_dir``.
    """
    out = Path(out_dir)
    _check_request(cases, seed, test_cases, size)
    prepare_phantom_folder(out, overwrite)
    # dataset.json goes first: it marks the folder as a phantom, so a rerun after an interruption replaces it.
    write_json(out / "dataset.json", _dataset_json(cases, seed, test_cases, size))
    write_ct_cases(out, "phantom", cases, test_cases, lambda index: make_phantom_case(index, seed, size), on_case)
    return out


def write_ct_cases(
    out: Path,
    prefix: str,
    cases: int,
    test_cases: int,
    make_case: Callable[[int], tuple[np.ndarray, np.ndarray, Geometry]],
    on_case: Callable[[str], None] | None = None,
) -> None:
    """Write ``make_case(i)`` as ``PREFIX_iii``: int16 CT in ``imagesTr``/``imagesTs``, labels beside it."""
    for index in range(cases + test_cases):
        split = "Tr" if index < cases else "Ts"
        case_id = f"{prefix}_{index:03d}"
        image, label, geometry = make_case(index)
        write_image(out / f"images{split}" / f"{case_id}_0000{FILE_ENDING}", image.astype(np.int16), geometry)
        write_image(out / f"labels{split}" / f"{case_id}{FILE_ENDING}", label, geometry, is_label=True)
        if on_case is not None:
            on_case(case_id)


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ClinixError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")


def _check_request(cases: int, seed: int, test_cases: int, size: str) -> None:
    _check_size(size)
    if cases < 1:
        raise ClinixError(f"a phantom needs at least 1 training case, got {cases}")
    if test_cases < 0 or seed < 0:
        raise ClinixError(f"test cases and seed must be >= 0, got {test_cases} and {seed}")


def prepare_phantom_folder(out: Path, overwrite: bool) -> None:
    """Make ``out`` ready to receive a phantom: refuse foreign contents, clear an earlier phantom."""
    if out.exists() and not out.is_dir():
        raise DatasetError(out, "exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite and not _is_phantom(out):
        raise DatasetError(out, "is not empty and holds no clinix phantom (use --overwrite to replace it)")
    for name in _DATASET_ENTRIES:
        entry = out / name
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.exists():
            entry.unlink()


def _is_phantom(folder: Path) -> bool:
    """A dataset clinix wrote (``clinix phantom`` of any kind records its settings under "phantom")."""
    try:
        return "phantom" in json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _dataset_json(cases: int, seed: int, test_cases: int, size: str) -> dict:
    return {
        "name": PHANTOM_NAME,
        "description": "Synthetic CT-like phantom: an organ (1) holding small darker tumours (2); "
        "imagesTs/labelsTs hold the held-out cases. Written by 'clinix phantom'.",
        "channel_names": {"0": "CT"},
        "labels": dict(LABELS),
        "numTraining": cases,
        "file_ending": FILE_ENDING,
        "phantom": {"seed": seed, "size": size, "test_cases": test_cases},
    }


def _draw_grid(rng: np.random.Generator, size: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape ``(Z, Y, X)`` and spacing ``(z, y, x)`` mm: thick slices, square in-plane pixels."""
    (z_lo, z_hi), (xy_lo, xy_hi) = SIZES[size]
    shape = (
        int(rng.integers(z_lo, z_hi + 1)),
        int(rng.integers(xy_lo, xy_hi + 1)),
        int(rng.integers(xy_lo, xy_hi + 1)),
    )
    # In-plane spacing is a field of view of 360-512 mm over 512 columns, as scanners report it.
    in_plane_mm = int(rng.integers(360, 513)) / 512
    z_mm = float(Z_SPACINGS_MM[rng.integers(len(Z_SPACINGS_MM))])
    return shape, (z_mm, in_plane_mm, in_plane_mm)


def _grid_mm(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Grid:
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _ellipse(
    x: np.ndarray, y: np.ndarray, centre: tuple[float, float], axes: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    return ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 <= 1


def _body(rng: np.random.Generator, grid: Grid, fov_radius_mm: float) -> tuple[np.ndarray, np.ndarray, BodyAxes]:
    """Body and its inner part (body minus the fat layer), ``(Z, Y, X)`` bools, and the body ellipse.

    The body is an elliptic cylinder along z whose width breathes by 5 % along the axis; it stays inside
    the reconstruction circle. Returns ``(body, inner, (centre_x, centre_y, semi_x, semi_y))`` in mm.
    """
    z, y, x = grid
    centre = (rng.uniform(-0.04, 0.04) * fov_radius_mm, rng.uniform(-0.04, 0.04) * fov_radius_mm)
    semi_x, semi_y = rng.uniform(0.75, 0.88) * fov_radius_mm, rng.uniform(0.6, 0.72) * fov_radius_mm
    breathing = 1 + 0.05 * np.cos(2 * np.pi * z / rng.uniform(80.0, 160.0) + rng.uniform(0, 2 * np.pi))
    fat_mm = rng.uniform(0.06, 0.1) * semi_x
    body = _ellipse(x, y, centre, (semi_x * breathing, semi_y * breathing))
    inner = _ellipse(x, y, centre, (semi_x * breathing - fat_mm, semi_y * breathing - fat_mm))
    return body, inner, (*centre, semi_x, semi_y)


def _spine(
    rng: np.random.Generator, grid: Grid, body_axes: BodyAxes, inner: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The spinal column behind the body centre, and its bone: vertebrae separated by soft discs."""
    z, y, x = grid
    centre_x, centre_y, semi_x, semi_y = body_axes
    centre = (centre_x + rng.uniform(-0.03, 0.03) * semi_x, centre_y + 0.55 * semi_y)
    radius_mm = rng.uniform(0.12, 0.16) * semi_y
    spine = _ellipse(x, y, centre, (radius_mm, radius_mm)) & inner
    period_mm, disc_mm = rng.uniform(18.0, 26.0), rng.uniform(3.0, 5.0)
    disc = np.mod(z - rng.uniform(0, period_mm), period_mm) < disc_mm
    return spine, spine & ~disc


def _organ(
    rng: np.random.Generator, grid: Grid, body_axes: BodyAxes, allowed: np.ndarray
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A smooth irregular organ inside ``allowed``, and its semi-axes ``(z, y, x)`` in mm.

    The surface is an ellipsoid whose normalised radius is perturbed by three random plane waves,
    ``|q| + sum_j A_j sin(k_j . q + phi_j) <= 1``. With ``sum_j A_j |k_j| < 1`` the radius grows
    monotonically along every ray, so the blob is star-shaped and in one piece before clipping.
    """
    centre_x, centre_y, semi_x, semi_y = body_axes
    half_length_mm = (grid[0].max() - grid[0].min()) / 2
    side = rng.choice([-1.0, 1.0])
    centre = (
        rng.uniform(-0.15, 0.15) * half_length_mm,
        centre_y - rng.uniform(0.05, 0.2) * semi_y,
        centre_x + side * rng.uniform(0.15, 0.25) * semi_x,
    )
    axes_mm = (
        rng.uniform(0.45, 0.6) * half_length_mm,
        rng.uniform(0.5, 0.6) * semi_y,
        rng.uniform(0.45, 0.55) * semi_x,
    )
    q = [(coord - c) / a for coord, c, a in zip(grid, centre, axes_mm, strict=True)]
    level = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    for _ in range(3):
        wave = rng.normal(size=3)
        wave *= rng.uniform(2.0, 4.0) / np.linalg.norm(wave)
        level = level + rng.uniform(0.04, 0.08) * np.sin(
            wave[0] * q[0] + wave[1] * q[1] + wave[2] * q[2] + rng.uniform(0, 2 * np.pi)
        )
    organ = (level <= 1) & allowed
    return _largest_component(organ), axes_mm


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Clipping the organ to the body can cut off a sliver; keep one piece."""
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    return components == 1 + int(np.argmax(sizes))


def _tumours(
    rng: np.random.Generator,
    grid: Grid,
    spacing: tuple[float, float, float],
    organ: np.ndarray,
    organ_axes_mm: tuple[float, float, float],
) -> np.ndarray:
    """One to three separate ellipsoidal tumours, every voxel with all 26 neighbours in the organ.

    Semi-axes are 3-8 mm, at most 0.4 of the organ's, and at least 2.5 voxels in-plane and 1.5
    voxels across slices so a network can see them. A second or third tumour that finds no room
    apart from the others is left out. Returns a ``(Z, Y, X)`` bool mask.
    """
    # Tumour voxels may only lie where the whole 3x3x3 neighbourhood is organ.
    core = ndimage.binary_erosion(organ, structure=_CUBE)
    floor_mm = np.array([1.5, 2.5, 2.5]) * np.array(spacing)
    tumour = np.zeros(organ.shape, dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        semi_mm = rng.uniform(3.0, 8.0) * rng.uniform(0.85, 1.15, size=3)
        semi_mm = np.maximum(np.minimum(semi_mm, 0.4 * np.array(organ_axes_mm)), floor_mm)
        room = core & ~ndimage.binary_dilation(tumour, structure=_CUBE)  # never touch an earlier tumour
        centre = _fitting_centre(rng, room, spacing, semi_mm, roomiest_if_none=not tumour.any())
        if centre is None:
            continue
        q2 = sum(((coord - coord.ravel()[c]) / a) ** 2 for coord, c, a in zip(grid, centre, semi_mm, strict=True))
        tumour |= (q2 <= 1) & room
    return tumour


def _fitting_centre(
    rng: np.random.Generator,
    room: np.ndarray,
    spacing: tuple[float, float, float],
    semi_mm: np.ndarray,
    roomiest_if_none: bool,
) -> tuple[int, int, int] | None:
    """A random voxel of ``room`` around which the ellipsoid ``semi_mm`` lies wholly in ``room``.

    In coordinates scaled by the semi-axes the ellipsoid is the unit ball, so a centre fits where the
    scaled distance to the nearest voxel outside ``room`` exceeds 1. When none fits: the roomiest
    voxel if ``roomiest_if_none``, else None.
    """
    if not room.any():
        return None
    box = ndimage.find_objects(room.astype(np.uint8))[0]
    padded = np.pad(room[box], 1)  # the box edge counts as outside
    distance = ndimage.distance_transform_edt(padded, sampling=np.array(spacing) / semi_mm)[1:-1, 1:-1, 1:-1]
    candidates = np.flatnonzero(distance > 1)
    if len(candidates):
        flat = candidates[rng.integers(len(candidates))]
    elif roomiest_if_none:
        flat = int(np.argmax(distance))
    else:
        return None
    local = np.unravel_index(flat, distance.shape)
    return tuple(int(i + s.start) for i, s in zip(local, box, strict=True))  # type: ignore[return-value]


def _acquire(rng: np.random.Generator, hu: np.ndarray, fov: np.ndarray, noise_hu: float) -> np.ndarray:
    """Partial-volume blur, then noise, then integer HU; 0 outside the reconstruction circle ``fov``."""
    blurred = ndimage.gaussian_filter(hu, sigma=rng.uniform(0.5, 0.8))
    noisy = blurred + rng.normal(0.0, noise_hu, size=hu.shape)
    image = np.rint(np.clip(noisy, *CT_RANGE_HU)).astype(np.float32)
    image[:, ~fov[0]] = 0.0
    return image


def _draw_geometry(
    rng: np.random.Generator, index: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> Geometry:
    """Identity geometry, or for every fourth case a flip or small rotation about z and a table offset."""
    if index % OBLIQUE_EVERY != 1:
        return Geometry.identity(spacing)
    kind = int(rng.integers(3))
    if kind == 0:
        direction = np.diag([1.0, -1.0, -1.0])
    elif kind == 1:
        direction = np.diag([-1.0, -1.0, 1.0])
    else:
        angle = math.radians(rng.uniform(5.0, 15.0) * rng.choice([-1.0, 1.0]))
        cos, sin = math.cos(angle), math.sin(angle)
        direction = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    # Place the volume centre at a random table position; the origin is voxel (0, 0, 0), physical (x, y, z).
    half_extent_xyz = np.array(spacing[::-1]) * (np.array(shape[::-1]) - 1) / 2
    centre_xyz = rng.uniform(-60.0, 60.0, size=3)
    origin = np.round((centre_xyz - direction @ half_extent_xyz) * 64) / 64  # exact in NIfTI's float32
    return Geometry(spacing, tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))  # type: ignore[arg-type]
