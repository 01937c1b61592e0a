"""Checks of voxel data that SimpleITK would read silently wrong (measured with SimpleITK 2.5).

- A NIfTI or GIPL file cut short (a download or copy that stopped) reads without an error: the missing
  voxels come back as zeros. NRRD and MetaImage raise instead, so they need nothing here.
- SimpleITK's NIfTI reader returns NaN and ±inf voxels as 0, whichever tool wrote the file, so a NaN
  check on the array it returns never fires.

``scan_voxel_data`` reads the file once, without keeping it: gzip data must decompress to the end of its
stream (and pass its CRC check), the voxel bytes the header announces must all be there, and the float
voxels of a NIfTI file are counted when not finite. ``nonfinite_nifti_voxels`` then recovers those values,
in SimpleITK's array layout, for the rare file that has some.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinix.errors import DatasetError

GZIP_MAGIC = b"\x1f\x8b"
GIPL_HEADER_BYTES = 256
CHUNK_BYTES = 1 << 20
NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype code -> numpy type of the voxels


class IncompleteData(DatasetError):
    """The file ends before its data does, or its gzip data is corrupt."""


@dataclass(frozen=True)
class NiftiHeader:
    """What the voxel checks need of a NIfTI-1 or NIfTI-2 header.

    ``dims`` in file order (x fastest), ``endian`` "<" or ">".
    """

    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    vox_offset: int
    scl_slope: float
    scl_inter: float
    endian: str
    version: int = 1

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) * self.bitpix // 8

    @property
    def float_dtype(self) -> np.dtype | None:
        """The numpy dtype of float voxels, None for any other datatype."""
        code = NIFTI_FLOAT_TYPES.get(self.datatype)
        return None if code is None else np.dtype(self.endian + code)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def is_gipl(path: Path) -> bool:
    return path.name.lower().endswith((".gipl", ".gipl.gz"))


def is_gzip(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def scan_voxel_data(path: Path, gipl_data_bytes: int | None = None) -> int:
    """Check that ``path`` holds all its voxel data; return its number of non-finite float voxels (NIfTI).

    ``gipl_data_bytes``: the voxel bytes of a GIPL file (from its header, as SimpleITK reads it).
    Raises ``IncompleteData`` for a truncated file or corrupt gzip data, ``DatasetError`` for a NIfTI file
    without a valid header.
    """
    if is_nifti(path):
        header = read_nifti_header(path)
        expected, dtype, offset = header.vox_offset + header.data_bytes, header.float_dtype, header.vox_offset
    else:
        expected, dtype, offset = GIPL_HEADER_BYTES + (gipl_data_bytes or 0), None, GIPL_HEADER_BYTES
    counter = _NonFiniteCounter(dtype, offset, expected)
    if dtype is None and not is_gzip(path):  # nothing to count: the size on disk is the whole check
        total = path.stat().st_size
    else:
        total = 0
        for chunk in content_chunks(path):
            counter.feed(total, chunk)
            total += len(chunk)
    if total < expected:
        raise IncompleteData(
            path, f"truncated: it holds {max(total - offset, 0):,} of the {expected - offset:,} bytes of voxel data"
        )
    return counter.count


def read_nifti_header(path: Path) -> NiftiHeader:
    """Parse the NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header at the start of the file's content."""
    raw = b""
    for chunk in content_chunks(path):
        raw += chunk
        if len(raw) >= 540:
            break
    for endian in "<>":
        if len(raw) >= 348 and struct.unpack(endian + "i", raw[:4])[0] == 348:
            rank, *dims = struct.unpack(endian + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", raw[70:74])
            vox_offset, slope, inter = struct.unpack(endian + "3f", raw[108:120])
            return _header(rank, dims, datatype, bitpix, vox_offset, slope, inter, endian, path)
        if len(raw) >= 540 and struct.unpack(endian + "i", raw[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", raw[12:16])
            rank, *dims = struct.unpack(endian + "8q", raw[16:80])
            (vox_offset,) = struct.unpack(endian + "q", raw[168:176])
            slope, inter = struct.unpack(endian + "2d", raw[176:192])
            return _header(rank, dims, datatype, bitpix, vox_offset, slope, inter, endian, path, version=2)
    raise DatasetError(path, "not a NIfTI file (no NIfTI-1 or NIfTI-2 header at its start)")


def _header(
    rank: int,
    dims: list[int],
    datatype: int,
    bitpix: int,
    vox_offset: float,
    slope: float,
    inter: float,
    endian: str,
    path: Path,
    version: int = 1,
) -> NiftiHeader:
    if not 1 <= rank <= 7 or any(d < 1 for d in dims[:rank]) or bitpix <= 0:
        raise DatasetError(path, f"not a valid NIfTI header (dim {[rank, *dims]}, bitpix {bitpix})")
    dims = tuple(int(d) for d in dims[:rank])
    return NiftiHeader(dims, datatype, bitpix, int(vox_offset), slope, inter, endian, version)


def nonfinite_nifti_voxels(path: Path, array_shape: tuple[int, ...], components: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a NIfTI file's voxels are NaN or ±inf, and their values (after the header's scaling).

    Args:
        array_shape: the shape of SimpleITK's array of the image (``GetArrayFromImage``).
        components: SimpleITK's components per pixel (NIfTI stores them as the slowest axis; SimpleITK's
            array has them last).

    Returns:
        flat indices into that array, and the values at them.
    """
    header = read_nifti_header(path)
    dtype = header.float_dtype
    if dtype is None:
        return np.empty(0, dtype=np.int64), np.empty(0)
    data = b"".join(content_chunks(path))[header.vox_offset : header.vox_offset + header.data_bytes]
    raw = np.frombuffer(data, dtype=dtype)
    where = np.flatnonzero(~np.isfinite(raw))
    values = raw[where].astype(np.float64)
    if header.scl_slope not in (0.0, 1.0) or (header.scl_slope != 0.0 and header.scl_inter != 0.0):
        values = values * header.scl_slope + header.scl_inter
    if components > 1:  # file order (component slowest) -> SimpleITK's (..., component) order
        per_component = raw.size // components
        where = (where % per_component) * components + where // per_component
    if raw.size != int(np.prod(array_shape)):
        raise DatasetError(path, f"holds {raw.size} voxels, its image {array_shape} (cannot place its NaN voxels)")
    return where, values


class _NonFiniteCounter:
    """Counts non-finite values of ``dtype`` in bytes ``[offset, end)`` of a stream fed chunk by chunk."""

    def __init__(self, dtype: np.dtype | None, offset: int, end: int) -> None:
        self.dtype, self.offset, self.end = dtype, offset, end
        self.count = 0
        self._carry = b""

    def feed(self, position: int, chunk: bytes) -> None:
        if self.dtype is None:
            return
        lo, hi = max(self.offset - position, 0), min(self.end - position, len(chunk))
        if lo >= hi:
            return
        data = self._carry + chunk[lo:hi]
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data[:usable], dtype=self.dtype)
        self.count += int(values.size - np.count_nonzero(np.isfinite(values)))
        self._carry = data[usable:]


def content_chunks(path: Path) -> Iterator[bytes]:
    """The file's content, decompressed when it is gzip data (every member), in bounded chunks.

    Raises ``IncompleteData`` when the gzip stream ends before its end marker or fails its CRC check.
    """
    with path.open("rb") as file:
        if not is_gzip(path):
            while chunk := file.read(CHUNK_BYTES):
                yield chunk
            return
        decompressor, pending, member_ended = None, b"", True
        try:
            while True:
                if len(pending) < len(GZIP_MAGIC):
                    more = file.read(CHUNK_BYTES)
                    if not more and not pending:
                        break
                    pending += more
                    if not more and member_ended:
                        break  # a lone trailing byte
                if member_ended:
                    if pending[: len(GZIP_MAGIC)] != GZIP_MAGIC:
                        break  # bytes after the last member: gzip ignores them too
                    decompressor, member_ended = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16), False
                assert decompressor is not None
                yield decompressor.decompress(pending, CHUNK_BYTES)
                if decompressor.eof:
                    member_ended, pending = True, decompressor.unused_data
                else:
                    pending = decompressor.unconsumed_tail
        except zlib.error as error:
            raise IncompleteData(path, f"corrupt gzip data ({error})") from None
        if not member_ended:
            raise IncompleteData(path, "truncated: its gzip stream ends early (the file was cut short)")
