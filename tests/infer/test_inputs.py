from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clinix.errors import ClinixError, DatasetError
from clinix.infer.inputs import discover_inputs, read_input_case
from clinix.io.image import Geometry, write_image


def touch_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_channel_files_group_into_cases_and_other_images_are_cases_of_their_own(tmp_path: Path) -> None:
    names = ["a_0001.nii.gz", "a_0000.nii.gz", "b.nrrd", "c_0001.nii.gz", "notes.txt", ".a_0002.nii.gz"]
    touch_images(tmp_path, names)
    cases = {case.case_id: case for case in discover_inputs(tmp_path)}
    assert sorted(cases) == ["a", "b", "c"]
    assert [f.name for f in cases["a"].files] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert cases["a"].ending == ".nii.gz" and cases["a"].problem is None
    assert cases["b"].files == (tmp_path / "b.nrrd",) and cases["b"].ending == ".nrrd"
    assert cases["c"].problem == "channel files _0001 are not numbered _0000 to _0000"


def test_one_file_is_one_case(tmp_path: Path) -> None:
    touch_images(tmp_path, ["scan_0000.mha"])
    [case] = discover_inputs(tmp_path / "scan_0000.mha")
    assert (case.case_id, case.ending) == ("scan", ".mha")


def test_a_missing_or_empty_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ClinixError, match="no such file or folder"):
        discover_inputs(tmp_path / "absent")
    with pytest.raises(ClinixError, match="no images found"):
        discover_inputs(tmp_path)


def test_a_channel_count_other_than_the_models_names_the_case_and_the_expected_channels(tmp_path: Path) -> None:
    for channel in range(2):
        write_image(tmp_path / f"p_{channel:04d}.nii.gz", np.ones((2, 3, 4), np.float32), Geometry.identity())
    [case] = discover_inputs(tmp_path)
    image, _ = read_input_case(case, ["T1", "T2"])
    assert image.shape == (2, 2, 3, 4)
    with pytest.raises(DatasetError, match=r"case p has 2 channel\(s\), the model expects 1 \(CT\)"):
        read_input_case(case, ["CT"])
