"""Model bundles: ``clinix export`` and ``clinix predict --model``, the round trip and every refusal."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from clinix.bundle import MANIFEST, export_bundle, open_bundle
from clinix.cli import app
from clinix.errors import ClinixError
from clinix.io.image import read_label
from clinix.workdir import WorkDir
from tests.infer.test_cli import write_case
from tests.infer.test_predictor import save_checkpoint, tiny_network, tiny_plan

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Two folds of random weights with optimizer state and history, a plan and a postprocessing file."""
    plan = tiny_plan(target_spacing=(2.0, 1.0, 1.0))
    work = WorkDir(tmp_path / "work")
    for fold in (0, 1):
        network = tiny_network(plan, seed=fold)
        optimizer = torch.optim.Adam(network.parameters()).state_dict()
        save_checkpoint(work.checkpoint(fold, "final"), plan, network, fold, optimizer=optimizer, history=[{}] * 5)
    work.plans.write_text(json.dumps(plan.to_json()))
    rule = {"name": "organ", "labels": [1], "keep": "largest"}
    postprocessing = {"format": 1, "foreground_largest": False, "foreground_labels": [1, 2], "rules": [rule]}
    work.postprocessing().write_text(json.dumps(postprocessing))
    return work.root


def predict(tmp_path: Path, out: str, *source: str) -> Result:
    return runner.invoke(
        app, ["predict", str(tmp_path / "in"), str(tmp_path / out), "--device", "cpu", "--no-tta", *source]
    )


def rebuild(bundle: Path, target: Path, change: dict[str, bytes | None], manifest: dict | None = None) -> Path:
    """``bundle`` with members replaced (bytes), removed (None) or added; checksums of ``manifest`` kept as
    given (default: recomputed for the new members, so only the change under test differs)."""
    with zipfile.ZipFile(bundle) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members.update(change)
    members = {name: data for name, data in members.items() if data is not None}
    if manifest is None:
        manifest = json.loads(members[MANIFEST])
        manifest["files"] = {
            name: hashlib.sha256(data).hexdigest() for name, data in members.items() if name != MANIFEST
        }
    members[MANIFEST] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


@pytest.fixture
def bundle(workdir: Path, tmp_path: Path) -> Path:
    return export_bundle(workdir, tmp_path / "model.zip")


def test_the_bundle_holds_weights_plan_postprocessing_and_checksums(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        names = set(archive.namelist())
        state = torch.load(io.BytesIO(archive.read("results/3d_fullres/fold_0/checkpoint_final.pt")), weights_only=True)
        for name, digest in manifest["files"].items():
            assert hashlib.sha256(archive.read(name)).hexdigest() == digest
    assert names == {MANIFEST, *manifest["files"]}
    assert set(manifest["files"]) == {
        "plans.json",
        "results/3d_fullres/postprocessing.json",
        "results/3d_fullres/fold_0/checkpoint_final.pt",
        "results/3d_fullres/fold_1/checkpoint_final.pt",
    }
    assert manifest["format"] == 1 and manifest["folds"] == [0, 1]
    assert manifest["dataset"]["labels"] == {"background": 0, "organ": 1, "tumour": 2}
    assert "optimizer" not in state and "history" not in state and "model" in state


def test_predicting_from_the_bundle_equals_predicting_from_the_working_folder(
    workdir: Path, bundle: Path, tmp_path: Path
) -> None:
    write_case(tmp_path / "in", "case")
    from_work = predict(tmp_path, "from_work", "-w", str(workdir))
    from_bundle = predict(tmp_path, "from_bundle", "--model", str(bundle))
    assert from_work.exit_code == 0 and from_bundle.exit_code == 0, from_bundle.output
    assert "postprocessing: organ: largest component only" in from_bundle.output
    work_labels, work_geometry = read_label(tmp_path / "from_work" / "case.nii.gz")
    bundle_labels, bundle_geometry = read_label(tmp_path / "from_bundle" / "case.nii.gz")
    assert np.array_equal(work_labels, bundle_labels) and work_geometry == bundle_geometry


def test_the_bundle_is_extracted_into_a_temporary_folder_removed_afterwards(bundle: Path) -> None:
    with open_bundle(bundle) as folder:
        assert WorkDir(folder).checkpoint(1, "final").is_file()
    assert not folder.exists()


def test_the_cli_exports_and_names_what_it_wrote(workdir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(workdir), str(tmp_path / "m.zip"), "--folds", "1"])
    assert result.exit_code == 0, result.output
    assert "folds 1, 3 files" in result.output
    assert zipfile.is_zipfile(tmp_path / "m.zip")


def test_exporting_without_a_trained_fold_or_to_a_non_zip_is_refused(tmp_path: Path, workdir: Path) -> None:
    with pytest.raises(ClinixError, match="no trained fold"):
        export_bundle(tmp_path / "empty", tmp_path / "m.zip")
    with pytest.raises(ClinixError, match=r"m\.tar: a model bundle is a \.zip file"):
        export_bundle(workdir, tmp_path / "m.tar")


def hostile(bundle: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A damaged or hostile copy of ``bundle`` and the message its refusal must hold."""
    target = tmp_path / f"{kind}.zip"
    manifest = json.loads(zipfile.ZipFile(bundle).read(MANIFEST))
    if kind == "not-a-zip":
        target.write_bytes(b"PK\x03\x04 but not really a zip")
        return target, "not a zip archive"
    if kind == "newer":
        return rebuild(bundle, target, {}, manifest={**manifest, "format": 2}), "bundle format 2 is newer"
    if kind == "climbs-out":
        return rebuild(bundle, target, {"../escaped.txt": b"x"}), "'../escaped.txt' would leave the bundle"
    if kind == "absolute":
        return rebuild(bundle, target, {"/tmp/absolute.txt": b"x"}), "'/tmp/absolute.txt' would leave the bundle"
    if kind == "unlisted":
        extra = rebuild(bundle, target, {})
        with zipfile.ZipFile(extra, "a") as archive:
            archive.writestr("notes.txt", b"not in the manifest")
        return extra, "'notes.txt' is not listed"
    if kind == "checksum":
        name = "results/3d_fullres/fold_0/checkpoint_final.pt"
        data = zipfile.ZipFile(bundle).read(name)
        altered = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return rebuild(bundle, target, {name: altered}, manifest=manifest), f"{name} fails its checksum"
    if kind == "code":  # a checkpoint that would run code when unpickled, with a matching checksum
        buffer = io.BytesIO()
        torch.save({"model": {}, "payload": np.dtype("float64").type}, buffer)  # a class: not plain data
        name = "results/3d_fullres/fold_0/checkpoint_final.pt"
        return rebuild(bundle, target, {name: buffer.getvalue()}), "not plain data, refused"
    raise AssertionError(kind)


KINDS = ["not-a-zip", "newer", "climbs-out", "absolute", "unlisted", "checksum", "code"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_or_hostile_bundle_is_one_line_exit_2_and_nothing_escapes(
    bundle: Path, tmp_path: Path, kind: str
) -> None:
    target, message = hostile(bundle, tmp_path, kind)
    write_case(tmp_path / "in", "case")
    result = predict(tmp_path, "out", "--model", str(target))
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ") and message in line, line
    assert not (tmp_path / "out" / "case.nii.gz").exists()
    assert not list(tmp_path.parent.glob("escaped.txt")) and not Path("/tmp/absolute.txt").exists()


def test_a_bundle_without_its_manifest_is_refused(bundle: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        members = {name: archive.read(name) for name in archive.namelist() if name != MANIFEST}
    target = tmp_path / "bare.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ClinixError, match=r"not a clinix model bundle \(no bundle\.json\)"), open_bundle(target):
        pass
