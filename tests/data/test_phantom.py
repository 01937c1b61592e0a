"""The synthetic phantom: deterministic bytes, nnU-Net v2 layout, findable tumours inside the organ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from clinix.cli import app
from clinix.data.phantom import SIZES, make_phantom_case, write_phantom_dataset
from clinix.errors import ClinixError
from clinix.io.image import Geometry, read_geometry, read_image, read_label

CUBE = np.ones((3, 3, 3), dtype=bool)
IDENTITY = Geometry.identity().direction


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default dataset: 8 training and 2 held-out cases, seed 0."""
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom") / "out", cases=8, seed=0, test_cases=2)


def _case_files(dataset: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs of every case, training first."""
    pairs = []
    for split in ("Tr", "Ts"):
        for image in sorted((dataset / f"images{split}").iterdir()):
            pairs.append((image, dataset / f"labels{split}" / image.name.replace("_0000", "")))
    return pairs


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dataset_json_declares_ct_three_labels_and_the_training_count(default_dataset: Path) -> None:
    meta = json.loads((default_dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "organ": 1, "tumour": 2}
    assert meta["numTraining"] == 8
    assert meta["file_ending"] == ".nii.gz"
    assert meta["name"] == "ClinixPhantom"
    assert len(list((default_dataset / "imagesTr").glob("phantom_*_0000.nii.gz"))) == 8
    assert len(list((default_dataset / "labelsTr").glob("phantom_*.nii.gz"))) == 8
    assert sorted(p.name for p in (default_dataset / "imagesTs").iterdir()) == [
        "phantom_008_0000.nii.gz",
        "phantom_009_0000.nii.gz",
    ]
    assert sorted(p.name for p in (default_dataset / "labelsTs").iterdir()) == [
        "phantom_008.nii.gz",
        "phantom_009.nii.gz",
    ]


def test_same_seed_writes_identical_bytes_in_two_folders(tmp_path: Path) -> None:
    first = write_phantom_dataset(tmp_path / "a", cases=3, seed=7, test_cases=1, size="tiny")
    second = write_phantom_dataset(tmp_path / "b", cases=3, seed=7, test_cases=1, size="tiny")
    first_bytes, second_bytes = _tree_bytes(first), _tree_bytes(second)
    assert len(first_bytes) == 1 + 2 * 4  # dataset.json and an image and a label per case
    assert first_bytes == second_bytes


def test_a_case_does_not_depend_on_how_many_cases_are_written(tmp_path: Path, default_dataset: Path) -> None:
    small = write_phantom_dataset(tmp_path / "small", cases=1, seed=0, test_cases=1)
    for name in ("phantom_000_0000.nii.gz", "phantom_001_0000.nii.gz"):
        split = "imagesTr" if name.startswith("phantom_000") else "imagesTs"
        assert (small / split / name).read_bytes() == (default_dataset / "imagesTr" / name).read_bytes()


def test_different_seeds_give_different_images(tmp_path: Path) -> None:
    seed0 = write_phantom_dataset(tmp_path / "s0", cases=2, seed=0, test_cases=0, size="tiny")
    seed1 = write_phantom_dataset(tmp_path / "s1", cases=2, seed=1, test_cases=0, size="tiny")
    for name in ("phantom_000_0000.nii.gz", "phantom_001_0000.nii.gz"):
        assert (seed0 / "imagesTr" / name).read_bytes() != (seed1 / "imagesTr" / name).read_bytes()


def test_written_image_is_the_generated_case_with_its_geometry(default_dataset: Path) -> None:
    image, label, geometry = make_phantom_case(1, seed=0)
    read, read_geometry_ = read_image(default_dataset / "imagesTr" / "phantom_001_0000.nii.gz")
    assert np.array_equal(read[0], image)
    assert np.array_equal(read_label(default_dataset / "labelsTr" / "phantom_001.nii.gz")[0], label)
    assert read_geometry_.spacing == geometry.spacing
    assert read_geometry_.origin == geometry.origin
    assert np.allclose(read_geometry_.direction, geometry.direction, atol=1e-6)


def test_every_case_has_organ_and_tumour_and_only_labels_0_1_2(default_dataset: Path) -> None:
    for _, label_path in _case_files(default_dataset):
        label, _ = read_label(label_path)
        assert set(np.unique(label).tolist()) == {0, 1, 2}, label_path.name
        assert (label == 1).sum() > 0 and (label == 2).sum() > 0


def test_every_tumour_voxel_is_surrounded_by_organ(default_dataset: Path) -> None:
    for _, label_path in _case_files(default_dataset):
        label, _ = read_label(label_path)
        around_tumour = ndimage.binary_dilation(label == 2, structure=CUBE)
        assert np.all(label[around_tumour] > 0), label_path.name


def test_tumour_is_darker_than_the_organ_by_more_than_two_noise_sigmas(default_dataset: Path) -> None:
    for image_path, label_path in _case_files(default_dataset):
        image = read_image(image_path)[0][0]
        label, _ = read_label(label_path)
        organ, tumour = label == 1, label == 2
        # Inside the organ, two voxels from its edge and the tumours, the blur leaves almost only noise.
        flat_organ = ndimage.binary_erosion(organ, CUBE) & ~ndimage.binary_dilation(tumour, CUBE, iterations=2)
        assert flat_organ.sum() > 100
        noise_sigma = image[flat_organ].std()
        assert image[organ].mean() - image[tumour].mean() > 2 * noise_sigma, image_path.name


def test_spacing_is_anisotropic_and_varies_across_cases(default_dataset: Path) -> None:
    spacings = [read_geometry(image)[2].spacing for image, _ in _case_files(default_dataset)]
    for z_mm, y_mm, x_mm in spacings:
        assert y_mm == x_mm and z_mm > y_mm
    assert len(set(spacings)) > 1


def test_every_fourth_case_from_index_1_has_a_turned_direction_and_an_offset_origin(default_dataset: Path) -> None:
    turned = []
    for image_path, _ in _case_files(default_dataset):
        geometry = read_geometry(image_path)[2]
        if not np.allclose(geometry.direction, IDENTITY):
            turned.append(image_path.name[:11])
            assert geometry.origin != (0.0, 0.0, 0.0)
    assert turned == ["phantom_001", "phantom_005", "phantom_009"]


def test_image_and_label_share_shape_and_geometry(default_dataset: Path) -> None:
    for image_path, label_path in _case_files(default_dataset):
        assert read_geometry(image_path) == read_geometry(label_path)


def test_outside_the_field_of_view_is_zero_so_crop_to_nonzero_cuts(default_dataset: Path) -> None:
    for image_path, _ in _case_files(default_dataset):
        image = read_image(image_path)[0][0]
        assert np.all(image[:, 0, 0] == 0)  # a corner lies outside the reconstruction circle
        assert image[image != 0].min() < -900  # air inside the circle is about -1000 HU
        nonzero = ndimage.binary_fill_holes(image != 0)
        box = ndimage.find_objects(nonzero.astype(np.uint8))[0]
        assert np.prod([s.stop - s.start for s in box]) < image.size


def test_default_and_tiny_shapes_fall_in_their_ranges() -> None:
    for size, ((z_lo, z_hi), (xy_lo, xy_hi)) in SIZES.items():
        image, label, _ = make_phantom_case(3, seed=0, size=size)
        z, y, x = image.shape
        assert z_lo <= z <= z_hi and xy_lo <= y <= xy_hi and xy_lo <= x <= xy_hi
        assert label.shape == image.shape and label.dtype == np.uint8 and image.dtype == np.float32
    assert SIZES["tiny"] == ((16, 20), (32, 40))


def test_a_previous_phantom_is_replaced_without_stale_cases(tmp_path: Path) -> None:
    out = write_phantom_dataset(tmp_path / "out", cases=3, seed=0, test_cases=1, size="tiny")
    write_phantom_dataset(out, cases=1, seed=0, test_cases=0, size="tiny")
    assert [p.name for p in (out / "imagesTr").iterdir()] == ["phantom_000_0000.nii.gz"]
    assert not (out / "imagesTs").exists()
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1


def test_cli_writes_the_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["phantom", str(tmp_path / "out"), "--cases", "2", "--test-cases", "1", "--size", "tiny"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out" / "imagesTr").iterdir())) == 2
    assert len(list((tmp_path / "out" / "labelsTs").iterdir())) == 1


def test_cli_refuses_a_non_empty_folder_that_is_no_phantom_with_one_line(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["phantom", str(foreign), "--size", "tiny"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert not (foreign / "imagesTr").exists()


def test_cli_overwrite_replaces_dataset_entries_and_keeps_other_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    (foreign / "imagesTr").mkdir(parents=True)
    (foreign / "imagesTr" / "old_0000.nii.gz").write_text("not an image")
    (foreign / "notes.txt").write_text("mine")
    result = CliRunner().invoke(
        app, ["phantom", str(foreign), "--cases", "1", "--test-cases", "0", "--size", "tiny", "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in (foreign / "imagesTr").iterdir()] == ["phantom_000_0000.nii.gz"]
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("options", "problem"), [({"size": "huge"}, "unknown phantom size"), ({"cases": 0}, "at least 1")]
)
def test_bad_options_are_user_errors(tmp_path: Path, options: dict, problem: str) -> None:
    with pytest.raises(ClinixError, match=problem):
        write_phantom_dataset(tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
