"""Read and write images with their geometry.

Arrays inside clinix are ``(C, Z, Y, X)`` in SimpleITK's numpy order. ``Geometry.spacing`` is stored in
the same axis order ``(z, y, x)``; ``origin`` and ``direction`` stay in SimpleITK's physical order
``(x, y, z)`` (they are physical vectors, not array axes) and are restored exactly on write.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from clinix.errors import DatasetError
from clinix.io.atomic import atomic_files, atomic_path
from clinix.io.itk import itk_call
from clinix.io.voxel_data import IncompleteData, is_gipl, is_nifti, nonfinite_nifti_voxels, scan_voxel_data

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".gipl", ".gipl.gz", ".nhdr")
MULTI_FILE_ENDINGS = (".mhd", ".nhdr")  # a header beside a separate data file
_voxel_scans = ThreadPoolExecutor(max_workers=2, thread_name_prefix="clinix-voxel-scan")


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies in space.

    Attributes:
        spacing: voxel size in mm, array axis order ``(z, y, x)``.
        origin: physical position of voxel (0, 0, 0), SimpleITK order ``(x, y, z)``.
        direction: 3x3 direction cosines, row-major, SimpleITK order (9 values).
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Geometry:
        return cls(
            spacing=tuple(float(v) for v in data["spacing"]),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in data["origin"]),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in data["direction"]),
        )

    @classmethod
    def identity(cls, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Geometry:
        return cls(tuple(float(s) for s in spacing), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))  # type: ignore[arg-type]


def has_image_ending(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_ENDINGS)


def strip_ending(name: str) -> str:
    """``case_0000.nii.gz`` -> ``case_0000``."""
    lower = name.lower()
    for ending in sorted(IMAGE_ENDINGS, key=len, reverse=True):
        if lower.endswith(ending):
            return name[: -len(ending)]
    return name


def _read_checked(path: Path) -> tuple[sitk.Image, int]:
    """SimpleITK's read of ``path``, and the number of non-finite voxels the checks of voxel_data.py found.

    A NIfTI file's check runs in a thread beside SimpleITK's read, which releases the GIL: on two cores
    it adds no time (``bench/read.py``). Its error, when it finds one, says more than SimpleITK's.
    """
    if not path.is_file():
        raise DatasetError(path, "file not found")
    scan = _voxel_scans.submit(scan_voxel_data, path) if is_nifti(path) else None
    try:
        image = itk_call(path, lambda: sitk.ReadImage(str(path)))
    except DatasetError:
        if scan is not None and isinstance(scan.exception(), IncompleteData):
            raise scan.exception() from None  # "cut short" says more than SimpleITK's failure
        raise
    if scan is not None:
        return image, scan.result()
    if is_gipl(path):
        return image, scan_voxel_data(path, gipl_data_bytes=sitk.GetArrayViewFromImage(image).nbytes)
    return image, 0


def read_geometry(path: str | Path) -> tuple[tuple[int, ...], int, Geometry]:
    """Read only the header: ``(spatial shape (z, y, x), channels, geometry)``."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if not path.is_file():
        raise DatasetError(path, "file not found")
    itk_call(path, reader.ReadImageInformation)
    size = reader.GetSize()
    dim = reader.GetDimension()
    channels = reader.GetNumberOfComponents()
    if dim == 4:
        channels *= size[3]
    elif dim != 3:
        raise DatasetError(path, f"is a {dim}D image; clinix reads 3D images (or 4D with channels last)")
    spacing, origin, direction = _geometry_3d(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), dim)
    return (size[2], size[1], size[0]), channels, Geometry(spacing, origin, direction)


def _geometry_3d(
    spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...], dim: int
) -> tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, ...]]:
    """Keep the three spatial axes of a 3D or 4D header; reverse spacing to array order (z, y, x)."""
    if dim == 4:
        direction = tuple(direction[r * 4 + c] for r in range(3) for c in range(3))
    sx, sy, sz = (float(v) for v in spacing[:3])
    ox, oy, oz = (float(v) for v in origin[:3])
    return (sz, sy, sx), (ox, oy, oz), tuple(float(v) for v in direction)


def read_image(path: str | Path, dtype: np.dtype | type | None = np.float32) -> tuple[np.ndarray, Geometry]:
    """Read any SimpleITK-readable 3D image (or 4D, channels in the 4th axis, or vector pixels).

    Returns:
        array: ``(C, Z, Y, X)``; C = 1 for a plain 3D image. Cast to ``dtype`` unless it is None.
        geometry: spacing ``(z, y, x)``, origin and direction as SimpleITK gives them.
    """
    path = Path(path)
    image, nonfinite = _read_checked(path)
    dim = image.GetDimension()
    if dim not in (3, 4):
        raise DatasetError(path, f"is a {dim}D image; clinix reads 3D images (or 4D with channels last)")
    array = sitk.GetArrayFromImage(image)
    if nonfinite and array.dtype.kind == "f":  # NIfTI: SimpleITK read them as 0
        where, values = nonfinite_nifti_voxels(path, array.shape, image.GetNumberOfComponentsPerPixel())
        array.reshape(-1)[where] = values
    if image.GetNumberOfComponentsPerPixel() > 1:
        if dim == 4:
            raise DatasetError(path, "4D images with vector pixels are not supported")
        array = np.moveaxis(array, -1, 0)  # (Z, Y, X, C) -> (C, Z, Y, X)
    elif dim == 3:
        array = array[None]
    spacing, origin, direction = _geometry_3d(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), dim)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return np.ascontiguousarray(array), Geometry(spacing, origin, direction)


def require_finite(path: str | Path, image: np.ndarray) -> None:
    """Raise ``DatasetError`` naming ``path`` when ``image`` holds NaN or infinite voxels."""
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise DatasetError(path, f"has {bad:,} NaN or infinite voxels")


def read_label(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a label map as ``(Z, Y, X)`` integers (int16 unless the values need more)."""
    array, geometry = read_image(path, dtype=None)
    path = Path(path)
    if array.shape[0] != 1:
        raise DatasetError(path, f"a label map must have one channel, found {array.shape[0]}")
    label = array[0]
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)):
            raise DatasetError(path, "label map contains NaN or infinite values")
        if not np.all(label == np.round(label)):
            raise DatasetError(path, "label map has non-integer values")
    if label.size and (label.min() < np.iinfo(np.int16).min or label.max() > np.iinfo(np.int16).max):
        return label.astype(np.int32), geometry
    return label.astype(np.int16), geometry


def write_image(path: str | Path, array: np.ndarray, geometry: Geometry, is_label: bool = False) -> Path:
    """Write ``(Z, Y, X)`` or ``(C, Z, Y, X)`` with the given geometry, atomically.

    Labels are stored as uint8 (or uint16 when a value exceeds 255); several channels as a vector image.
    """
    path = Path(path)
    data = np.asarray(array)
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if is_label:
        data = data.astype(np.uint8 if data.size == 0 or data.max() < 256 else np.uint16)
    if data.ndim == 4:
        image = sitk.GetImageFromArray(np.moveaxis(data, 0, -1), isVector=True)
    elif data.ndim == 3:
        image = sitk.GetImageFromArray(data)
    else:
        raise ValueError(f"expected a (Z, Y, X) or (C, Z, Y, X) array, got shape {data.shape}")
    sz, sy, sx = geometry.spacing
    image.SetSpacing((sx, sy, sz))
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    if path.name.lower().endswith(MULTI_FILE_ENDINGS):  # the header names its data file: write both by final name
        with atomic_files(path) as folder:
            itk_call(path, lambda: sitk.WriteImage(image, str(folder / path.name), useCompression=True))
        return path
    suffix = next((e for e in sorted(IMAGE_ENDINGS, key=len, reverse=True) if path.name.lower().endswith(e)), "")
    with atomic_path(path, suffix=suffix) as tmp:
        itk_call(path, lambda: sitk.WriteImage(image, str(tmp), useCompression=True))
    return path
