"""Losses of paper §2.5 / Table 5: CE, soft Dice, region-specific Tversky, compounds, deep supervision."""

from __future__ import annotations

import math

import pytest
import torch

from clinix.errors import ClinixError
from clinix.train.losses import (
    LOSS_NAMES,
    CompoundLoss,
    DeepSupervisionLoss,
    adaptive_tversky_weights,
    build_loss,
    cross_entropy_loss,
    deep_supervision_weights,
    downsample_label_map,
    effective_region_grid,
    region_tversky_loss,
    soft_dice_loss,
)

EPS = 1e-5
LOG3 = math.log(3.0)  # logits (0, ±log 3) give softmax probabilities 0.75 / 0.25


def released_reference_input(classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of reference §2.1: logits (2, K, 16, 16, 28) float64 and labels (2, 1, 16, 16, 28)."""
    shape = (2, classes, 16, 16, 28)
    logits = (3 * torch.sin(0.37 * torch.arange(math.prod(shape), dtype=torch.float64))).reshape(shape)
    b, d, h, w = torch.meshgrid(*(torch.arange(n) for n in (2, 16, 16, 28)), indexing="ij")
    labels = ((d + 2 * h + 3 * w + b) % classes)[:, None]
    return logits, labels


def binary_line(foreground_logits: list[float], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample, two classes, voxels along X: logits (1, 2, 1, 1, N) with class 0 at 0, labels (1, 1, 1, 1, N)."""
    foreground = torch.tensor(foreground_logits, dtype=torch.float64)
    logits = torch.stack([torch.zeros_like(foreground), foreground]).reshape(1, 2, 1, 1, -1)
    return logits, torch.tensor(labels).reshape(1, 1, 1, 1, -1)


def random_case(seed: int, classes: int = 3, shape=(2, 1, 6, 8, 10)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, shape, generator=generator)
    logits = torch.randn((shape[0], classes, *shape[2:]), generator=generator, dtype=torch.float64)
    return logits, labels


# --- region-specific Tversky: the released code's values (reference §2.1, convention −mean T) ---


@pytest.mark.parametrize(
    ("batch_dice", "do_bg", "released"),
    [(True, False, -0.3018654968), (False, False, -0.2949116720), (True, True, -0.3234181415)],
)
def test_region_tversky_reproduces_released_values(batch_dice, do_bg, released):
    logits, labels = released_reference_input()
    loss = region_tversky_loss(logits, labels, region_grid=(8, 8, 14), batch_dice=batch_dice, do_bg=do_bg)
    assert loss.item() == pytest.approx(1 + released, abs=1e-6)


def test_region_tversky_reproduces_released_value_with_grid_finer_than_input():
    logits, labels = released_reference_input()
    logits, labels = logits[:, :, ::4, ::4, ::4], labels[:, :, ::4, ::4, ::4]  # 4×4×7 < grid 8×8×14
    loss = region_tversky_loss(logits, labels, region_grid=(8, 8, 14), batch_dice=True, clamp_grid=False)
    assert loss.item() == pytest.approx(1 - 0.2215666165, abs=1e-6)


def test_clamped_grid_equals_released_when_every_voxel_is_repeated_equally():
    # 8×8×14 regions on 4×4×7 voxels repeat each voxel exactly 2×2×2 times, so the mean over the
    # repeated grid equals the mean over the clamped 4×4×7 grid of single voxels
    logits, labels = released_reference_input()
    logits, labels = logits[:, :, ::4, ::4, ::4], labels[:, :, ::4, ::4, ::4]
    loss = region_tversky_loss(logits, labels, region_grid=(8, 8, 14), batch_dice=True)
    assert loss.item() == pytest.approx(1 - 0.2215666165, abs=1e-6)


# --- region-specific Tversky: hand-computed values ---


def test_fixed_tversky_on_one_region_matches_hand_computed_means():
    # p1 = (.75, .75, .75, .25), g = (1, 1, 0, 0): region means TP .375, FP .25, FN .125
    logits, labels = binary_line([LOG3, LOG3, LOG3, -LOG3], [1, 1, 0, 0])
    loss = region_tversky_loss(logits, labels, region_grid=(1, 1, 1), alpha_beta=(0.3, 0.7))
    expected = (0.375 + EPS) / (0.375 + 0.3 * 0.25 + 0.7 * 0.125 + EPS)
    assert loss.item() == pytest.approx(1 - expected, abs=1e-12)


def test_adaptive_tversky_weighs_the_dominant_error_type_more():
    logits, labels = binary_line([LOG3, LOG3, LOG3, -LOG3], [1, 1, 0, 0])
    loss = region_tversky_loss(logits, labels, region_grid=(1, 1, 1))
    alpha = 0.3 + 0.4 * (0.25 + EPS) / (0.375 + EPS)  # FP dominates: α ≈ 0.567 > β ≈ 0.433
    beta = 0.3 + 0.4 * (0.125 + EPS) / (0.375 + EPS)
    expected = (0.375 + EPS) / (0.375 + alpha * 0.25 + beta * 0.125 + EPS)
    assert loss.item() == pytest.approx(1 - expected, abs=1e-12)


def test_adaptive_weights_are_not_detached_and_sum_to_one_plus_smoothing():
    fp = torch.tensor([0.3], requires_grad=True)
    fn = torch.tensor([0.1])
    alpha, beta = adaptive_tversky_weights(fp, fn, smooth=0.0)
    assert (alpha.item(), beta.item()) == pytest.approx((0.6, 0.4))
    assert alpha.requires_grad and beta.requires_grad


def test_regions_are_scored_separately_and_averaged():
    # p1 = (.75, .25, .75, .25), g = (1, 1, 0, 0); two regions of two voxels whose means are
    # (TP .5, FP 0, FN .5) and (TP 0, FP .5, FN 0)
    logits, labels = binary_line([LOG3, -LOG3, LOG3, -LOG3], [1, 1, 0, 0])
    loss = region_tversky_loss(logits, labels, region_grid=(1, 1, 2), alpha_beta=(0.5, 0.5))
    first = (0.5 + EPS) / (0.5 + 0.5 * 0.5 + EPS)
    second = EPS / (0.5 * 0.5 + EPS)
    assert loss.item() == pytest.approx(1 - (first + second) / 2, abs=1e-12)


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("classes", [2, 3])
def test_symmetric_tversky_on_one_region_is_soft_dice_with_smoothing_scaled_by_voxels(batch_dice, classes):
    # region means are sums / N, so (TP+ε)/(TP+(FP+FN)/2+ε) = (2ΣTP + 2Nε)/(Σp + Σg + 2Nε)
    logits, labels = released_reference_input(classes)
    voxels = 16 * 16 * 28
    tversky = region_tversky_loss(logits, labels, region_grid=(1, 1, 1), alpha_beta=(0.5, 0.5), batch_dice=batch_dice)
    dice = soft_dice_loss(logits, labels, batch_dice=batch_dice, smooth=2 * voxels * EPS)
    assert tversky.item() == pytest.approx(dice.item(), abs=1e-12)


def test_region_grid_never_exceeds_voxels_per_axis():
    assert effective_region_grid((8, 8, 14), (4, 16, 7)) == (4, 8, 7)
    logits, labels = random_case(seed=1, shape=(2, 1, 3, 5, 7))
    clamped = region_tversky_loss(logits, labels, region_grid=(8, 8, 14))
    explicit = region_tversky_loss(logits, labels, region_grid=(3, 5, 7), clamp_grid=False)
    assert clamped.item() == explicit.item()


# --- soft Dice and cross-entropy ---


def test_soft_dice_matches_hand_computed_value():
    # p1 = (.75, .25, .25, .75), g = (1, 1, 0, 0): I = 1, Σp + Σg = 4
    logits, labels = binary_line([LOG3, -LOG3, -LOG3, LOG3], [1, 1, 0, 0])
    loss = soft_dice_loss(logits, labels)
    assert loss.item() == pytest.approx(1 - (2 + EPS) / (4 + EPS), abs=1e-12)


def test_batch_dice_pools_sums_before_the_ratio():
    first = binary_line([LOG3, -LOG3, -LOG3, LOG3], [1, 1, 0, 0])  # I 1, S 4
    second = binary_line([LOG3, -LOG3, -LOG3, -LOG3], [1, 0, 0, 0])  # I .75, S 2.5
    logits = torch.cat([first[0], second[0]])
    labels = torch.cat([first[1], second[1]])
    per_sample = ((2 + EPS) / (4 + EPS) + (1.5 + EPS) / (2.5 + EPS)) / 2
    pooled = (3.5 + EPS) / (6.5 + EPS)
    assert soft_dice_loss(logits, labels).item() == pytest.approx(1 - per_sample, abs=1e-12)
    assert soft_dice_loss(logits, labels, batch_dice=True).item() == pytest.approx(1 - pooled, abs=1e-12)


def test_soft_dice_with_background_averages_both_classes():
    # class 0: p0 = (.25, .75, .75, .25), g0 = (0, 0, 1, 1): I = 1, S = 4, the same as class 1
    logits, labels = binary_line([LOG3, -LOG3, -LOG3, LOG3], [1, 1, 0, 0])
    loss = soft_dice_loss(logits, labels, do_bg=True)
    assert loss.item() == pytest.approx(1 - (2 + EPS) / (4 + EPS), abs=1e-12)


def test_cross_entropy_is_the_mean_negative_log_probability_over_annotated_voxels():
    logits, labels = binary_line([LOG3, LOG3, -LOG3, -LOG3], [1, 0, 0, 2])  # 2 is ignored
    loss = cross_entropy_loss(logits, labels, ignore_label=2)
    assert loss.item() == pytest.approx(-(math.log(0.75) + math.log(0.25) + math.log(0.75)) / 3, abs=1e-12)


def test_cross_entropy_of_a_fully_ignored_batch_is_zero():
    logits, labels = binary_line([LOG3, -LOG3], [2, 2])
    assert cross_entropy_loss(logits, labels, ignore_label=2).item() == 0.0


# --- the four --loss compounds ---


def test_loss_names_follow_table_5_and_unknown_names_are_user_errors():
    assert LOSS_NAMES == ("ce-dice", "ce-dice-rs", "ce-dice-trs-fixed", "ce-dice-trs")
    with pytest.raises(ClinixError, match="ce-dice-trs"):
        build_loss("tversky", batch_dice=False)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_compound_is_the_sum_of_its_terms(name):
    logits, labels = random_case(seed=2)
    alpha_beta = {"ce-dice-rs": (0.5, 0.5), "ce-dice-trs-fixed": (0.3, 0.7)}.get(name)
    rs = region_tversky_loss(logits, labels, alpha_beta=alpha_beta, batch_dice=True)
    expected = cross_entropy_loss(logits, labels) + soft_dice_loss(logits, labels, batch_dice=True)
    if name != "ce-dice":
        expected = expected + 0.8 * rs
    loss = build_loss(name, batch_dice=True)(logits, labels)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("batch_dice", [True, False])
def test_perfect_prediction_gives_zero_loss(name, batch_dice):
    _, labels = random_case(seed=3)
    logits = 50.0 * torch.zeros(2, 3, 6, 8, 10, dtype=torch.float64).scatter_(1, labels, 1.0)
    loss = build_loss(name, batch_dice=batch_dice)(logits, labels)
    assert 0 <= loss.item() < 1e-4


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("batch_dice", [True, False])
def test_gradients_are_finite_for_empty_class_and_all_background(name, batch_dice):
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 6, 8, 10, generator=generator)
    logits[:, 2] = -30.0  # class 2 predicted nowhere
    two_class_target = torch.randint(0, 2, (2, 1, 6, 8, 10), generator=generator)
    for target in (two_class_target, torch.zeros_like(two_class_target)):
        leaf = logits.clone().requires_grad_(True)
        loss = build_loss(name, batch_dice=batch_dice)(leaf, target)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignored_voxels_change_neither_loss_nor_gradients(name):
    logits, labels = random_case(seed=5, classes=4)  # label 3 is the ignore label, 3 classes predicted
    logits = logits[:, :3]
    ignored = (labels == 3).expand(-1, 3, -1, -1, -1)
    scrambled = torch.where(ignored, 10 * torch.randn_like(logits), logits)
    loss_fn = build_loss(name, batch_dice=False, ignore_label=3)
    results = []
    for values in (logits, scrambled):
        leaf = values.clone().requires_grad_(True)
        loss = loss_fn(leaf, labels)
        loss.backward()
        results.append((loss, leaf.grad))
    (loss_a, grad_a), (loss_b, grad_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-12, atol=1e-15)
    assert grad_a[ignored].abs().max().item() == 0.0


# --- deep supervision ---


def test_deep_supervision_weights_for_five_outputs():
    assert deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def test_deep_supervision_downsamples_labels_by_nearest_exact():
    labels = torch.arange(8).reshape(1, 1, 1, 1, 8).expand(1, 1, 8, 8, 8).contiguous()
    halved = downsample_label_map(labels, (4, 4, 4))
    assert halved[0, 0, 0, 0].tolist() == [1, 3, 5, 7]  # pixel centres: source index floor((i + .5)·2)
    thirds = downsample_label_map(labels[:, 0], (3, 3, 3))
    assert thirds.shape == (1, 3, 3, 3) and thirds.dtype == labels.dtype
    assert thirds[0, 0, 0].tolist() == [1, 4, 6]  # floor((i + .5)·8/3)


def test_deep_supervision_loss_is_the_hand_weighted_sum():
    generator = torch.Generator().manual_seed(6)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=generator)
    outputs = [torch.randn(2, 3, n, n, n, generator=generator, dtype=torch.float64) for n in (8, 4, 2)]
    loss = build_loss("ce-dice-trs", batch_dice=False, deep_supervision_weights=deep_supervision_weights(3))
    compound = CompoundLoss(batch_dice=False)
    expected = 2 / 3 * compound(outputs[0], labels) + 1 / 3 * compound(outputs[1], labels[..., 1::2, 1::2, 1::2])
    assert loss(outputs, labels).item() == pytest.approx(expected.item(), abs=1e-12)


def test_deep_supervision_skips_zero_weight_outputs():
    shapes_seen = []

    def recording_loss(logits, target):
        shapes_seen.append((tuple(logits.shape[2:]), tuple(target.shape[2:])))
        return logits.sum()

    outputs = [torch.zeros(1, 2, n, n, n) for n in (8, 4, 2)]
    DeepSupervisionLoss(recording_loss, deep_supervision_weights(3))(outputs, torch.zeros(1, 1, 8, 8, 8))
    assert shapes_seen == [((8, 8, 8), (8, 8, 8)), ((4, 4, 4), (4, 4, 4))]


def test_deep_supervision_accepts_one_target_per_output():
    generator = torch.Generator().manual_seed(7)
    targets = [torch.randint(0, 2, (1, 1, n, n, n), generator=generator) for n in (4, 2)]
    outputs = [torch.randn(1, 2, n, n, n, generator=generator, dtype=torch.float64) for n in (4, 2)]
    compound = CompoundLoss(batch_dice=True, rs_weight=0.0)
    loss = DeepSupervisionLoss(compound, [0.25, 0.75])(outputs, targets)
    expected = 0.25 * compound(outputs[0], targets[0]) + 0.75 * compound(outputs[1], targets[1])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


def test_region_loss_is_bce_plus_soft_dice_plus_the_region_tversky_term_per_region() -> None:
    # two voxels holding labels 0 and 2; regions whole = {1, 2} and core = {2}: both targets are [0, 1].
    # All logits 0: sigmoid 0.5 everywhere.
    logits = torch.zeros(1, 2, 1, 1, 2)
    target = torch.tensor([0, 2]).view(1, 1, 1, 1, 2)
    loss = build_loss("ce-dice-trs", batch_dice=False, regions=[(1, 2), (2,)])
    eps = 1e-5
    bce = math.log(2.0)  # -log(0.5) at every voxel and region
    dice = (2 * 0.5 + eps) / (0.5 + 0.5 + 1 + eps)  # per region: TP 0.5, sums 1 (prediction) and 1 (target)
    # region grid clamped to the 1 x 1 x 2 output: each voxel is a region of the Tversky index
    alpha_0 = 0.3 + 0.4 * (0.5 + eps) / (0.5 + eps)  # voxel 0: FP 0.5, FN 0
    beta_0 = 0.3 + 0.4 * eps / (0.5 + eps)
    t_0 = eps / (alpha_0 * 0.5 + beta_0 * 0 + eps)
    alpha_1 = 0.3 + 0.4 * eps / (0.5 + eps)  # voxel 1: TP 0.5, FN 0.5
    beta_1 = 0.3 + 0.4 * (0.5 + eps) / (0.5 + eps)
    t_1 = (0.5 + eps) / (0.5 + alpha_1 * 0 + beta_1 * 0.5 + eps)
    expected = bce + (1 - dice) + 0.8 * (1 - (t_0 + t_1) / 2)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_region_loss_leaves_out_the_ignore_label_and_rewards_a_perfect_prediction() -> None:
    target = torch.tensor([0, 1, 2, 3]).view(1, 1, 1, 1, 4)  # 3 is the ignore label
    regions = [(1, 2), (2,)]
    perfect = torch.tensor([[-20.0, 20.0, 20.0, 20.0], [-20.0, -20.0, 20.0, -20.0]]).view(1, 2, 1, 1, 4)
    loss = build_loss("ce-dice", batch_dice=False, ignore_label=3, regions=regions)
    assert loss(perfect, target).item() == pytest.approx(0.0, abs=1e-5)
    wrong_where_ignored = perfect.clone()
    wrong_where_ignored[..., 3] = -perfect[..., 3]
    assert loss(wrong_where_ignored, target).item() == pytest.approx(0.0, abs=1e-5)


def test_deep_supervision_on_regions_scores_each_scale_against_its_downsampled_region_masks() -> None:
    generator = torch.Generator().manual_seed(8)
    labels = torch.randint(0, 4, (2, 1, 8, 8, 8), generator=generator)
    outputs = [torch.randn(2, 3, n, n, n, generator=generator, dtype=torch.float64) for n in (8, 4, 2)]
    regions = [(1, 2, 3), (2, 3), (3,)]
    loss = build_loss("ce-dice-trs", batch_dice=False, regions=regions, deep_supervision_weights=[0.5, 0.5, 0.0])
    single = build_loss("ce-dice-trs", batch_dice=False, regions=regions)
    expected = 0.5 * single(outputs[0], labels) + 0.5 * single(outputs[1], labels[..., 1::2, 1::2, 1::2])
    assert loss(outputs, labels).item() == pytest.approx(expected.item(), abs=1e-12)
