"""ITK's own messages: captured (never on the terminal), and read into one line that says what is wrong."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from clinix.errors import ClinixWarning, DatasetError
from clinix.io.image import Geometry, read_geometry, read_image, write_image
from clinix.io.itk import captured_native_stderr, explain_failure, itk_call

GEOMETRY = Geometry.identity((2.0, 1.0, 1.0))


def noisy(path: Path) -> Path:
    write_image(path, np.random.default_rng(0).normal(0, 1, (6, 8, 10)).astype(np.float32), GEOMETRY)
    return path


def cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_native_writes_to_fd_2_are_captured_and_python_s_stderr_still_reaches_the_terminal(capfd) -> None:
    with captured_native_stderr() as lines:
        os.write(2, b"MetaImage: something native\n")

        print("a progress bar", file=sys.stderr)
    assert lines == ["MetaImage: something native"]
    assert capfd.readouterr().err == "a progress bar\n"


@pytest.mark.parametrize("compressed", [True, False])
def test_a_metaimage_cut_short_reads_as_truncated_and_prints_nothing(tmp_path: Path, capfd, compressed: bool) -> None:
    path = tmp_path / "cut.mha"
    write_image(path, np.random.default_rng(0).normal(0, 1, (6, 8, 10)).astype(np.float32), GEOMETRY)
    if not compressed:
        sitk.WriteImage(sitk.ReadImage(str(path)), str(path), useCompression=False)
    cut(path, 0.5)
    with pytest.raises(DatasetError, match=r"truncated: it holds [\d,]+ of the [\d,]+ bytes of voxel data$"):
        read_image(path)
    assert capfd.readouterr().err == ""  # "MetaImage: M_ReadElementsData: data not read completely" was captured


@pytest.mark.parametrize("compressed", [True, False])
def test_a_nrrd_cut_short_reads_as_truncated(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "cut.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(6, 8, 10))), str(path), compressed)
    cut(path, 0.6)
    with pytest.raises(DatasetError, match=r"truncated: it holds [\d,]+ of the 3,840 bytes of voxel data$"):
        read_image(path)


def test_a_header_whose_data_file_is_missing(tmp_path: Path) -> None:
    noisy(tmp_path / "case.nhdr")
    for data in tmp_path.glob("case.raw*"):
        data.unlink()
    with pytest.raises(DatasetError, match=r"the data file its header names \(case\.raw\.gz\) cannot be opened"):
        read_geometry(tmp_path / "case.nhdr")


@pytest.mark.parametrize(
    ("content", "name", "problem"),
    [
        (b"", "a.nii.gz", "empty file (0 bytes)"),
        (b"text", "a.nii.gz", "not a NIfTI file SimpleITK can read (named .nii.gz, but not gzip-compressed)"),
        (b"text" * 100, "a.nii", "not a NIfTI file SimpleITK can read (its content does not start like one)"),
        (b"text" * 100, "a.mha", "not a MetaImage file SimpleITK can read (its content does not start like one)"),
        (b"text" * 100, "a.png.gz", "not an image format SimpleITK reads (unknown file ending)"),
    ],
)
def test_what_is_wrong_is_said_instead_of_a_source_line(tmp_path: Path, content: bytes, name: str, problem: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError) as raised:
        itk_call(path, lambda: sitk.ReadImage(str(path)))
    assert raised.value.problem == problem
    assert "cxx" not in str(raised.value)


def test_unknown_messages_fall_back_to_their_most_specific_line_without_addresses(tmp_path: Path) -> None:
    text = "Exception thrown in SimpleITK X: /src/itkThing.cxx:42:\nITK ERROR: ThingIO(0x55d0b8): the real cause"
    (tmp_path / "a.mha").write_bytes(b"x")
    assert explain_failure(tmp_path / "a.mha", text, []) == "ThingIO: the real cause"


def test_a_message_of_a_read_that_succeeds_becomes_a_warning(tmp_path: Path) -> None:
    path = noisy(tmp_path / "fine.mha")

    def read_and_complain() -> sitk.Image:
        os.write(2, b"WARNING: In NiftiImageIO: the qform looks odd\n")
        return sitk.ReadImage(str(path))

    with pytest.warns(ClinixWarning, match=r"fine\.mha: In NiftiImageIO: the qform looks odd"):
        itk_call(path, read_and_complain)
