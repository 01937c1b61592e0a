from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from clinix import __version__
from clinix.infer import Predictor, predict_cases
from clinix.infer.inputs import discover_inputs
from clinix.io.image import Geometry, read_image, read_label, write_image
from tests.infer.test_predictor import OneHotOfImage, tiny_plan

ANGLE = math.radians(30.0)
OBLIQUE = Geometry(
    (3.0, 0.8, 1.1),
    (12.5, -40.0, 7.0),
    (math.cos(ANGLE), 0.0, -math.sin(ANGLE), 0.0, -1.0, 0.0, math.sin(ANGLE), 0.0, math.cos(ANGLE)),
)
SHAPE = (7, 20, 13)  # z shorter than the 8³ patch: padded, then cropped back


def label_image() -> np.ndarray:
    """Labels 0, 1, 2 inside a box away from the border (so cropping to nonzero matters), asymmetric."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[1:6, 3:17, 2:11] = 1
    label[2:4, 5:9, 3:6] = 2
    label[5, 16, 10] = 2
    return label


@pytest.fixture
def label_as_image(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """An input folder whose one image is a label map stored as float, with an oblique, anisotropic grid."""
    write_image(tmp_path / "in" / "knee_0000.nii.gz", label_image().astype(np.float32), OBLIQUE)
    return tmp_path / "in", label_image()


def identity_predictor() -> Predictor:
    # plan spacing = the image's spacing and no normalisation: preprocessing only crops, so the perfect
    # model must give the input label back voxel for voxel
    return Predictor(tiny_plan(OBLIQUE.spacing), [OneHotOfImage(3)], device="cpu", tta=True)


def test_a_perfect_model_gives_the_label_back_on_the_input_grid(label_as_image: tuple[Path, np.ndarray]) -> None:
    in_dir, label = label_as_image
    out_dir = in_dir.parent / "out"
    summary = predict_cases(identity_predictor(), discover_inputs(in_dir), out_dir)
    assert summary.written == ["knee"] and not summary.failed
    predicted, geometry = read_label(out_dir / "knee.nii.gz")
    np.testing.assert_array_equal(predicted, label)
    _, input_geometry = read_image(in_dir / "knee_0000.nii.gz")
    assert geometry.spacing == input_geometry.spacing
    np.testing.assert_allclose(geometry.origin, input_geometry.origin, atol=1e-6)
    np.testing.assert_allclose(geometry.direction, input_geometry.direction, atol=1e-6)
    assert sitk.ReadImage(str(out_dir / "knee.nii.gz")).GetPixelID() == sitk.sitkUInt8


def test_predict_image_returns_the_label_and_the_images_geometry() -> None:
    labels, geometry = identity_predictor().predict_image(label_image().astype(np.float32)[None], OBLIQUE)
    assert labels.dtype == np.uint8 and geometry == OBLIQUE
    np.testing.assert_array_equal(labels, label_image())


def test_saved_probabilities_are_float16_on_the_input_grid_and_sum_to_one(
    label_as_image: tuple[Path, np.ndarray],
) -> None:
    in_dir, label = label_as_image
    out_dir = in_dir.parent / "out"
    predict_cases(identity_predictor(), discover_inputs(in_dir), out_dir, save_probabilities=True)
    probabilities = np.load(out_dir / "knee.npz")["probabilities"]
    assert probabilities.shape == (3, *SHAPE) and probabilities.dtype == np.float16
    # float16 keeps 11 significant bits: three channels summing to 1 are off by at most a few 2^-11
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=2e-3)
    np.testing.assert_array_equal(probabilities.argmax(axis=0), label)
    description = json.loads((out_dir / "knee.json").read_text())
    assert description["class_names"] == ["background", "organ", "tumour"]
    assert description["clinix_version"] == __version__


def test_finished_cases_are_skipped_unless_overwrite(label_as_image: tuple[Path, np.ndarray]) -> None:
    in_dir, _ = label_as_image
    out_dir = in_dir.parent / "out"
    cases = discover_inputs(in_dir)
    predict_cases(identity_predictor(), cases, out_dir)
    again = predict_cases(identity_predictor(), cases, out_dir)
    assert again.skipped == ["knee"] and again.written == []
    # asking for probabilities too: the case is not finished without them
    assert predict_cases(identity_predictor(), cases, out_dir, save_probabilities=True).written == ["knee"]
    assert predict_cases(identity_predictor(), cases, out_dir, overwrite=True).written == ["knee"]


def test_ctrl_c_while_writing_leaves_no_file(
    label_as_image: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_dir, _ = label_as_image
    out_dir = in_dir.parent / "out"

    def interrupted_write(image: sitk.Image, path: str, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(sitk, "WriteImage", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        predict_cases(identity_predictor(), discover_inputs(in_dir), out_dir, save_probabilities=True)
    # the npz and json were complete before the label map started; the label map left nothing behind
    assert sorted(p.name for p in out_dir.iterdir()) == ["knee.json", "knee.npz"]
