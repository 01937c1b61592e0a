"""Network families for the paper's Table 4 ablations (SPEC §4.4; paper eq. 11)."""

from __future__ import annotations

import pytest
import torch

from clinix.errors import ClinixError
from clinix.net.registry import block_map_for_arch, build_network, config_for_arch, default_order
from clinix.net.summary import count_parameters, default_topology


def _config(arch: str, stages: int = 6, orders: list[int] | None = None):
    return config_for_arch(arch, 1, 2, *default_topology(stages), orders=orders)


@pytest.mark.parametrize(
    ("stages", "block_map", "orders"),
    [
        (4, ["hgcn"] * 2 + ["mamba"] * 2, [2, 3, None, None]),
        (5, ["hgcn"] * 3 + ["mamba"] * 2, [2, 3, 4, None, None]),
        (6, ["hgcn"] * 3 + ["mamba"] * 3, [2, 3, 4, None, None, None]),
        (7, ["hgcn"] * 4 + ["mamba"] * 3, [2, 3, 4, 5, None, None, None]),
    ],
)
def test_mambaclinix_puts_hgcn_in_the_first_half_and_mamba_after(stages: int, block_map: list, orders: list) -> None:
    config = _config("mambaclinix", stages)
    assert config.block_map == block_map  # reference §1.1: the first ceil(S/2) stages are HGCN
    assert config.orders == orders


def test_orders_are_stage_plus_two_clamped_to_two_and_six() -> None:
    assert [default_order(s) for s in range(8)] == [2, 3, 4, 5, 6, 6, 6, 6]


def test_hgcn_only_uses_orders_2_to_6_in_every_stage() -> None:
    config = _config("hgcn-only")
    assert config.block_map == ["hgcn"] * 6
    assert config.orders == [2, 3, 4, 5, 6, 6]  # paper Table 4, HGCN[2,3,4,5,6,6]


def test_hgcn_uniform_uses_one_order_everywhere() -> None:
    assert _config("hgcn-uniform-3").orders == [3] * 6


def test_orders_override_applies_to_the_hgcn_stages_in_order() -> None:
    assert _config("mambaclinix", orders=[4, 5, 6]).orders == [4, 5, 6, None, None, None]


def test_orders_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ClinixError, match=r"2 orders given for 3 HGCN stages"):
        _config("mambaclinix", orders=[4, 5])


def test_orders_for_a_family_without_hgcn_are_refused() -> None:
    with pytest.raises(ClinixError, match="mamba-only has no HGCN stages, so orders do not apply"):
        _config("mamba-only", orders=[3])


def test_residual_families_place_mamba_as_documented() -> None:
    assert block_map_for_arch("resunet", 5) == ["residual"] * 5
    assert block_map_for_arch("mamba-only", 6) == ["residual"] * 3 + ["mamba"] * 3
    assert block_map_for_arch("umamba-bot", 6) == ["residual"] * 5 + ["mamba"]
    assert _config("resunet").orders == [None] * 6


def test_an_unknown_family_is_refused_with_the_choices() -> None:
    with pytest.raises(ClinixError, match="unknown architecture 'unet3d'; choose from mambaclinix"):
        block_map_for_arch("unet3d", 6)


def test_an_order_too_high_for_the_first_stage_names_the_stage() -> None:
    # stage 0 has 32 features, T = 16, and order 6 needs T divisible by 2^5 = 32
    with pytest.raises(ClinixError, match=r"stage 0 \(32 features\): hgConv of order 6"):
        _config("hgcn-uniform-6")


def test_build_network_refuses_a_config_of_another_family() -> None:
    with pytest.raises(ClinixError, match="is not 'resunet'"):
        build_network("resunet", _config("mambaclinix"))


def test_swapping_an_hgcn_block_for_a_residual_block_changes_the_count_by_their_difference() -> None:
    with torch.device("meta"):
        full = build_network("mambaclinix", _config("mambaclinix"))
        baseline = build_network("mamba-only", _config("mamba-only"))
    hgcn = 43_776 + 173_680 + 691_024  # reference §1.7
    residual = 55_488 + 2 * (27 * 64 * 64 + 64 + 128) + 2 * (27 * 128 * 128 + 128 + 256)  # BasicBlockD(C -> C)
    encoder_layer_norm = 2 * 128  # sits before the last HGCN block only
    assert count_parameters(full) - count_parameters(baseline) == hgcn + encoder_layer_norm - residual
