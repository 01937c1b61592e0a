"""Benchmark reading a CT-sized image; print JSON.

What clinix's reader costs over SimpleITK's alone: ``clinix.io.image.read_image`` captures ITK's messages
and, for NIfTI (which SimpleITK reads silently wrong when cut short, and whose NaN it turns into 0), reads
the voxel data a second time (voxel_data.py), in a thread beside SimpleITK's read, to check it is all
there and count its NaN. The baseline, in the same run on the same files, is ``sitk.ReadImage`` +
``GetArrayFromImage``.

Files (written once, not timed): a chest-CT-sized volume of 512 × 512 × ``--slices`` voxels as int16
(CT's HU: the common case) and as float32 (an MR map: its NaN are counted), each as ``.nii.gz``, ``.nii``
and ``.mha`` (no second read: the baseline of formats that need none). Best of ``--repeats`` reads.

    python bench/read.py [--quick] [--slices 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from clinix.io.image import Geometry, read_image, write_image


def best_seconds(read: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        read()
        times.append(time.perf_counter() - began)
    return min(times)


def ct_like(shape: tuple[int, int, int], dtype: type) -> np.ndarray:
    """Air outside a body ellipse, soft tissue with noise inside: compresses like a CT does."""
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((y - shape[1] / 2) / (shape[1] * 0.42)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.35)) ** 2 <= 1
    noise = np.random.default_rng(0).normal(40, 25, shape)
    return np.where(body, noise, -1000).astype(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 × 128 × 128 voxels, 1 repeat")
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = (16, 128, 128) if args.quick else (args.slices, 512, 512)
    repeats = 1 if args.quick else args.repeats
    results = []
    with tempfile.TemporaryDirectory(prefix="clinix-bench-read-") as folder:
        for dtype in (np.int16, np.float32):
            volume = ct_like(shape, dtype)
            for ending in (".nii.gz", ".nii", ".mha"):
                path = Path(folder) / f"ct_{np.dtype(dtype).name}{ending}"
                write_image(path, volume, Geometry.identity((2.5, 0.7, 0.7)))
                baseline = best_seconds(lambda p=path: sitk.GetArrayFromImage(sitk.ReadImage(str(p))), repeats)
                clinix = best_seconds(lambda p=path: read_image(p, dtype=None), repeats)
                results.append(
                    {
                        "file": path.name,
                        "megabytes_on_disk": round(path.stat().st_size / 2**20, 1),
                        "simpleitk_seconds": round(baseline, 3),
                        "clinix_seconds": round(clinix, 3),
                        "clinix_vs_simpleitk": round(clinix / baseline, 2),
                    }
                )
    print(json.dumps({"shape": list(shape), "repeats": repeats, "reads": results}, indent=2))


if __name__ == "__main__":
    main()
