"""The postprocessing decision on crafted cross-validation predictions whose right answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinix.crossval.postprocessing import decide_postprocessing
from clinix.io.image import Geometry, write_image
from clinix.metrics import ClassSpec

GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
ORGAN, TUMOUR = ClassSpec("organ", (1,)), ClassSpec("tumour", (2,))


def write_cases(folder: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[Path, Path]]:
    """Prediction and reference label maps of each pair as NIfTI files."""
    (folder / "pred").mkdir(parents=True)
    (folder / "ref").mkdir()
    files = []
    for index, (pred, ref) in enumerate(pairs):
        files.append((folder / "pred" / f"case_{index}.nii.gz", folder / "ref" / f"case_{index}.nii.gz"))
        write_image(files[-1][0], pred.astype(np.uint8), GEOMETRY, is_label=True)
        write_image(files[-1][1], ref.astype(np.uint8), GEOMETRY, is_label=True)
    return files


def organ_case(shift: int, spurious: bool) -> tuple[np.ndarray, np.ndarray]:
    """An organ predicted exactly, plus (``spurious``) a 3³ blob of organ far from it."""
    ref = np.zeros((24, 24, 24), dtype=np.uint8)
    ref[4 + shift : 14 + shift, 4:14, 4:14] = 1
    pred = ref.copy()
    if spurious:
        pred[19:22, 19:22, 19:22] = 1
    return pred, ref


def lesion_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three true lesions (5³, 4³, 3³) found exactly, and two 1-voxel false positives."""
    ref = np.zeros((32, 32, 32), dtype=np.uint8)
    ref[2:7, 2:7, 2:7] = 1
    ref[15:19, 15:19, 2:6] = 1
    ref[25:28, 2:5, 25:28] = 1
    pred = ref.copy()
    rng = np.random.default_rng(seed)
    for z, y in rng.integers(10, 13, size=(2, 2)):
        pred[z, y + 10 * (z % 2), 30] = 1
    return pred, ref


def test_a_spurious_organ_blob_is_removed_by_keeping_the_largest_component(tmp_path: Path) -> None:
    files = write_cases(tmp_path, [organ_case(0, True), organ_case(2, True), organ_case(4, False)])
    decision = decide_postprocessing(files, [ORGAN], None)
    assert not decision.foreground_largest  # one class: the per-class step alone
    assert [(rule.name, rule.keep) for rule in decision.rules] == [("organ", "largest")]
    assert decision.evidence["postprocessed"]["mean_dsc"] == 1.0 > decision.evidence["baseline"]["mean_dsc"]


def test_many_true_lesions_get_a_volume_threshold_not_the_largest_component(tmp_path: Path) -> None:
    files = write_cases(tmp_path, [lesion_case(seed) for seed in range(3)])
    decision = decide_postprocessing(files, [ClassSpec("lesion", (1,))], None)
    [rule] = decision.rules
    assert rule.keep == "min_volume"
    assert 1.0 < rule.min_volume_mm3 < 27.0  # above the false positives, below the smallest lesion
    assert decision.evidence["postprocessed"]["per_class"]["lesion"] == 1.0


def test_perfect_predictions_need_no_postprocessing(tmp_path: Path) -> None:
    files = write_cases(tmp_path, [organ_case(shift, False) for shift in range(3)])
    decision = decide_postprocessing(files, [ORGAN], None)
    assert decision.is_identity
    assert decision.evidence["postprocessed"] == decision.evidence["baseline"]


def organ_with_tumour(spurious: bool, tumour_apart: bool) -> tuple[np.ndarray, np.ndarray]:
    """An organ with a tumour inside it (or, ``tumour_apart``, a tumour of its own far away)."""
    pred, ref = organ_case(0, spurious)
    tumour = (slice(16, 20), slice(2, 6), slice(16, 20)) if tumour_apart else (slice(7, 10), slice(7, 10), slice(7, 10))
    ref[tumour] = pred[tumour] = 2
    return pred, ref


def test_a_spurious_blob_of_one_class_is_removed_by_the_foreground_step(tmp_path: Path) -> None:
    files = write_cases(tmp_path, [organ_with_tumour(True, False), organ_with_tumour(False, False)])
    decision = decide_postprocessing(files, [ORGAN, TUMOUR], None)
    assert decision.foreground_largest and decision.foreground_labels == (1, 2)
    assert decision.rules == ()  # after the foreground step nothing is left to gain per class


def test_a_step_that_lowers_a_class_is_not_kept(tmp_path: Path) -> None:
    # keeping the largest foreground component would delete the (correct) tumour that lies apart
    files = write_cases(tmp_path, [organ_with_tumour(True, True), organ_with_tumour(False, True)])
    decision = decide_postprocessing(files, [ORGAN, TUMOUR], None)
    assert not decision.foreground_largest
    first = decision.evidence["tried"][0]
    assert first["step"] == "foreground largest" and first["kept"] is False
    assert first["per_class"]["tumour"] < 1.0  # it lost the tumour
    assert [(rule.name, rule.keep) for rule in decision.rules] == [("organ", "largest")]
    assert decision.evidence["postprocessed"]["per_class"] == {"organ": 1.0, "tumour": 1.0}


def test_the_ignore_label_counts_nowhere(tmp_path: Path) -> None:
    # the spurious blob lies where the reference is unannotated (label 9): removing it gains nothing
    pairs = []
    for shift in range(2):
        pred, ref = organ_case(shift, True)
        ref[18:23, 18:23, 18:23] = 9
        pairs.append((pred, ref))
    decision = decide_postprocessing(write_cases(tmp_path, pairs), [ORGAN], 9)
    assert decision.is_identity
