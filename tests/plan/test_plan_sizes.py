"""Plans users would choose: for fingerprints shaped like the paper's datasets, at the 24 GB the paper trained
on, patches no smaller than its Table 2; for a chest CT at the default 8 GB, a patch of at least ten times
the 16 × 64 × 64 the old memory model allowed."""

from __future__ import annotations

import math

import pytest

from clinix.plan import PROFILES, make_plan
from clinix.plan.topology import pool_and_kernel_topology
from tests.plan.test_planner import fingerprint

# name: (median shape after crop at the native spacing, native spacing = Table 1's resampling, channels,
#        classes, Table 2 patch)
PAPER_DATASETS = {
    "BraTS": ([138, 170, 138], [1.0, 1.0, 1.0], ("T1", "T1ce", "T2", "FLAIR"), 4, [128, 128, 128]),
    "LiverT": ([432, 512, 512], [1.22, 0.76, 0.76], ("CT",), 2, [64, 192, 192]),
    "ABD": ([150, 490, 490], [2.5, 0.80, 0.80], ("CT",), 14, [40, 224, 192]),
    "LungT": ([256, 512, 512], [1.25, 0.77, 0.77], ("CT",), 2, [96, 160, 160]),
}
CHEST_CT = ([58, 186, 191], [3.0, 0.98, 0.98])


def labelled(shape: list[int], spacing: list[float], channels: tuple[str, ...], classes: int):
    found = fingerprint(shape, spacing, cases=100, channels=channels)
    labels = {"background": 0, **{f"class{k}": k for k in range(1, classes)}}
    found.dataset["labels"] = labels
    found.labels = {name: {"values": [value], "voxels": 1000, "cases_present": 100} for name, value in labels.items()}
    return found


def within_one_planner_step(ours: list[int], theirs: list[int], spacing: list[float]) -> bool:
    """Ours is at least theirs in voxels, or would be one pooling-divisor larger along some axis."""
    divisor = pool_and_kernel_topology(spacing, ours).divisor
    grown = [math.prod([*ours[:a], ours[a] + divisor[a], *ours[a + 1 :]]) for a in range(3)]
    return math.prod(ours) >= math.prod(theirs) or max(grown) >= math.prod(theirs)


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_24_gb_plans_are_no_smaller_than_the_papers(name: str) -> None:
    shape, spacing, channels, classes, table_2 = PAPER_DATASETS[name]
    plan = make_plan(labelled(shape, spacing, channels, classes), PROFILES["cuda"], 24.0, "mambaclinix", "ce-dice-trs")
    assert plan.memory_estimate_gb <= 24.0
    assert plan.batch_size >= 2
    assert within_one_planner_step(plan.patch_size, table_2, plan.target_spacing), (plan.patch_size, table_2)


def test_a_chest_ct_at_8_gb_gets_ten_times_the_old_patch() -> None:
    plan = make_plan(labelled(*CHEST_CT, ("CT",), 2), PROFILES["cuda"], 8.0, "mambaclinix", "ce-dice-trs")
    assert plan.memory_estimate_gb <= 8.0
    assert math.prod(plan.patch_size) >= 10 * 16 * 64 * 64
    assert plan.memory_model_version == 2


def test_checkpointing_lets_a_small_gpu_train_a_larger_patch() -> None:
    fingerprint = labelled(*CHEST_CT, ("CT",), 2)
    plain = make_plan(fingerprint, PROFILES["cuda"], 4.0, "mambaclinix", "ce-dice-trs")
    recomputed = make_plan(fingerprint, PROFILES["cuda"], 4.0, "mambaclinix", "ce-dice-trs", checkpointing=True)
    assert recomputed.network["checkpointing"] and not plain.network["checkpointing"]
    assert recomputed.memory_estimate_gb <= 4.0
    assert math.prod(recomputed.patch_size) * recomputed.batch_size > math.prod(plain.patch_size) * plain.batch_size
