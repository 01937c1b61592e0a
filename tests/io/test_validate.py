"""Each check of `clinix validate` on a dataset broken in exactly that way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from clinix.cli import app
from clinix.io.image import Geometry, write_image
from clinix.io.validate import validate_dataset
from tests.builders import GEOMETRY, SHAPE, write_nnunet

runner = CliRunner()


def messages(root: Path, severity: str = "error") -> list[str]:
    report = validate_dataset(root, workers=1)
    return [f"{p.path.name}: {p.message}" for p in report.problems if p.severity == severity]


def edit_json(root: Path, **changes: object) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    (root / "dataset.json").write_text(json.dumps(meta))


def test_intact_dataset_has_no_problem(nnunet_dataset: Path) -> None:
    report = validate_dataset(nnunet_dataset, workers=1)
    assert report.problems == []
    assert report.cases_checked == 3


def test_missing_dataset_json(tmp_path: Path) -> None:
    tmp_path.joinpath("imagesTr").mkdir()
    assert messages(tmp_path) == ["dataset.json: missing dataset.json"]


def test_every_missing_key_is_listed(nnunet_dataset: Path) -> None:
    edit_json(nnunet_dataset, labels=None, numTraining=None)
    assert messages(nnunet_dataset) == ["dataset.json: missing key 'labels'", "dataset.json: missing key 'numTraining'"]


def test_num_training_mismatch(nnunet_dataset: Path) -> None:
    edit_json(nnunet_dataset, numTraining=5)
    assert messages(nnunet_dataset) == ["dataset.json: numTraining is 5 but 3 cases were found"]


def test_missing_label_file(nnunet_dataset: Path) -> None:
    (nnunet_dataset / "labelsTr" / "case01.nii.gz").unlink()
    assert messages(nnunet_dataset) == ["case01.nii.gz: missing label file"]


def test_missing_channel_file(tmp_path: Path) -> None:
    root = write_nnunet(tmp_path / "d", channels=2)
    (root / "imagesTr" / "case02_0001.nii.gz").unlink()
    assert messages(root) == [
        "case02_0001.nii.gz: missing channel file",
    ]


def test_corrupt_file_is_named(nnunet_dataset: Path) -> None:
    (nnunet_dataset / "imagesTr" / "case00_0000.nii.gz").write_bytes(b"\x1f\x8b garbage")
    found = messages(nnunet_dataset)
    assert len(found) == 1
    assert found[0].startswith("case00_0000.nii.gz: corrupt gzip data (")


def test_channel_count_differs_from_dataset_json(nnunet_dataset: Path) -> None:
    edit_json(nnunet_dataset, channel_names={"0": "CT", "1": "PET"})
    found = messages(nnunet_dataset)
    assert "case00_0001.nii.gz: missing channel file" in found
    assert len(found) == 3


def test_channel_count_of_a_4d_decathlon_image(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "Task01_Brain", modalities=3, channels_in_file=2)
    assert messages(root) == ["brain_0.nii.gz: has 2 channels, dataset.json declares 3"]


def test_shape_mismatch_between_image_and_label(nnunet_dataset: Path) -> None:
    write_image(nnunet_dataset / "labelsTr" / "case01.nii.gz", np.zeros((6, 8, 9)), GEOMETRY, is_label=True)
    assert messages(nnunet_dataset) == ["case01.nii.gz: shape (6, 8, 9) differs from (6, 8, 10) of case01_0000.nii.gz"]


def test_spacing_mismatch_is_an_error(nnunet_dataset: Path) -> None:
    other = Geometry((2.0, 0.75, 0.75), GEOMETRY.origin, GEOMETRY.direction)
    write_image(nnunet_dataset / "labelsTr" / "case02.nii.gz", np.zeros(SHAPE), other, is_label=True)
    assert messages(nnunet_dataset) == [
        "case02.nii.gz: spacing (2, 0.75, 0.75) differs from (2.5, 0.75, 0.75) of case02_0000.nii.gz"
    ]


def test_origin_and_direction_mismatch_are_warnings(nnunet_dataset: Path) -> None:
    moved = Geometry(GEOMETRY.spacing, (11.0, -5.0, 3.0), (1.0, 0, 0, 0, -1.0, 0, 0, 0, -1.0))
    write_image(nnunet_dataset / "labelsTr" / "case00.nii.gz", np.zeros(SHAPE), moved, is_label=True)
    assert messages(nnunet_dataset) == []
    assert messages(nnunet_dataset, "warning") == [
        "case00.nii.gz: origin (11, -5, 3) differs from (10, -5, 3)",
        "case00.nii.gz: direction differs from that of case00_0000.nii.gz",
    ]


def test_undeclared_label_values(nnunet_dataset: Path) -> None:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[0, 0, 0] = 7
    write_image(nnunet_dataset / "labelsTr" / "case01.nii.gz", label, GEOMETRY, is_label=True)
    assert messages(nnunet_dataset) == ["case01.nii.gz: label values [7] are not declared in dataset.json"]


def test_labels_not_consecutive_from_zero(nnunet_dataset: Path) -> None:
    edit_json(nnunet_dataset, labels={"background": 0, "organ": 1, "tumour": 3})
    found = messages(nnunet_dataset)
    assert "dataset.json: label values must be consecutive from 0, found [0, 1, 3]" in found


def test_v1_style_labels_are_explained(nnunet_dataset: Path) -> None:
    edit_json(nnunet_dataset, labels={"0": "background", "1": "organ"})
    assert messages(nnunet_dataset) == [
        "dataset.json: 'labels' maps values to names (v1 style); write {name: value} instead"
    ]


def test_nan_voxels(tmp_path: Path) -> None:
    root = write_nnunet(tmp_path / "d", ending=".mha")  # SimpleITK's NIfTI writer turns NaN into 0
    image = np.zeros(SHAPE, dtype=np.float32)
    image[1, 2, 3] = np.nan
    image[1, 2, 4] = np.inf
    write_image(root / "imagesTr" / "case02_0000.mha", image, GEOMETRY)
    assert messages(root) == ["case02_0000.mha: has 2 NaN or infinite voxels"]


def test_path_outside_the_dataset_is_refused(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "Task02_Heart", modalities=1, channels_in_file=1)
    outside = tmp_path / "secret.nii.gz"
    outside.write_bytes(b"")
    edit_json(root, training=[{"image": "../secret.nii.gz", "label": "./labelsTr/brain_0.nii.gz"}], numTraining=0)
    assert messages(root) == ["dataset.json: path '../secret.nii.gz' points outside the dataset folder (refused)"]


def test_every_problem_is_reported_not_only_the_first(nnunet_dataset: Path) -> None:
    (nnunet_dataset / "labelsTr" / "case00.nii.gz").unlink()
    (nnunet_dataset / "labelsTr" / "case02.nii.gz").unlink()
    edit_json(nnunet_dataset, numTraining=4)
    assert len(messages(nnunet_dataset)) == 3


def test_decathlon_layout_is_read_directly(tmp_path: Path) -> None:
    root = write_msd(tmp_path / "Task01_Brain", modalities=2, channels_in_file=2)
    assert validate_dataset(root, workers=1).problems == []


def test_cli_prints_one_line_per_problem_and_exits_2(nnunet_dataset: Path) -> None:
    (nnunet_dataset / "labelsTr" / "case01.nii.gz").unlink()
    result = runner.invoke(app, ["validate", str(nnunet_dataset)])
    assert result.exit_code == 2
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"error: {nnunet_dataset / 'labelsTr' / 'case01.nii.gz'}: missing label file"
    assert lines[-1] == "3 cases checked: 1 errors, 0 warnings"
    assert "Traceback" not in result.output


def test_cli_exit_0_on_a_clean_dataset(nnunet_dataset: Path) -> None:
    result = runner.invoke(app, ["validate", str(nnunet_dataset), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "0 errors, 0 warnings" in result.output


def test_cli_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "clinix", "validate", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert "dataset folder not found" in completed.stdout
    assert "Traceback" not in completed.stdout + completed.stderr


def write_msd(root: Path, modalities: int, channels_in_file: int) -> Path:
    """A Decathlon task with one case stored as a 4D NIfTI (channels in the 4th axis)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    volumes = np.stack([np.full(SHAPE, 10.0 * (c + 1), dtype=np.float32) for c in range(channels_in_file)])
    image = sitk.GetImageFromArray(volumes if channels_in_file > 1 else volumes[0], isVector=False)
    image.SetSpacing((0.75, 0.75, 2.5, 1.0)[: image.GetDimension()])
    sitk.WriteImage(image, str(root / "imagesTr" / "brain_0.nii.gz"))
    label = sitk.GetImageFromArray(np.zeros(SHAPE, dtype=np.uint8))
    label.SetSpacing((0.75, 0.75, 2.5))
    sitk.WriteImage(label, str(root / "labelsTr" / "brain_0.nii.gz"))
    meta = {
        "name": "BRAIN",
        "modality": {str(c): f"MR{c}" for c in range(modalities)},
        "labels": {"0": "background", "1": "tumour"},
        "numTraining": 1,
        "training": [{"image": "./imagesTr/brain_0.nii.gz", "label": "./labelsTr/brain_0.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_channels_of_different_shapes_are_one_error_naming_the_case(tmp_path: Path) -> None:
    from clinix.errors import DatasetError
    from clinix.io.dataset import open_dataset

    root = write_nnunet(tmp_path / "d", channels=2)
    write_image(root / "imagesTr" / "case01_0001.nii.gz", np.zeros((6, 8, 9)), GEOMETRY)
    dataset = open_dataset(root)
    with pytest.raises(DatasetError, match=r"channels of case 'case01' differ in shape"):
        dataset.read_case(dataset.case("case01"))
