"""``clinix predict`` end to end through the CLI, with a tiny trained-format checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from clinix.cli import app
from clinix.io.image import read_image, read_label, write_image
from tests.builders import GEOMETRY, SHAPE, case_arrays
from tests.infer.test_predictor import save_checkpoint, tiny_network, tiny_plan

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working folder with fold 0 trained (random weights: only the mechanics are under test)."""
    plan = tiny_plan(target_spacing=(2.0, 1.0, 1.0))  # the inputs' 2.5 × 0.75 × 0.75 mm are resampled
    work = tmp_path / "work"
    save_checkpoint(work / "results" / "3d_fullres" / "fold_0" / "checkpoint_final.pt", plan, tiny_network(plan))
    return work


def write_case(folder: Path, case_id: str, channels: int = 1) -> None:
    image, _ = case_arrays(0, channels)
    for channel in range(channels):
        write_image(folder / f"{case_id}_{channel:04d}.nii.gz", image[channel], GEOMETRY)


def predict(workdir: Path, in_dir: Path, out_dir: Path, *extra: str) -> Result:
    arguments = ["predict", str(in_dir), str(out_dir), "--workdir", str(workdir), "--device", "cpu", *extra]
    return runner.invoke(app, arguments)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_corrupt_input_fails_alone(workdir: Path, tmp_path: Path) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    write_case(in_dir, "good")
    write_case(in_dir, "fine")
    (in_dir / "broken_0000.nii.gz").write_bytes(b"this is not a NIfTI file")
    result = predict(workdir, in_dir, out_dir, "--no-tta")
    assert result.exit_code == 2
    [line] = error_lines(result)
    problem = "not a NIfTI file SimpleITK can read (named .nii.gz, but not gzip-compressed)"
    assert line == f"error: broken: {in_dir / 'broken_0000.nii.gz'}: {problem}"
    assert sorted(p.name for p in out_dir.iterdir()) == ["fine.nii.gz", "good.nii.gz"]
    labels, geometry = read_label(out_dir / "good.nii.gz")
    assert labels.shape == SHAPE and geometry == read_image(in_dir / "good_0000.nii.gz")[1]
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_a_case_with_the_wrong_channel_count_is_named_with_the_expected_channels(workdir: Path, tmp_path: Path) -> None:
    in_dir = tmp_path / "in"
    write_case(in_dir, "two", channels=2)
    result = predict(workdir, in_dir, tmp_path / "out", "--no-tta")
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"error: two: {in_dir / 'two_0000.nii.gz'}: case two has 2 channel(s), the model expects 1 (CT)"
    ]


def test_existing_outputs_are_skipped_without_overwrite(workdir: Path, tmp_path: Path) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    write_case(in_dir, "good")
    assert predict(workdir, in_dir, out_dir, "--no-tta").exit_code == 0
    (out_dir / "good.nii.gz").write_bytes(b"marker")  # a rerun must not touch a finished case
    skipped = predict(workdir, in_dir, out_dir, "--no-tta")
    assert skipped.exit_code == 0 and (out_dir / "good.nii.gz").read_bytes() == b"marker"
    assert predict(workdir, in_dir, out_dir, "--no-tta", "--overwrite").exit_code == 0
    assert read_label(out_dir / "good.nii.gz")[0].shape == SHAPE


def test_probabilities_are_written_with_tta_and_an_explicit_fold(workdir: Path, tmp_path: Path) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    write_case(in_dir, "good")
    result = predict(workdir, in_dir / "good_0000.nii.gz", out_dir, "--folds", "0", "--save-probabilities")
    assert result.exit_code == 0, result.output
    probabilities = np.load(out_dir / "good.npz")["probabilities"]
    assert probabilities.shape == (3, *SHAPE)
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=2e-3)


def test_no_trained_fold_is_one_line_and_exit_2(tmp_path: Path) -> None:
    in_dir = tmp_path / "in"
    write_case(in_dir, "good")
    result = predict(tmp_path / "empty", in_dir, tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no trained fold in {tmp_path / 'empty' / 'results' / '3d_fullres'}; run 'clinix train'"
    ]


def test_the_postprocessing_of_crossval_is_applied_unless_switched_off(workdir: Path, tmp_path: Path) -> None:
    in_dir = tmp_path / "in"
    write_case(in_dir, "case")
    assert predict(workdir, in_dir, tmp_path / "plain", "--no-tta").exit_code == 0
    plain, _ = read_label(tmp_path / "plain" / "case.nii.gz")
    assert np.count_nonzero(plain), "the random network must predict some foreground for this test"
    rule = {"name": "everything", "labels": [1, 2], "keep": "min_volume", "min_volume_mm3": 1e12}
    content = {"format": 1, "foreground_largest": False, "foreground_labels": [1, 2], "rules": [rule]}
    (workdir / "results" / "3d_fullres" / "postprocessing.json").write_text(json.dumps(content))
    result = predict(workdir, in_dir, tmp_path / "post", "--no-tta")
    assert result.exit_code == 0, result.output
    assert "postprocessing: everything: components under 1e+12 mm³ removed" in result.output
    assert not read_label(tmp_path / "post" / "case.nii.gz")[0].any()
    assert predict(workdir, in_dir, tmp_path / "off", "--no-tta", "--no-postprocess").exit_code == 0
    assert np.array_equal(read_label(tmp_path / "off" / "case.nii.gz")[0], plain)


def test_a_broken_postprocessing_file_is_one_line_and_exit_2(workdir: Path, tmp_path: Path) -> None:
    write_case(tmp_path / "in", "case")
    path = workdir / "results" / "3d_fullres" / "postprocessing.json"
    path.write_text('{"format": 9}')
    result = predict(workdir, tmp_path / "in", tmp_path / "out", "--no-tta")
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: {path}: postprocessing format 9; this clinix reads 1"]
    assert not (tmp_path / "out").exists()
