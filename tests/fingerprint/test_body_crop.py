"""The body box of a CT: the patient kept, air, table and padding cut; no label ever cut."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from clinix.data.lesion import write_lesion_dataset
from clinix.fingerprint import body_crop_box, ct_channels, extract_fingerprint
from clinix.fingerprint.extract import BODY_MARGIN_MM
from clinix.io.image import Geometry, read_image, read_label
from clinix.plan import plan_experiment
from clinix.preprocess import preprocess_case, restore_label_map


def chest(shape: tuple[int, int, int] = (10, 64, 80)) -> np.ndarray:
    """``(1, Z, Y, X)`` HU: air, a body ellipse (soft tissue with two −850 HU lungs), a table below it."""
    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    image = np.full(shape, -1000.0, dtype=np.float32)
    body = ((y - 28) / 18) ** 2 + ((x - 40) / 26) ** 2 <= 1  # rows 10..46, columns 14..66
    image[body] = 40.0
    for centre in (28, 52):
        image[body & (((y - 28) / 10) ** 2 + ((x - centre) / 8) ** 2 <= 1)] = -850.0
    image[:, 56:59, 5:75] = 300.0  # the table, apart from the body
    return image[None]


def test_the_box_is_the_body_plus_a_margin_without_the_table() -> None:
    image = chest()
    body = image[0, 0] > -1000
    body[50:] = False  # the table
    rows, columns = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    margin = int(np.ceil(BODY_MARGIN_MM / 2.0))
    z, y, x = body_crop_box(image, [0], (5.0, 2.0, 2.0))
    assert z == [0, 10]
    # the body's box and its margin, found on a grid halved in-plane: at most one voxel more per side
    for (lo, hi), present in ((y, rows), (x, columns)):
        assert present[0] - margin - 1 <= lo <= present[0] - margin
        assert present[-1] + 1 + margin <= hi <= present[-1] + 2 + margin
    assert y[1] < 56  # the table (rows 56-58) is cut


def test_a_label_outside_the_body_widens_the_box_and_air_only_keeps_everything() -> None:
    image, label = chest(), np.zeros((10, 64, 80), dtype=np.uint8)
    label[4, 60:62, 70:72] = 1  # a (wrong, but given) label beside the table
    box = body_crop_box(image, [0], (5.0, 2.0, 2.0), label)
    assert box[1][1] >= 62 and box[2][1] >= 72
    air = np.full((1, 6, 20, 20), -1000.0, dtype=np.float32)
    assert body_crop_box(air, [0], (1.0, 1.0, 1.0)) == [[0, 6], [0, 20], [0, 20]]


def test_ct_channels_are_found_by_name() -> None:
    assert ct_channels(["CT", "PET"]) == [0] and ct_channels(["t1", "ct"]) == [1] and ct_channels(["T2"]) == []


def test_a_body_cropped_plan_preprocesses_to_the_body_and_restores_the_full_grid(tmp_path: Path) -> None:
    dataset = write_lesion_dataset(tmp_path / "data", cases=3, test_cases=0, size="tiny")
    fingerprint, _ = extract_fingerprint(dataset, tmp_path / "work", workers=1)
    assert fingerprint.has_body_boxes
    stored = json.loads((tmp_path / "work" / "fingerprint.json").read_text())["cases"][0]
    assert stored["body_box"] == fingerprint.cases[0].body_box
    plan, _ = plan_experiment(dataset, tmp_path / "work", device="cuda", crop="body", workers=1)
    assert plan.crop == "body"
    case = fingerprint.cases[0]
    image, geometry = read_image(dataset / "imagesTr" / f"{case.case_id}_0000.nii.gz")
    label, _ = read_label(dataset / "labelsTr" / f"{case.case_id}.nii.gz")
    data, seg, properties = preprocess_case(image, label, geometry, plan, case.case_id)
    assert properties.crop_box == case.body_box  # the fingerprint's box, so the planner's shapes hold
    kept = np.prod([hi - lo for lo, hi in case.body_box]) / np.prod(case.shape)
    assert kept < 0.8  # air around the chest is cut
    assert (seg is not None and (seg == 1).sum() > 0) or not (label == 1).any()
    # inference crops to the body alone, and the restored labels cover the whole input grid
    _, _, inference = preprocess_case(image, None, geometry, plan, case.case_id)
    background = np.stack([np.ones(data.shape[1:], np.float32), np.zeros(data.shape[1:], np.float32)])
    restored = restore_label_map(background, inference, plan)
    assert restored.shape == tuple(case.shape) and not restored.any()
    nonzero = dataclasses.replace(plan, crop="nonzero")
    assert preprocess_case(image, None, geometry, nonzero)[2].crop_box == [[0, s] for s in case.shape]
    assert isinstance(geometry, Geometry)
