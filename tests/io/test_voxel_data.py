"""The checks SimpleITK leaves out: NIfTI and GIPL files cut short, corrupt gzip data, NIfTI's NaN voxels."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from clinix.errors import DatasetError
from clinix.io.image import Geometry, read_image, write_image
from clinix.io.voxel_data import IncompleteData, read_nifti_header, scan_voxel_data

SHAPE = (5, 6, 7)  # z, y, x
GEOMETRY = Geometry((2.0, 1.0, 0.5), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def noise(dtype: type = np.float32, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 30, shape).astype(dtype)


def nifti_bytes(
    voxels: np.ndarray, version: int = 1, endian: str = "<", slope: float = 0.0, inter: float = 0.0
) -> bytes:
    """A NIfTI-1 or -2 file of float32 ``voxels`` (array order (..., z, y, x)), written field by field."""
    dims = voxels.shape[::-1]
    if version == 1:
        header = bytearray(352)
        struct.pack_into(endian + "i", header, 0, 348)
        struct.pack_into(endian + "8h", header, 40, len(dims), *dims, *[1] * (7 - len(dims)))
        struct.pack_into(endian + "2h", header, 70, 16, 32)
        struct.pack_into(endian + "8f", header, 76, 1.0, *[1.0] * 7)
        struct.pack_into(endian + "3f", header, 108, 352.0, slope, inter)
        header[344:348] = b"n+1\0"
    else:
        header = bytearray(544)
        struct.pack_into(endian + "i", header, 0, 540)
        header[4:12] = b"n+2\0\r\n\x1a\n"
        struct.pack_into(endian + "2h", header, 12, 16, 32)
        struct.pack_into(endian + "8q", header, 16, len(dims), *dims, *[1] * (7 - len(dims)))
        struct.pack_into(endian + "8d", header, 104, 1.0, *[1.0] * 7)
        struct.pack_into(endian + "q2d", header, 168, 544, slope, inter)
    return bytes(header) + voxels.astype(endian + "f4").tobytes()


@pytest.mark.parametrize("ending", [".nii", ".nii.gz", ".gipl", ".gipl.gz"])
def test_an_intact_file_passes_and_every_cut_is_caught(tmp_path: Path, ending: str) -> None:
    path = tmp_path / f"image{ending}"
    write_image(path, noise(), GEOMETRY)
    intact = path.read_bytes()
    data_bytes = noise().nbytes
    assert scan_voxel_data(path, gipl_data_bytes=data_bytes) == 0
    for keep in (len(intact) - 1, len(intact) // 2, 400):
        path.write_bytes(intact[:keep])
        with pytest.raises(IncompleteData, match=r": truncated: "):
            scan_voxel_data(path, gipl_data_bytes=data_bytes)


def test_the_reader_refuses_a_nifti_simpleitk_would_fill_with_zeros(tmp_path: Path) -> None:
    path = tmp_path / "cut.nii"
    path.write_bytes(nifti_bytes(noise())[: 352 + 100])
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(path))) == 0).mean() > 0.8  # what SimpleITK does
    with pytest.raises(IncompleteData, match="truncated: it holds 100 of the 840 bytes of voxel data"):
        read_image(path)


def test_several_gzip_members_and_trailing_zeros_are_read_as_gzip_reads_them(tmp_path: Path) -> None:
    raw = nifti_bytes(noise())
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]) + b"\0" * 16)
    assert scan_voxel_data(path) == 0
    np.testing.assert_array_equal(read_image(path)[0][0], noise())


def test_a_flipped_byte_fails_the_crc_check(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(nifti_bytes(noise()), mtime=0))
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    path = tmp_path / "flipped.nii.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(IncompleteData, match=r"corrupt gzip data \(.*incorrect data check"):
        scan_voxel_data(path)


@pytest.mark.parametrize(("version", "endian"), [(1, "<"), (1, ">"), (2, "<"), (2, ">")])
def test_nan_and_inf_keep_their_values_and_places_whatever_the_header(
    tmp_path: Path, version: int, endian: str
) -> None:
    voxels = noise()
    voxels[0, 0, 0], voxels[2, 3, 4], voxels[4, 5, 6] = np.nan, np.inf, -np.inf
    path = tmp_path / "nan.nii.gz"
    path.write_bytes(gzip.compress(nifti_bytes(voxels, version, endian)))
    assert read_nifti_header(path).dims == (7, 6, 5)
    assert scan_voxel_data(path) == 3
    if version == 2:  # SimpleITK 2.5 reads no NIfTI-2 at all
        with pytest.raises(DatasetError, match="a NIfTI-2 file, which SimpleITK does not read; save it as NIfTI-1"):
            read_image(path)
        return
    assert np.count_nonzero(~np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))) == 0  # SimpleITK: 0
    image, _ = read_image(path)
    np.testing.assert_array_equal(image[0], voxels)  # NaN compare equal here: same places, same values


def test_scaled_inf_follows_the_slope(tmp_path: Path) -> None:
    voxels = np.ones(SHAPE, dtype=np.float32)
    voxels[1, 1, 1] = np.inf
    path = tmp_path / "scaled.nii"
    path.write_bytes(nifti_bytes(voxels, slope=-2.0, inter=5.0))
    image, _ = read_image(path)
    assert image[0, 1, 1, 1] == -np.inf
    assert image[0, 0, 0, 0] == pytest.approx(3.0)


def test_nan_of_a_4d_nifti_land_in_their_channel(tmp_path: Path) -> None:
    voxels = noise(shape=(2, *SHAPE))  # two channels in the 4th NIfTI axis
    voxels[1, 2, 3, 4] = np.nan
    path = tmp_path / "channels.nii"
    path.write_bytes(nifti_bytes(voxels))
    image, _ = read_image(path)
    assert image.shape == (2, *SHAPE)
    assert np.argwhere(np.isnan(image)).tolist() == [[1, 2, 3, 4]]


def test_a_file_without_a_nifti_header_says_so(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii"
    path.write_bytes(b"x" * 600)
    with pytest.raises(DatasetError, match=r"not a NIfTI file \(no NIfTI-1 or NIfTI-2 header at its start\)"):
        read_nifti_header(path)


def test_a_large_mostly_empty_volume_is_scanned_in_bounded_chunks(tmp_path: Path) -> None:
    # 64 MB of zeros compress to ~64 kB: a decompression bomb must not be inflated in one piece
    path = tmp_path / "zeros.nii.gz"
    header = nifti_bytes(np.zeros((1, 1, 1), np.float32))[:352]
    header = header[:40] + struct.pack("<8h", 3, 4096, 4096, 1, 1, 1, 1, 1) + header[56:]
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    body = compressor.compress(header) + compressor.compress(bytes(4096 * 4096 * 4)) + compressor.flush()
    path.write_bytes(body)
    assert scan_voxel_data(path) == 0
