"""A deterministic synthetic brain-tumour MRI dataset shaped like BraTS, for the region demo and tests.

Each case is a skull-stripped brain at 1 mm isotropic, exactly 0 outside it (so the nonzero-mask
normalisation rule applies), in four co-registered channels with the contrasts of the BraTS sequences:
white and grey matter, two ventricles of cerebrospinal fluid, and one glioma made of peritumoural
edema around a tumour core, whose rim enhances (bright on T1ce only, like gadolinium uptake) around a
necrotic centre. Labels follow nnU-Net's conversion of BraTS (its Dataset137): 1 edema, 2 necrosis
(non-enhancing core), 3 enhancing tumour; the regions scored are whole tumour [1, 2, 3], tumour core
[2, 3] and enhancing tumour [3], with ``regions_class_order`` [1, 2, 3]. Each channel gets its own smooth
multiplicative bias field, partial-volume blur and noise.

Two layouts: nnU-Net v2 raw in region form (``imagesTr/brats_XXX_0000..0003.nii.gz``), and with
``layout="msd"`` the Medical Segmentation Decathlon's Task01_BrainTumour (one 4D NIfTI per case, channels
in the order FLAIR, T1w, t1gd, T2w; ``modality`` and ``labels`` as ``{value: name}``; no regions, which
the Decathlon does not declare). Case ``index`` is drawn from ``default_rng([seed, index])`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from clinix.data.phantom import prepare_phantom_folder
from clinix.errors import ClinixError
from clinix.io.atomic import atomic_path, write_json
from clinix.io.image import Geometry, write_image

BRATS_NAME = "ClinixBraTSPhantom"
SEQUENCES = ("T1", "T1ce", "T2", "FLAIR")  # nnU-Net's channel order
MSD_ORDER = ("FLAIR", "T1", "T1ce", "T2")  # Task01_BrainTumour's (FLAIR, T1w, t1gd, T2w)
MSD_MODALITY_NAMES = {"FLAIR": "FLAIR", "T1": "T1w", "T1ce": "t1gd", "T2": "T2w"}
EDEMA, NECROSIS, ENHANCING = 1, 2, 3
REGION_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
MSD_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
# Relative signal of each tissue per sequence (white matter, grey matter, CSF, edema, necrosis, enhancing).
TISSUES = ("wm", "gm", "csf", "edema", "necrosis", "enhancing")
CONTRAST = {
    "T1": (1.00, 0.80, 0.30, 0.65, 0.45, 0.70),
    "T1ce": (1.00, 0.80, 0.30, 0.65, 0.40, 1.70),  # gadolinium: only the enhancing rim lights up
    "T2": (0.60, 0.80, 1.70, 1.35, 1.55, 1.05),
    "FLAIR": (0.60, 0.78, 0.20, 1.55, 1.05, 1.15),  # fluid suppressed, edema bright
}
SIZES = {"default": ((44, 52), (52, 60)), "tiny": ((24, 28), (28, 32))}  # (z range, y/x range), 1 mm voxels
FILE_ENDING = ".nii.gz"


def make_brats_case(index: int, seed: int = 0, size: str = "default") -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Draw case ``index``: image ``(4, Z, Y, X)`` float32 in ``SEQUENCES`` order, label ``(Z, Y, X)`` uint8
    (0, edema 1, necrosis 2, enhancing 3), 1 mm isotropic identity geometry."""
    if size not in SIZES:
        raise ClinixError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    rng = np.random.default_rng([seed, index])
    (z_lo, z_hi), (xy_lo, xy_hi) = SIZES[size]
    shape = (
        int(rng.integers(z_lo, z_hi + 1)),
        int(rng.integers(xy_lo, xy_hi + 1)),
        int(rng.integers(xy_lo, xy_hi + 1)),
    )
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = [(n - 1) / 2 for n in shape]
    brain = _blob(rng, grid, centre, [0.44 * n for n in shape], waves=0.05)
    white = _blob(rng, grid, centre, [0.3 * n for n in shape], waves=0.08) & brain
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        spot = [centre[0], centre[1] - 0.05 * shape[1], centre[2] + side * 0.1 * shape[2]]
        ventricles |= _blob(rng, grid, spot, [0.12 * shape[0], 0.12 * shape[1], 0.05 * shape[2]], waves=0.1)
    tumour_centre = [c + rng.uniform(-0.15, 0.15) * n for c, n in zip(centre, shape, strict=True)]
    radius = rng.uniform(0.12, 0.17) * min(shape)
    edema = _blob(rng, grid, tumour_centre, [radius * rng.uniform(1.6, 2.0)] * 3, waves=0.12) & brain
    core = _blob(rng, grid, tumour_centre, [radius * rng.uniform(0.9, 1.1)] * 3, waves=0.08) & brain
    necrosis = ndimage.binary_erosion(core, iterations=int(rng.integers(2, 4)))
    tissue = np.where(white, 0, 1)  # white, else grey matter
    tissue[ventricles & brain] = 2
    tissue[edema] = 3
    tissue[core] = 5
    tissue[necrosis] = 4
    label = np.zeros(shape, dtype=np.uint8)
    label[edema], label[core], label[necrosis] = EDEMA, ENHANCING, NECROSIS
    image = np.stack([_sequence(rng, name, tissue, brain) for name in SEQUENCES])
    return image, label, Geometry.identity((1.0, 1.0, 1.0))


def write_brats_dataset(
    out_dir: str | Path,
    cases: int = 8,
    seed: int = 0,
    test_cases: int = 2,
    size: str = "default",
    layout: str = "nnunet",
    overwrite: bool = False,
    on_case: Callable[[str], None] | None = None,
) -> Path:
    """Write the BraTS-like phantom (module docstring): ``cases`` training and ``test_cases`` held-out cases,
    the held-out ones with their labels in ``labelsTs``. Returns ``out_dir``."""
    if layout not in ("nnunet", "msd"):
        raise ClinixError(f"unknown layout {layout!r}; choose nnunet or msd")
    if cases < 1 or test_cases < 0 or seed < 0:
        raise ClinixError(
            f"need at least 1 training case and no negative count or seed, got {cases}, {test_cases}, {seed}"
        )
    out = Path(out_dir)
    prepare_phantom_folder(out, overwrite)
    write_json(out / "dataset.json", _dataset_json(cases, seed, test_cases, size, layout))
    for index in range(cases + test_cases):
        split = "Tr" if index < cases else "Ts"
        image, label, geometry = make_brats_case(index, seed, size)
        if layout == "nnunet":
            case_id = f"brats_{index:03d}"
            for channel, volume in enumerate(image):
                write_image(out / f"images{split}" / f"{case_id}_{channel:04d}{FILE_ENDING}", volume, geometry)
        else:
            case_id = f"BRATS_{index + 1:03d}"
            _write_4d(
                out / f"images{split}" / f"{case_id}{FILE_ENDING}", image[[SEQUENCES.index(n) for n in MSD_ORDER]]
            )
        write_image(out / f"labels{split}" / f"{case_id}{FILE_ENDING}", label, geometry, is_label=True)
        if on_case is not None:
            on_case(case_id)
    return out


def _blob(
    rng: np.random.Generator, grid: list[np.ndarray], centre: list[float], axes: list[float], waves: float
) -> np.ndarray:
    """An ellipsoid whose normalised radius is perturbed by three plane waves of amplitude ~``waves``."""
    q = [(coord - c) / a for coord, c, a in zip(grid, centre, axes, strict=True)]
    level = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    for _ in range(3):
        k = rng.normal(size=3)
        k *= rng.uniform(2.0, 4.0) / np.linalg.norm(k)
        level = level + waves * rng.uniform(0.5, 1.0) * np.sin(
            k[0] * q[0] + k[1] * q[1] + k[2] * q[2] + rng.uniform(0, 6.3)
        )
    return level <= 1


def _sequence(rng: np.random.Generator, name: str, tissue: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """One channel: tissue signal × a smooth bias field, blurred, noisy, scaled to scanner-like units; 0 outside."""
    signal = np.asarray(CONTRAST[name], dtype=np.float32)[tissue]
    axes = [np.linspace(-1.0, 1.0, n) for n in tissue.shape]
    z, y, x = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    bias = 1 + 0.15 * (rng.uniform(-1, 1) * z + rng.uniform(-1, 1) * y + rng.uniform(-1, 1) * x)
    blurred = ndimage.gaussian_filter(signal * bias, sigma=0.7)
    noisy = blurred + rng.normal(0.0, 0.06, size=tissue.shape)
    image = np.maximum(noisy * rng.uniform(400.0, 900.0), 1.0).astype(np.float32)  # MR magnitude: positive
    image[~brain] = 0.0  # skull-stripped: exactly 0 outside the brain
    return image


def _write_4d(path: Path, channels: np.ndarray) -> None:
    """A 4D NIfTI of ``(C, Z, Y, X)``: channels in the 4th axis, as the Decathlon stores them."""
    image = sitk.JoinSeries([sitk.GetImageFromArray(channel) for channel in channels])
    image.SetSpacing((1.0, 1.0, 1.0, 1.0))
    with atomic_path(path, suffix=FILE_ENDING) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def _dataset_json(cases: int, seed: int, test_cases: int, size: str, layout: str) -> dict:
    phantom = {"kind": "brats", "seed": seed, "size": size, "test_cases": test_cases, "layout": layout}
    description = (
        "Synthetic BraTS-like brain MRI: edema (1), necrosis (2), enhancing tumour (3); imagesTs/labelsTs "
        "hold the held-out cases. Written by 'clinix phantom --kind brats'."
    )
    if layout == "nnunet":
        return {
            "name": BRATS_NAME, "description": description,
            "channel_names": {str(c): name for c, name in enumerate(SEQUENCES)},
            "labels": REGION_LABELS, "regions_class_order": [1, 2, 3],
            "numTraining": cases, "file_ending": FILE_ENDING, "phantom": phantom,
        }  # fmt: skip
    training = [
        {"image": f"./imagesTr/BRATS_{i + 1:03d}.nii.gz", "label": f"./labelsTr/BRATS_{i + 1:03d}.nii.gz"}
        for i in range(cases)
    ]
    return {
        "name": BRATS_NAME, "description": description,
        "modality": {str(c): MSD_MODALITY_NAMES[name] for c, name in enumerate(MSD_ORDER)},
        "labels": MSD_LABELS, "numTraining": cases, "numTest": test_cases, "training": training,
        "test": [f"./imagesTs/BRATS_{i + 1:03d}.nii.gz" for i in range(cases, cases + test_cases)],
        "phantom": phantom,
    }  # fmt: skip
