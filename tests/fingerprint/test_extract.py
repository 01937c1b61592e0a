from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clinix import __version__
from clinix.cli import app
from clinix.errors import DatasetError
from clinix.fingerprint import extract_fingerprint, load_fingerprint, nonzero_crop_box

runner = CliRunner()


def test_crop_box_is_half_open_and_covers_every_channel() -> None:
    image = np.zeros((2, 6, 8, 10))
    image[0, 1:3, 2:4, 5] = 1.0
    image[1, 4, 6, 9] = -3.0
    assert nonzero_crop_box(image) == [[1, 5], [2, 7], [5, 10]]


def test_crop_box_fills_holes_and_keeps_everything_when_empty() -> None:
    ring = np.zeros((1, 1, 5, 5))
    ring[0, 0, 1:4, 1:4] = 1.0
    ring[0, 0, 2, 2] = 0.0
    assert nonzero_crop_box(ring) == [[0, 1], [1, 4], [1, 4]]
    assert nonzero_crop_box(np.zeros((1, 3, 4, 5))) == [[0, 3], [0, 4], [0, 5]]


def test_fingerprint_records_geometry_crop_and_label_fractions(nnunet_dataset: Path, tmp_path: Path) -> None:
    fingerprint, _ = extract_fingerprint(nnunet_dataset, tmp_path / "work", workers=1)
    case = fingerprint.cases[1]
    assert case.case_id == "case01"
    assert case.shape == [6, 8, 10]
    assert case.spacing == [2.5, 0.75, 0.75]
    assert case.crop_box == [[1, 5], [1, 7], [2, 9]]
    assert case.shape_after_crop == [4, 6, 7]
    assert case.relative_size_after_crop == pytest.approx(168 / 480)
    assert case.label_voxels == {"background": 480 - 18, "organ": 17, "tumour": 1}
    assert case.label_fraction["organ"] == pytest.approx(17 / 480)
    assert fingerprint.labels["tumour"]["fraction_median"] == pytest.approx(1 / 480)
    assert fingerprint.labels["tumour"]["cases_present"] == 3
    assert fingerprint.median_relative_size_after_crop == pytest.approx(168 / 480)


def test_foreground_intensity_statistics_pool_all_cases(nnunet_dataset: Path, tmp_path: Path) -> None:
    fingerprint, _ = extract_fingerprint(nnunet_dataset, tmp_path / "work", workers=1)
    stats = fingerprint.intensity["0"]
    assert stats["name"] == "CT"
    assert stats["mean"] == pytest.approx(101.0)  # cases hold 100, 101, 102 under the labels
    assert stats["min"] == 100.0
    assert stats["max"] == 102.0
    assert stats["median"] == pytest.approx(101.0)
    assert stats["std"] == pytest.approx(np.sqrt(2 / 3), rel=1e-3)


def test_fingerprint_json_is_versioned_and_round_trips(nnunet_dataset: Path, tmp_path: Path) -> None:
    fingerprint, path = extract_fingerprint(nnunet_dataset, tmp_path / "work", workers=1)
    data = json.loads(path.read_text())
    assert next(iter(data)) == "clinix_version"
    assert data["clinix_version"] == __version__
    assert data["dataset"]["root"] == str(nnunet_dataset.resolve())
    assert load_fingerprint(tmp_path / "work").to_json() == fingerprint.to_json()


def test_parallel_workers_give_the_same_fingerprint(nnunet_dataset: Path, tmp_path: Path) -> None:
    serial, _ = extract_fingerprint(nnunet_dataset, tmp_path / "a", workers=1)
    parallel, _ = extract_fingerprint(nnunet_dataset, tmp_path / "b", workers=2)
    assert parallel.to_json() == serial.to_json()


def test_broken_dataset_writes_nothing_and_names_the_file(nnunet_dataset: Path, tmp_path: Path) -> None:
    (nnunet_dataset / "labelsTr" / "case02.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case02\.nii\.gz: missing label file"):
        extract_fingerprint(nnunet_dataset, tmp_path / "work", workers=1)
    assert not (tmp_path / "work" / "fingerprint.json").exists()


def test_cli_writes_fingerprint_into_workdir(nnunet_dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["fingerprint", str(nnunet_dataset), "--workdir", str(tmp_path / "w"), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "w" / "fingerprint.json").is_file()
    assert "tumour: % of image (T/W)" in result.stdout


def test_cli_uses_clinix_workdir_variable(
    nnunet_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLINIX_WORKDIR", str(tmp_path / "env_work"))
    result = runner.invoke(app, ["fingerprint", str(nnunet_dataset), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env_work" / "fingerprint.json").is_file()


def test_cli_broken_dataset_exits_2_with_one_line(nnunet_dataset: Path, tmp_path: Path) -> None:
    (nnunet_dataset / "dataset.json").write_text("{not json")
    result = runner.invoke(app, ["fingerprint", str(nnunet_dataset), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "dataset.json: is not valid JSON" in result.stderr
