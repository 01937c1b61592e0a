"""``clinix best``: configurations and their pairs compared on cross-validation; ``predict --model inference.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clinix.cli import app
from clinix.crossval import crossval, train_and_validate
from clinix.crossval.best import find_best
from clinix.errors import ClinixError
from clinix.io.dataset import open_dataset
from clinix.io.image import read_label
from clinix.plan import load_plan
from clinix.train import TrainingOptions
from clinix.workdir import WorkDir
from tests.train.test_trainer import TINY_RUN

runner = CliRunner()


@pytest.fixture(scope="module")
def two_configurations(trained_folds: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The two-fold folder, and a copy whose fold 0 was retrained from another seed; both cross-validated."""
    root = tmp_path_factory.mktemp("best")
    first = Path(shutil.copytree(trained_folds, root / "first"))
    second = Path(shutil.copytree(trained_folds, root / "second"))
    options = TrainingOptions(**TINY_RUN, seed=7, overwrite=True)
    train_and_validate(second, 0, options, tta=False, save_probabilities=True)
    crossval(first, workers=1)
    crossval(second, workers=1)
    return first, second


def test_every_folder_and_the_pair_are_scored_and_the_best_is_written(
    two_configurations: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = two_configurations
    result = find_best([first, second], tmp_path / "inference.json")
    names = [candidate.name for candidate in result.candidates]
    assert names == [
        "first (mambaclinix, ce-dice-trs)",
        "second (mambaclinix, ce-dice-trs)",
        "first (mambaclinix, ce-dice-trs) + second (mambaclinix, ce-dice-trs)",
    ]
    for workdir, candidate in zip((first, second), result.candidates, strict=False):
        report = json.loads((WorkDir(workdir).crossval() / "crossval.json").read_text())
        assert candidate.mean_dsc == pytest.approx(report["pooled"]["foreground_mean"]["DSC"])
    assert result.chosen.mean_dsc == max(c.mean_dsc for c in result.candidates)
    written = json.loads((tmp_path / "inference.json").read_text())
    assert written["chosen"] == result.chosen.name
    assert [m["workdir"] for m in written["members"]] == [str(m.workdir) for m in result.chosen.members]
    assert all(m["folds"] == [0, 1] for m in written["members"]) and len(written["candidates"]) == 3


def test_the_pair_is_scored_on_its_averaged_probabilities(
    two_configurations: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = two_configurations
    pair = find_best([first, second], tmp_path / "inference.json").candidates[2]
    dataset = open_dataset(load_plan(first).dataset_root)
    dscs = []
    for case in sorted(p.stem for p in WorkDir(first).crossval().glob("*.npz")):
        mean = sum(np.load(WorkDir(w).crossval() / f"{case}.npz")["probabilities"].astype(np.float32)
                   for w in (first, second)) / 2  # fmt: skip
        pred, ref = np.argmax(mean, axis=0) == 1, read_label(dataset.case(case).label)[0] == 1
        dscs.append(2 * np.count_nonzero(pred & ref) / (np.count_nonzero(pred) + np.count_nonzero(ref)))
    assert pair.per_class["organ"] == pytest.approx(np.mean(dscs))


def test_predicting_with_inference_json_averages_its_members(
    two_configurations: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = two_configurations
    find_best([first, second], tmp_path / "chosen.json")
    config = json.loads((tmp_path / "chosen.json").read_text())
    members = [{"workdir": str(w), "folds": [0], "name": w.name} for w in (first, second)]
    identity = {"format": 1, "foreground_largest": False, "foreground_labels": [1, 2], "rules": []}
    pair = {**config, "members": members, "postprocessing": identity, "chosen": "pair"}
    (tmp_path / "pair.json").write_text(json.dumps(pair))
    image = sorted((Path(load_plan(first).dataset_root) / "imagesTr").glob("*_0000.nii.gz"))[0]
    common = ["--device", "cpu", "--no-tta", "--save-probabilities", "--precision", "fp32"]
    outputs = {}
    for name, source in (("pair", ["--model", str(tmp_path / "pair.json")]), ("a", ["-w", str(first), "--folds", "0"]),
                         ("b", ["-w", str(second), "--folds", "0"])):  # fmt: skip
        result = runner.invoke(app, ["predict", str(image), str(tmp_path / name), *common, *source])
        assert result.exit_code == 0, result.output
        [npz] = (tmp_path / name).glob("*.npz")
        outputs[name] = np.load(npz)["probabilities"].astype(np.float32)
    assert np.allclose(outputs["pair"], (outputs["a"] + outputs["b"]) / 2, atol=2e-3)
    [labels] = (tmp_path / "pair").glob("*.nii.gz")
    agreement = np.mean(read_label(labels)[0] == np.argmax(outputs["pair"], axis=0))
    assert agreement > 0.999  # the saved probabilities are float16: a near tie may fall either way


def test_a_folder_without_crossval_is_one_line_naming_the_command(trained_folds: Path, tmp_path: Path) -> None:
    fresh = Path(shutil.copytree(trained_folds, tmp_path / "fresh"))
    shutil.rmtree(WorkDir(fresh).crossval(), ignore_errors=True)
    result = runner.invoke(app, ["best", str(fresh), "-o", str(tmp_path / "i.json")])
    assert result.exit_code == 2
    assert f"no cross-validation yet; run 'clinix crossval -w {fresh}' first" in result.output


def test_folders_of_different_datasets_are_refused(two_configurations: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = two_configurations
    other = Path(shutil.copytree(second, tmp_path / "other"))
    plans = json.loads(WorkDir(other).plans.read_text())
    plans["dataset"]["name"] = "SomethingElse"
    WorkDir(other).plans.write_text(json.dumps(plans))
    with pytest.raises(
        ClinixError, match=r"another dataset than .*first \(dataset 'ClinixPhantom' vs 'SomethingElse'\)"
    ):
        find_best([first, other], tmp_path / "i.json")


def test_a_pair_without_saved_probabilities_is_listed_not_scored(
    two_configurations: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = two_configurations
    bare = Path(shutil.copytree(second, tmp_path / "bare"))
    for npz in WorkDir(bare).crossval().glob("*.npz"):
        npz.unlink()
    result = runner.invoke(app, ["best", str(first), str(bare), "-o", str(tmp_path / "i.json")])
    assert result.exit_code == 0, result.output
    pair = json.loads((tmp_path / "i.json").read_text())["candidates"][2]
    assert pair["mean_dsc"] is None and pair["note"].startswith(f"not scored: no saved probabilities in {bare}")
    assert "chosen:" in result.output and "n/a" in result.output


def test_an_inference_json_naming_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    identity = {"format": 1, "foreground_largest": False, "foreground_labels": [1], "rules": []}
    content = {"format": 1, "chosen": "x", "members": [{"workdir": str(tmp_path / "gone"), "folds": [0]}],
               "postprocessing": identity}  # fmt: skip
    (tmp_path / "inference.json").write_text(json.dumps(content))
    (tmp_path / "in").mkdir()
    result = runner.invoke(app, ["predict", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                                 str(tmp_path / "inference.json")])  # fmt: skip
    assert result.exit_code == 2
    assert "is not on this machine (move a model with 'clinix export WORK model.zip')" in result.output
