from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from clinix.errors import DatasetError
from clinix.io.image import Geometry, read_geometry, read_image, read_label, write_image

ROTATED = (0.0, 0.6, 0.8, 1.0, 0.0, 0.0, 0.0, 0.8, -0.6)


GEOMETRY = Geometry((3.3, 0.712345678901, 0.8), (12.25, -7.5, 1e-3), ROTATED)


def test_mha_round_trip_keeps_double_precision_geometry_exactly(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(1, 4, 5, 6)).astype(np.float32)
    write_image(tmp_path / "a.mha", image, GEOMETRY)
    array, read_back = read_image(tmp_path / "a.mha")
    assert read_back == GEOMETRY
    np.testing.assert_array_equal(array, image)


def test_nrrd_round_trip_keeps_geometry_to_double_rounding(tmp_path: Path) -> None:
    # NRRD stores spacing x direction as one matrix, so the split back costs an ulp or two.
    write_image(tmp_path / "a.nrrd", np.ones((4, 5, 6), dtype=np.float32), GEOMETRY)
    _, read_back = read_image(tmp_path / "a.nrrd")
    np.testing.assert_allclose(read_back.spacing, GEOMETRY.spacing, rtol=1e-14)
    np.testing.assert_allclose(read_back.direction, GEOMETRY.direction, atol=1e-14)
    assert read_back.origin == GEOMETRY.origin


def test_nifti_round_trip_keeps_float32_representable_geometry_exactly(tmp_path: Path) -> None:
    # NIfTI stores spacing as float32 and direction through a quaternion/matrix in float32.
    geometry = Geometry((2.5, 0.75, 0.625), (12.25, -7.5, 3.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    label = np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3
    write_image(tmp_path / "l.nii.gz", label, geometry, is_label=True)
    array, read_back = read_label(tmp_path / "l.nii.gz")
    assert read_back.spacing == geometry.spacing
    assert read_back.origin == geometry.origin
    np.testing.assert_allclose(read_back.direction, geometry.direction, atol=1e-7)
    np.testing.assert_array_equal(array, label)


def test_array_axes_are_z_y_x_and_spacing_follows_them(tmp_path: Path) -> None:
    image = sitk.Image(7, 6, 5, sitk.sitkFloat32)  # SimpleITK size is (x, y, z)
    image.SetSpacing((0.5, 0.7, 3.0))
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    array, geometry = read_image(tmp_path / "a.nii.gz")
    assert array.shape == (1, 5, 6, 7)
    assert geometry.spacing == (3.0, pytest.approx(0.7), 0.5)
    assert read_geometry(tmp_path / "a.nii.gz")[0] == (5, 6, 7)


def test_4d_image_becomes_channels_with_3d_geometry(tmp_path: Path) -> None:
    volumes = np.stack([np.full((3, 4, 5), float(c)) for c in range(2)]).astype(np.float32)  # (t, z, y, x)
    image = sitk.GetImageFromArray(volumes, isVector=False)
    image.SetSpacing((0.5, 0.5, 2.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / "multi.nii.gz"))
    array, geometry = read_image(tmp_path / "multi.nii.gz")
    assert array.shape == (2, 3, 4, 5)
    assert array[1].min() == 1.0
    assert geometry.spacing == (2.0, 0.5, 0.5)
    assert len(geometry.direction) == 9
    assert read_geometry(tmp_path / "multi.nii.gz")[1] == 2


def test_unreadable_file_names_itself(tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"broken\.nii\.gz: not a NIfTI file SimpleITK can read \(named \.nii\.gz"):
        read_image(broken)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        read_image(tmp_path / "nothing.nii.gz")


def test_label_with_fractional_values_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "l.nii.gz", np.full((2, 2, 2), 0.5, dtype=np.float32), Geometry.identity())
    with pytest.raises(DatasetError, match="non-integer"):
        read_label(tmp_path / "l.nii.gz")


def test_label_written_as_uint16_when_values_exceed_255(tmp_path: Path) -> None:
    label = np.zeros((2, 2, 2), dtype=np.int32)
    label[0, 0, 0] = 300
    write_image(tmp_path / "l.nrrd", label, Geometry.identity(), is_label=True)
    assert sitk.ReadImage(str(tmp_path / "l.nrrd")).GetPixelID() == sitk.sitkUInt16
    assert read_label(tmp_path / "l.nrrd")[0].max() == 300


def test_interrupted_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_image(tmp_path / "bad.nii.gz", np.zeros((2, 2)), Geometry.identity())
    assert list(tmp_path.iterdir()) == []
