"""The catalogue of bad inputs and faults, each tried as a user would: ``python -m clinix ...`` in a fresh
process (harness.py). Every entry builds one broken thing and states the exact lines clinix must print.

Faults that need a process to be killed or a loss to turn NaN live beside the code they test:
tests/test_parallel.py (a worker killed by SIGKILL or SIGSEGV, a parent killed with its workers running)
and tests/train/test_guards.py (a NaN loss, non-finite weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from clinix.data.brats import write_brats_dataset
from clinix.io.atomic import write_json
from clinix.io.image import Geometry, read_label, write_image
from clinix.plan import plan_experiment
from clinix.plan.model import load_plan
from tests.builders import GEOMETRY, SHAPE, case_arrays, write_nnunet
from tests.infer.test_predictor import save_checkpoint, tiny_network, tiny_plan
from tests.reliability.harness import Fault, check_fault
from tests.train.test_trainer import build_tiny_workdir

FaultBuilder = Callable[[Path], Fault]
NO_IMAGE = "label file without an image: imagesTr/{}_0000.nii.gz not found"
CATALOGUE: list[FaultBuilder] = []


def fault(builder: FaultBuilder) -> FaultBuilder:
    CATALOGUE.append(builder)
    return builder


def dataset(tmp: Path, **options: object) -> Path:
    return write_nnunet(tmp / "Dataset001_Tiny", **options)  # type: ignore[arg-type]


def edit_json(path: Path, **changes: object) -> None:
    content = json.loads(path.read_text())
    content.update(changes)
    path.write_text(json.dumps(content))


def cut(path: Path, keep: int | float) -> None:
    """Keep the first ``keep`` bytes (an int) or that fraction of the file (a float)."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


def noisy_image(path: Path, geometry: Geometry = GEOMETRY) -> None:
    """A case image whose voxels do not compress away, so that half a file is half the voxels."""
    image = np.random.default_rng(0).normal(100, 20, SHAPE).astype(np.float32)
    write_image(path, image, geometry)


def nifti_by_another_tool(path: Path, voxels: np.ndarray) -> None:
    """A float32 NIfTI-1 file written byte by byte, as nibabel or FSL would write it (no SimpleITK)."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *voxels.shape[::-1], 1, 1, 1, 1)
    struct.pack_into("<2h", header, 70, 16, 32)  # datatype float32, 32 bits
    struct.pack_into("<8f", header, 76, 1.0, 0.75, 0.75, 2.5, 1.0, 1.0, 1.0, 1.0)  # pixdim
    struct.pack_into("<3f", header, 108, 352.0, 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    # qform: the grid of GEOMETRY (ITK's LPS origin (10, -5, 3), identity direction) in NIfTI's RAS terms,
    # a half turn about z (quaternion b, c, d = 0, 0, 1) and the origin's x and y negated
    struct.pack_into("<h", header, 252, 1)
    struct.pack_into("<6f", header, 256, 0.0, 0.0, 1.0, -10.0, 5.0, 3.0)
    header[344:348] = b"n+1\0"
    data = bytes(header) + voxels.astype("<f4").tobytes()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


# --- dataset.json and the folder layout ------------------------------------------------------------------


@fault
def missing_dataset_folder(tmp: Path) -> Fault:
    return Fault(["validate", tmp / "nowhere"], errors=[f"{tmp / 'nowhere'}: dataset folder not found"])


@fault
def missing_dataset_json(tmp: Path) -> Fault:
    root = dataset(tmp)
    (root / "dataset.json").unlink()
    return Fault(["fingerprint", root, "-w", tmp / "w"], errors=[f"{root / 'dataset.json'}: missing dataset.json"])


@fault
def dataset_json_is_not_json(tmp: Path) -> Fault:
    root = dataset(tmp)
    (root / "dataset.json").write_text('{"labels": ')
    return Fault(["validate", root], errors=[f"{root / 'dataset.json'}: is not valid JSON (…"])


@fault
def dataset_json_lacks_keys(tmp: Path) -> Fault:
    root = dataset(tmp)
    content = json.loads((root / "dataset.json").read_text())
    del content["labels"], content["file_ending"]
    (root / "dataset.json").write_text(json.dumps(content))
    meta = root / "dataset.json"
    return Fault(["validate", root], errors=[f"{meta}: missing key 'labels'", f"{meta}: missing key 'file_ending'"])


@fault
def num_training_disagrees(tmp: Path) -> Fault:
    root = dataset(tmp)
    edit_json(root / "dataset.json", numTraining=5)
    return Fault(["validate", root], errors=[f"{root / 'dataset.json'}: numTraining is 5 but 3 cases were found"])


@fault
def labels_written_value_to_name(tmp: Path) -> Fault:
    root = dataset(tmp)
    edit_json(root / "dataset.json", labels={"0": "background", "1": "organ", "2": "tumour"})
    message = "'labels' maps values to names (v1 style); write {name: value} instead"
    return Fault(["plan", root, "-w", tmp / "w"], errors=[f"{root / 'dataset.json'}: {message}"])


@fault
def labels_not_consecutive(tmp: Path) -> Fault:
    root = dataset(tmp)
    edit_json(root / "dataset.json", labels={"background": 0, "organ": 1, "tumour": 3})
    meta = root / "dataset.json"
    return Fault(
        ["validate", root],
        errors=[
            f"{meta}: label values must be consecutive from 0, found [0, 1, 3]",
            *(
                f"{root / 'labelsTr' / f'case0{i}.nii.gz'}: label values [2] are not declared in dataset.json"
                for i in range(3)
            ),
        ],
    )


@fault
def ignore_label_of_the_wrong_value(tmp: Path) -> Fault:
    root = dataset(tmp)
    edit_json(root / "dataset.json", labels={"background": 0, "organ": 1, "tumour": 2, "ignore": 7})
    return Fault(
        ["validate", root], errors=[f"{root / 'dataset.json'}: the 'ignore' label must be 3 (max label + 1), not 7"]
    )


@fault
def listing_path_leaves_the_dataset(tmp: Path) -> Fault:
    root = dataset(tmp, cases=1)
    listing = {"case00": {"images": ["../elsewhere/case00_0000.nii.gz"], "label": "labelsTr/case00.nii.gz"}}
    edit_json(root / "dataset.json", dataset=listing, numTraining=0)
    message = "path '../elsewhere/case00_0000.nii.gz' points outside the dataset folder (refused)"
    return Fault(["validate", root], errors=[f"{root / 'dataset.json'}: {message}"])


@fault
def image_name_without_channel_suffix(tmp: Path) -> Fault:
    root = dataset(tmp)
    (root / "imagesTr" / "case02_0000.nii.gz").rename(root / "imagesTr" / "case02.nii.gz")
    return Fault(
        ["validate", root],
        errors=[
            f"{root / 'imagesTr' / 'case02.nii.gz'}: image name must be CASE_XXXX.nii.gz (4-digit channel)",
            f"{root / 'labelsTr' / 'case02.nii.gz'}: {NO_IMAGE.format('case02')}",
            f"{root / 'dataset.json'}: numTraining is 3 but 2 cases were found",
        ],
    )


@fault
def missing_label_file(tmp: Path) -> Fault:
    root = dataset(tmp)
    (root / "labelsTr" / "case01.nii.gz").unlink()
    return Fault(["validate", root, "-j", "2"], errors=[f"{root / 'labelsTr' / 'case01.nii.gz'}: missing label file"])


@fault
def missing_only_channel_file(tmp: Path) -> Fault:
    """The label names its case; the message names the image that should be there."""
    root = dataset(tmp)
    (root / "imagesTr" / "case01_0000.nii.gz").unlink()
    return Fault(
        ["validate", root],
        errors=[
            f"{root / 'labelsTr' / 'case01.nii.gz'}: {NO_IMAGE.format('case01')}",
            f"{root / 'dataset.json'}: numTraining is 3 but 2 cases were found",
        ],
    )


@fault
def missing_second_channel_file(tmp: Path) -> Fault:
    root = dataset(tmp, channels=2)
    (root / "imagesTr" / "case02_0001.nii.gz").unlink()
    return Fault(["validate", root], errors=[f"{root / 'imagesTr' / 'case02_0001.nii.gz'}: missing channel file"])


@fault
def symlink_out_of_the_dataset_is_followed_with_a_warning(tmp: Path) -> Fault:
    root = dataset(tmp)
    outside = tmp / "archive" / "case01_0000.nii.gz"
    outside.parent.mkdir()
    link = root / "imagesTr" / "case01_0000.nii.gz"
    shutil.move(link, outside)
    link.symlink_to(outside)
    warning = f"{link}: is a symbolic link to {outside}, outside the dataset (followed)"
    return Fault(["validate", root], exit_code=0, warnings=[warning], stdout=["3 cases checked: 0 errors, 1 warnings"])


@fault
def the_same_symlink_in_an_explicit_listing_is_treated_alike(tmp: Path) -> Fault:
    root = dataset(tmp, cases=1)
    outside = tmp / "archive" / "case00_0000.nii.gz"
    outside.parent.mkdir()
    link = root / "imagesTr" / "case00_0000.nii.gz"
    shutil.move(link, outside)
    link.symlink_to(outside)
    listing = {"case00": {"images": ["imagesTr/case00_0000.nii.gz"], "label": "labelsTr/case00.nii.gz"}}
    edit_json(root / "dataset.json", dataset=listing, numTraining=1)
    warning = f"{link}: is a symbolic link to {outside}, outside the dataset (followed)"
    return Fault(["validate", root], exit_code=0, warnings=[warning])


def brats(tmp: Path) -> Path:
    return write_brats_dataset(tmp / "BraTS", cases=2, test_cases=0, size="tiny")


@fault
def a_region_naming_a_value_outside_the_label_values(tmp: Path) -> Fault:
    root = brats(tmp)
    labels = {"background": 0, "whole_tumor": [1, 2, 3, 5], "tumor_core": [2, 3], "enhancing_tumor": 3}
    edit_json(root / "dataset.json", labels=labels)
    problem = "regions ['whole_tumor'] use values [5]; the label values must be 0..4"
    never = "region 'whole_tumor' names value(s) [5] that no label file holds"
    meta = root / "dataset.json"
    return Fault(["validate", root], errors=[f"{meta}: {problem}"], warnings=[f"{meta}: {never}"])


@fault
def a_label_value_in_no_region(tmp: Path) -> Fault:
    root = brats(tmp)
    label_path = root / "labelsTr" / "brats_001.nii.gz"
    label, geometry = read_label(label_path)
    label[0, 0, 0] = 4
    write_image(label_path, label, geometry, is_label=True)
    return Fault(["validate", root], errors=[f"{label_path}: label values [4] are in no region of dataset.json"])


@fault
def regions_class_order_of_the_wrong_length(tmp: Path) -> Fault:
    root = brats(tmp)
    edit_json(root / "dataset.json", regions_class_order=[1, 2])
    problem = "'regions_class_order' has 2 values for 3 regions"
    return Fault(["plan", root, "-w", tmp / "w", "--device", "cpu"], errors=[f"{root / 'dataset.json'}: {problem}"])


@fault
def a_4d_label_file_in_a_region_dataset(tmp: Path) -> Fault:
    root = brats(tmp)
    label_path = root / "labelsTr" / "brats_000.nii.gz"
    label, _ = read_label(label_path)
    image = sitk.JoinSeries([sitk.GetImageFromArray(label.astype(np.uint8))] * 2)
    sitk.WriteImage(image, str(label_path))
    return Fault(["validate", root], errors=[f"{label_path}: a label map must have one channel, found 2"])


# --- files that do not read, or read wrong ---------------------------------------------------------------


@fault
def empty_image_file(tmp: Path) -> Fault:
    root = dataset(tmp)
    (root / "imagesTr" / "case00_0000.nii.gz").write_bytes(b"")
    return Fault(["validate", root], errors=[f"{root / 'imagesTr' / 'case00_0000.nii.gz'}: empty file (0 bytes)"])


@fault
def text_file_named_like_an_image(tmp: Path) -> Fault:
    root = dataset(tmp)
    (root / "imagesTr" / "case00_0000.nii.gz").write_text("patient notes, not an image")
    problem = "not a NIfTI file SimpleITK can read (named .nii.gz, but not gzip-compressed)"
    return Fault(["validate", root], errors=[f"{root / 'imagesTr' / 'case00_0000.nii.gz'}: {problem}"])


@fault
def corrupt_gzip_data(tmp: Path) -> Fault:
    root = dataset(tmp)
    (root / "imagesTr" / "case00_0000.nii.gz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(64))
    return Fault(["validate", root], errors=[f"{root / 'imagesTr' / 'case00_0000.nii.gz'}: corrupt gzip data (…"])


@fault
def nifti_gz_cut_in_half_fails_validation(tmp: Path) -> Fault:
    root = dataset(tmp)
    broken = root / "imagesTr" / "case01_0000.nii.gz"
    noisy_image(broken)
    cut(broken, 0.5)
    return Fault(
        ["validate", root], errors=[f"{broken}: truncated: its gzip stream ends early (the file was cut short)"]
    )


@fault
def nifti_gz_cut_in_half_fails_the_fingerprint(tmp: Path) -> Fault:
    root = dataset(tmp)
    broken = root / "labelsTr" / "case02.nii.gz"
    cut(broken, 0.5)
    work = tmp / "w"
    problem = "truncated: its gzip stream ends early (the file was cut short)"
    return Fault(["fingerprint", root, "-w", work, "-j", "2"], errors=[f"{broken}: {problem}"], outputs=[work])


@fault
def nifti_cut_after_its_header(tmp: Path) -> Fault:
    root = dataset(tmp, ending=".nii")
    broken = root / "imagesTr" / "case00_0000.nii"
    cut(broken, 352)
    problem = "truncated: it holds 0 of the 1,920 bytes of voxel data"
    return Fault(["validate", root], errors=[f"{broken}: {problem}"])


@fault
def nrrd_gzip_data_cut_short_with_two_workers(tmp: Path) -> Fault:
    root = dataset(tmp, ending=".nrrd")
    broken = root / "imagesTr" / "case01_0000.nrrd"
    noisy_image(broken)
    cut(broken, 0.6)
    return Fault(["validate", root, "-j", "2"], errors=[f"{broken}: truncated: it holds …"])


@fault
def compressed_mha_cut_short_in_the_fingerprint_with_default_workers(tmp: Path) -> Fault:
    """The ITK message "MetaImage: M_ReadElementsData: data not read completely" must not reach the terminal."""
    root = dataset(tmp, ending=".mha")
    broken = root / "imagesTr" / "case00_0000.mha"
    noisy_image(broken)
    cut(broken, 0.7)
    work = tmp / "w"
    return Fault(["fingerprint", root, "-w", work], errors=[f"{broken}: truncated: it holds …"], outputs=[work])


@fault
def metaimage_header_whose_data_file_is_gone(tmp: Path) -> Fault:
    root = dataset(tmp, ending=".mhd")
    header = root / "imagesTr" / "case02_0000.mhd"
    for data_file in (root / "imagesTr").glob("case02_0000.*raw"):
        data_file.unlink()
    problem = "the data file its header names cannot be opened: missing, or not readable"
    return Fault(["validate", root], errors=[f"{header}: {problem}"])


@fault
def unreadable_cases_do_not_stop_validation(tmp: Path) -> Fault:
    """Two unreadable cases and a geometry problem: every one is reported, then the summary line."""
    root = dataset(tmp, cases=4, ending=".mha")
    first, second = root / "imagesTr" / "case00_0000.mha", root / "labelsTr" / "case02.mha"
    noisy_image(first)
    cut(first, 0.5)
    second.write_bytes(b"")
    write_image(root / "labelsTr" / "case03.mha", np.zeros((6, 8, 9)), GEOMETRY, is_label=True)
    shape_problem = "shape (6, 8, 9) differs from (6, 8, 10) of case03_0000.mha"
    return Fault(
        ["validate", root, "-j", "2"],
        errors=[
            f"{first}: truncated: it holds …",
            f"{second}: empty file (0 bytes)",
            f"{root / 'labelsTr' / 'case03.mha'}: {shape_problem}",
        ],
        stdout=["4 cases checked: 3 errors, 0 warnings"],
    )


@fault
def nan_voxels_in_a_metaimage(tmp: Path) -> Fault:
    root = dataset(tmp, ending=".mha")
    image = np.zeros(SHAPE, dtype=np.float32)
    image[1, 2, 3], image[1, 2, 4] = np.nan, -np.inf
    write_image(root / "imagesTr" / "case02_0000.mha", image, GEOMETRY)
    return Fault(["validate", root], errors=[f"{root / 'imagesTr' / 'case02_0000.mha'}: has 2 NaN or infinite voxels"])


@fault
def nan_voxels_in_a_nifti_written_by_another_tool(tmp: Path) -> Fault:
    """SimpleITK reads them as 0; clinix reads the voxel data itself to see them."""
    root = dataset(tmp)
    image = np.full(SHAPE, 50.0, dtype=np.float32)
    image[0, :2, :] = np.nan  # 20 voxels
    image[5, 7, 9] = np.inf
    path = root / "imagesTr" / "case01_0000.nii.gz"
    nifti_by_another_tool(path, image)
    return Fault(["validate", root], errors=[f"{path}: has 21 NaN or infinite voxels"])


@fault
def label_map_with_fractional_values(tmp: Path) -> Fault:
    root = dataset(tmp)
    label = np.zeros(SHAPE, dtype=np.float32)
    label[1, 1, 1] = 0.5
    write_image(root / "labelsTr" / "case00.nii.gz", label, GEOMETRY)
    return Fault(
        ["validate", root], errors=[f"{root / 'labelsTr' / 'case00.nii.gz'}: label map has non-integer values"]
    )


@fault
def label_values_not_declared(tmp: Path) -> Fault:
    root = dataset(tmp)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[0, 0, 0] = 7
    write_image(root / "labelsTr" / "case01.nii.gz", label, GEOMETRY, is_label=True)
    message = "label values [7] are not declared in dataset.json"
    return Fault(["fingerprint", root, "-w", tmp / "w"], errors=[f"{root / 'labelsTr' / 'case01.nii.gz'}: {message}"])


@fault
def label_of_another_shape(tmp: Path) -> Fault:
    root = dataset(tmp)
    write_image(root / "labelsTr" / "case01.nii.gz", np.zeros((6, 8, 9)), GEOMETRY, is_label=True)
    problem = "shape (6, 8, 9) differs from (6, 8, 10) of case01_0000.nii.gz"
    return Fault(["validate", root], errors=[f"{root / 'labelsTr' / 'case01.nii.gz'}: {problem}"])


@fault
def label_of_another_spacing(tmp: Path) -> Fault:
    root = dataset(tmp)
    other = Geometry((2.0, 0.75, 0.75), GEOMETRY.origin, GEOMETRY.direction)
    write_image(root / "labelsTr" / "case02.nii.gz", np.zeros(SHAPE), other, is_label=True)
    problem = "spacing (2, 0.75, 0.75) differs from (2.5, 0.75, 0.75) of case02_0000.nii.gz"
    return Fault(["validate", root], errors=[f"{root / 'labelsTr' / 'case02.nii.gz'}: {problem}"])


@fault
def two_channels_in_a_one_channel_dataset(tmp: Path) -> Fault:
    root = dataset(tmp)
    image = np.stack([case_arrays(0)[0][0]] * 2)
    write_image(root / "imagesTr" / "case00_0000.nii.gz", image, GEOMETRY)
    return Fault(
        ["validate", root],
        errors=[f"{root / 'imagesTr' / 'case00_0000.nii.gz'}: has 2 channels, dataset.json declares 1"],
    )


@fault
def a_2d_image(tmp: Path) -> Fault:
    root = dataset(tmp)
    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((8, 10), np.float32)), str(root / "imagesTr" / "case00_0000.nii.gz")
    )
    problem = "is a 2D image; clinix reads 3D images (or 4D with channels last)"
    return Fault(["validate", root], errors=[f"{root / 'imagesTr' / 'case00_0000.nii.gz'}: {problem}"])


# --- the pipeline's own state ----------------------------------------------------------------------------


def planned(tmp: Path, **options: object) -> tuple[Path, Path]:
    root = dataset(tmp, **options)
    work = tmp / "w"
    plan_experiment(root, work, device="cpu", workers=1)
    return root, work


@fault
def preprocess_before_any_plan(tmp: Path) -> Fault:
    return Fault(
        ["preprocess", "-w", tmp / "w"],
        errors=[f"{tmp / 'w' / 'plans.json'}: no plan yet; run 'clinix plan DATASET' first"],
    )


@fault
def dataset_without_any_foreground(tmp: Path) -> Fault:
    root = dataset(tmp)
    for label in (root / "labelsTr").iterdir():
        write_image(label, np.zeros(SHAPE, dtype=np.uint8), GEOMETRY, is_label=True)
    work = tmp / "w"
    problem = "no label map of any case has a foreground voxel; check the labels"
    return Fault(["plan", root, "-w", work, "--device", "cpu"], errors=[f"{root}: {problem}"], outputs=[work])


@fault
def mha_cut_short_after_planning_fails_preprocessing_with_two_workers(tmp: Path) -> Fault:
    root, work = planned(tmp, ending=".mha")
    broken = root / "imagesTr" / "case01_0000.mha"
    noisy_image(broken)
    cut(broken, 0.5)
    done = "1 case(s) failed; 2 of 3 are preprocessed; re-run 'clinix preprocess' once fixed"
    return Fault(
        ["preprocess", "-w", work, "-j", "2"], errors=[f"{broken}: truncated: it holds …", done], outputs=[work]
    )


@fault
def nan_normalisation_statistics_in_plans_json(tmp: Path) -> Fault:
    _, work = planned(tmp)
    plan = load_plan(work)
    plan.normalization[0].mean = float("nan")
    write_json(work / "plans.json", plan.to_json())
    problem = "channel 'CT': CT normalization needs finite mean, std, lower and upper, found [nan, …"
    return Fault(["preprocess", "-w", work, "-j", "2"], errors=[f"{work / 'plans.json'}: {problem}"], outputs=[work])


@fault
def fingerprint_is_redone_when_a_file_changed(tmp: Path) -> Fault:
    """Same folder, same number of cases, one image rewritten: the old fingerprint must not be reused."""
    root, work = planned(tmp)
    before = json.loads((work / "fingerprint.json").read_text())["intensity"]["0"]["mean"]
    image, _ = case_arrays(0)
    write_image(root / "imagesTr" / "case00_0000.nii.gz", image[0] + 1000.0, GEOMETRY)

    def recomputed() -> None:
        after = json.loads((work / "fingerprint.json").read_text())["intensity"]["0"]["mean"]
        assert after == pytest.approx(before + 1000.0 / 3, rel=1e-6)  # one case of three moved by 1000

    return Fault(["fingerprint", root, "-w", work], exit_code=0, outputs=[work], then=recomputed)


@fault
def preprocessing_redoes_a_case_whose_file_changed(tmp: Path) -> Fault:
    root, work = planned(tmp)
    run_then = check_fault(Fault(["preprocess", "-w", work, "-j", "1"], exit_code=0), tmp)
    assert "preprocessed 3 cases" in run_then.stdout
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[1:5, 1:7, 2:9] = 1
    write_image(root / "labelsTr" / "case01.nii.gz", label, GEOMETRY, is_label=True)
    return Fault(
        ["preprocess", "-w", work, "-j", "1"],
        exit_code=0,
        outputs=[work],
        stdout=["preprocessed 1 cases, skipped 2 already done"],
    )


def copied_workdir(tmp: Path) -> Path:
    """A copy of the session's planned and preprocessed tiny phantom (tests/train/test_trainer.py)."""
    return Path(shutil.copytree(build_tiny_workdir(tmp.parent / "tiny-training"), tmp / "work"))


@fault
def train_without_preprocessing_for_the_current_plan(tmp: Path) -> Fault:
    """plans.json changed after 'clinix preprocess' (a re-plan): training on the old arrays is refused."""
    work = copied_workdir(tmp)
    plan = load_plan(work)
    replanned = dataclasses.replace(plan, target_spacing=[s * 2 for s in plan.target_spacing])
    write_json(work / "plans.json", replanned.to_json())
    problem = "are not preprocessed for the current plans.json; re-run 'clinix preprocess'"
    return Fault(
        ["train", "--fold", "0", "-w", work, "--device", "cpu"],
        errors=[f"{work / 'preprocessed' / '3d_fullres'}: 5 of 5 cases (first: phantom_001) {problem}"],
        outputs=[work / "results"],
    )


@fault
def train_with_a_gpu_plan_on_the_cpu_warns_once(tmp: Path) -> Fault:
    work = copied_workdir(tmp)
    plan = load_plan(work)
    write_json(
        work / "plans.json", dataclasses.replace(plan, device="cuda", epochs=1000, iterations_per_epoch=250).to_json()
    )
    warning = (
        "this plan was made for a GPU (cuda: patch [16, 32, 32], 250,000 iterations) and would take days on this "
        "CPU; for a plan sized for it run 'clinix plan DATASET --device cpu'"
    )
    command = [
        "train",
        "--fold",
        "0",
        "-w",
        work,
        "--epochs",
        "1",
        "--iters",
        "1",
        "--val-iters",
        "1",
        "--no-validation",
        "-j",
        "0",
    ]
    return Fault(command, exit_code=0, warnings=[warning], outputs=[work / "results"])


def trained_workdir(tmp: Path, plans: dict[str, object]) -> Path:
    work = tmp / "work"
    for fold, plan in plans.items():
        save_checkpoint(
            work / "results" / "3d_fullres" / f"fold_{fold}" / "checkpoint_final.pt", plan, tiny_network(plan)
        )
    return work


def input_folder(tmp: Path, *case_ids: str) -> Path:
    folder = tmp / "in"
    for case_id in case_ids:
        write_image(folder / f"{case_id}_0000.nii.gz", case_arrays(0)[0][0], GEOMETRY)
    return folder


@fault
def predict_with_folds_of_different_plans(tmp: Path) -> Fault:
    work = trained_workdir(tmp, {0: tiny_plan((2.0, 1.0, 1.0)), 1: tiny_plan((1.0, 1.0, 1.0))})
    problem = (
        "fold 1 was trained with another plan than fold 0 (preprocessing or patch size differ: plans.json changed "
        "between their runs), so they cannot be ensembled; retrain it with 'clinix train --fold F --overwrite', or "
        "choose folds with --folds"
    )
    out = tmp / "out"
    return Fault(
        ["predict", input_folder(tmp, "a"), out, "-w", work, "--device", "cpu"], errors=[problem], outputs=[out]
    )


@fault
def predict_after_a_replan_warns_and_uses_the_models_plan(tmp: Path) -> Fault:
    plan = tiny_plan((2.0, 1.0, 1.0))
    work = trained_workdir(tmp, {0: plan})
    write_json(work / "plans.json", dataclasses.replace(plan, target_spacing=[1.0, 1.0, 1.0]).to_json())
    out = tmp / "out"
    warning = (
        f"{work / 'plans.json'} changed after these models were trained; they predict with the plan they were "
        "trained with (train again to use the new one)"
    )
    return Fault(
        ["predict", input_folder(tmp, "a"), out, "-w", work, "--device", "cpu", "--no-tta"],
        exit_code=0,
        warnings=[warning],
        outputs=[out],
    )


@fault
def predict_input_cut_short_fails_alone(tmp: Path) -> Fault:
    work = trained_workdir(tmp, {0: tiny_plan((2.0, 1.0, 1.0))})
    inputs = input_folder(tmp, "good", "short")
    noisy_image(inputs / "short_0000.nii.gz")
    cut(inputs / "short_0000.nii.gz", 0.5)
    out = tmp / "out"
    problem = "truncated: its gzip stream ends early (the file was cut short)"
    return Fault(
        ["predict", inputs, out, "-w", work, "--device", "cpu", "--no-tta"],
        errors=[f"short: {inputs / 'short_0000.nii.gz'}: {problem}"],
        outputs=[out],
    )


@fault
def predict_input_with_nan_voxels_fails_alone(tmp: Path) -> Fault:
    work = trained_workdir(tmp, {0: tiny_plan((2.0, 1.0, 1.0))})
    inputs = input_folder(tmp, "good")
    image = np.full(SHAPE, 10.0, dtype=np.float32)
    image[2, 2, 2] = np.nan
    nifti_by_another_tool(inputs / "nan_0000.nii.gz", image)
    out = tmp / "out"
    return Fault(
        ["predict", inputs, out, "-w", work, "--device", "cpu", "--no-tta"],
        errors=[f"nan: {inputs / 'nan_0000.nii.gz'}: has 1 NaN or infinite voxels"],
        outputs=[out],
    )


@fault
def predict_on_a_cuda_device_that_is_not_there(tmp: Path) -> Fault:
    work = trained_workdir(tmp, {0: tiny_plan()})
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return Fault(
        ["predict", input_folder(tmp, "a"), tmp / "out", "-w", work, "--device", "cuda"],
        errors=["--device cuda was asked for but this machine has no CUDA device"],
    )


@fault
def checkpoint_that_would_run_code(tmp: Path) -> Fault:
    work = tmp / "work"
    path = work / "results" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": {}, "plan": {}, "hook": argparse.Namespace(command="rm -rf ~")}, path)
    return Fault(
        ["predict", input_folder(tmp, "a"), tmp / "out", "-w", work, "--device", "cpu"],
        errors=[f"{path}: cannot be loaded as a clinix checkpoint: not plain data, refused (…"],
    )


@fault
def checkpoint_cut_short(tmp: Path) -> Fault:
    work = trained_workdir(tmp, {0: tiny_plan()})
    path = work / "results" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    cut(path, 0.5)
    return Fault(
        ["predict", input_folder(tmp, "a"), tmp / "out", "-w", work, "--device", "cpu"],
        errors=[f"{path}: cannot be loaded as a clinix checkpoint (…"],
    )


@pytest.mark.parametrize("ending", [".mhd", ".nhdr"])
def test_multi_file_outputs_reference_their_data_by_its_final_name(tmp_path: Path, ending: str) -> None:
    work = trained_workdir(tmp_path, {0: tiny_plan((2.0, 1.0, 1.0))})
    inputs = tmp_path / "in"
    write_image(inputs / f"case_0000{ending}", case_arrays(0)[0][0], GEOMETRY)
    out = tmp_path / "out"
    check_fault(
        Fault(["predict", inputs, out, "-w", work, "--device", "cpu", "--no-tta"], exit_code=0, outputs=[out]), tmp_path
    )
    header = (out / f"case{ending}").read_text(errors="replace")
    data_files = sorted(p.name for p in out.iterdir() if p.name != f"case{ending}")
    assert data_files and all(name.startswith("case.") for name in data_files)
    assert any(name in header for name in data_files)
    assert ".tmp" not in header


# --- evaluate --------------------------------------------------------------------------------------------


def label_folders(tmp: Path) -> tuple[Path, Path]:
    pred, ref = tmp / "pred", tmp / "ref"
    for case_id in ("a", "b"):
        write_image(ref / f"{case_id}.nii.gz", case_arrays(0)[1], GEOMETRY, is_label=True)
    write_image(pred / "a.nii.gz", case_arrays(0)[1], GEOMETRY, is_label=True)
    return pred, ref


@fault
def evaluate_with_a_prediction_missing(tmp: Path) -> Fault:
    pred, ref = label_folders(tmp)
    return Fault(
        ["evaluate", pred, ref, "-j", "1"],
        errors=[f"b: no prediction in {pred} (--allow-missing scores it as empty)"],
        outputs=[pred],
    )


@fault
def evaluate_a_prediction_of_another_shape(tmp: Path) -> Fault:
    pred, ref = label_folders(tmp)
    write_image(pred / "b.nii.gz", np.zeros((6, 8, 9), np.uint8), GEOMETRY, is_label=True)
    problem = "shape (6, 8, 9) differs from the reference's (6, 8, 10); not resampled"
    return Fault(["evaluate", pred, ref, "-j", "2"], errors=[f"b: {pred / 'b.nii.gz'}: {problem}"], outputs=[pred])


@fault
def evaluate_with_an_unknown_hd95_rule(tmp: Path) -> Fault:
    pred, ref = label_folders(tmp)
    return Fault(
        ["evaluate", pred, ref, "--hd95-missing", "zero"], errors=["--hd95-missing must be one of max, nan, not 'zero'"]
    )


@pytest.mark.parametrize("builder", CATALOGUE, ids=[builder.__name__ for builder in CATALOGUE])
def test_fault(builder: FaultBuilder, tmp_path: Path) -> None:
    check_fault(builder(tmp_path), tmp_path)


def test_the_catalogue_is_complete() -> None:
    # with tests/test_parallel.py (3: worker SIGKILL, worker SIGSEGV, parent SIGKILL) and
    # tests/train/test_guards.py (NaN loss, non-finite weights, re-plan before --resume)
    assert len(CATALOGUE) + 2 + 3 + 3 >= 40
