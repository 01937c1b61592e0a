"""The U-Net assembled from a NetworkConfig (SPEC §4; reference §1.1, §1.6, §5.1).

Large networks are built on the meta device: their parameters and shapes are exact, nothing is computed.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from clinix.errors import ClinixError
from clinix.net.hgconv import HGCNBlock
from clinix.net.layers import LayerNormChannelsFirst
from clinix.net.network import ClinixUNet, NetworkConfig, drop_path_rates
from clinix.net.registry import build_network, config_for_arch
from clinix.net.summary import count_parameters, default_topology

SKIP_SCALES_RELEASED = 1  # the released MambaLayer's unused scalar, which ours leaves out (SPEC §4.3)


def _meta_mambaclinix(stages: int, classes: int, in_channels: int = 1) -> ClinixUNet:
    with torch.device("meta"):
        config = config_for_arch("mambaclinix", in_channels, classes, *default_topology(stages))
        return build_network("mambaclinix", config)


def _tiny_config(**changes: object) -> NetworkConfig:
    config = config_for_arch("mambaclinix", 1, 3, [8, 16, 32, 32], [(3, 3, 3)] * 4, [(1, 1, 1)] + [(2, 2, 2)] * 3)
    return dataclasses.replace(config, **changes)


@pytest.mark.parametrize(
    ("stages", "classes", "released_total", "mamba_layers"),
    [
        (6, 2, 48_874_189, 3),
        (6, 4, 48_875_799, 3),
        (6, 14, 48_883_849, 3),
        (5, 2, 28_427_786, 2),
        (7, 2, 71_572_639, 3),
    ],
)
def test_parameter_totals_are_the_released_ones_less_their_skip_scales(
    stages: int, classes: int, released_total: int, mamba_layers: int
) -> None:
    # reference §5.1 counts the released code, which holds one unused skip_scale per Mamba layer
    expected = released_total - mamba_layers * SKIP_SCALES_RELEASED
    assert count_parameters(_meta_mambaclinix(stages, classes)) == expected


def test_six_stage_encoder_has_the_released_count_less_three_skip_scales() -> None:
    assert count_parameters(_meta_mambaclinix(6, 2).encoder) == 17_149_251 - 3


def test_class_count_changes_only_the_heads_by_skip_width_plus_one_per_class() -> None:
    skip_widths = [32, 64, 128, 256, 320]  # the five decoder levels of a 6-stage network
    extra_classes = 14 - 2
    difference = count_parameters(_meta_mambaclinix(6, 14)) - count_parameters(_meta_mambaclinix(6, 2))
    assert difference == sum(c + 1 for c in skip_widths) * extra_classes == 9_660


def test_six_stage_shapes_match_the_released_network_at_64_cubed() -> None:
    network = _meta_mambaclinix(6, 3)
    x = torch.empty(1, 1, 64, 64, 64, device="meta")
    skips = network.encoder(x)
    assert [tuple(s.shape) for s in skips] == [
        (1, 32, 64, 64, 64),
        (1, 64, 32, 32, 32),
        (1, 128, 16, 16, 16),
        (1, 256, 8, 8, 8),
        (1, 320, 4, 4, 4),
        (1, 320, 2, 2, 2),
    ]  # reference §1.6
    assert [tuple(out.shape)[2:] for out in network(x)] == [(64,) * 3, (32,) * 3, (16,) * 3, (8,) * 3, (4,) * 3]


def test_the_encoder_layer_norm_sits_before_the_last_hgcn_block_only() -> None:
    network = _meta_mambaclinix(6, 2)
    norms = [type(stage.norm) for stage in network.encoder.stages]
    assert norms == [nn.Identity, nn.Identity, LayerNormChannelsFirst, nn.Identity, nn.Identity, nn.Identity]
    blocks = [type(stage.block).__name__ for stage in network.encoder.stages]
    assert blocks == ["HGCNBlock"] * 3 + ["ResidualMambaLayer"] * 3


def test_drop_path_rates_rise_linearly_to_the_configured_rate() -> None:
    config = config_for_arch("mambaclinix", 1, 2, *default_topology(6))
    assert drop_path_rates(config) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    network = _meta_mambaclinix(6, 2)
    hgcn_rates = [s.block.drop_path.drop_prob for s in network.encoder.stages if isinstance(s.block, HGCNBlock)]
    assert hgcn_rates == pytest.approx([0.0, 0.1, 0.2])


def test_every_conv3d_is_he_initialised_and_mamba_keeps_its_own_init() -> None:
    torch.manual_seed(0)
    network = ClinixUNet(_tiny_config())
    convs = [m for m in network.modules() if isinstance(m, nn.Conv3d)]
    assert all(m.bias is None or torch.count_nonzero(m.bias) == 0 for m in convs)
    mamba = network.encoder.stages[2].block.mamba
    assert torch.count_nonzero(mamba.conv1d.bias) > 0  # PyTorch's Conv1d init, not He's zero bias
    assert mamba.conv1d.weight.abs().max() <= 0.5  # kaiming-uniform bound 1/sqrt(fan_in = 4)


def test_a_gradient_reaches_every_parameter_of_a_tiny_network() -> None:
    torch.manual_seed(0)
    network = ClinixUNet(_tiny_config(drop_path_rate=0.0)).train()
    outputs = network(torch.randn(1, 1, 16, 16, 16))
    assert [tuple(o.shape) for o in outputs] == [(1, 3, 16, 16, 16), (1, 3, 8, 8, 8), (1, 3, 4, 4, 4)]
    sum(o.square().mean() for o in outputs).backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        # conv biases right before an InstanceNorm get a zero gradient in exact arithmetic; every
        # other parameter must move
        if not name.endswith("bias"):
            assert torch.count_nonzero(parameter.grad) > 0, name


def test_an_anisotropic_network_runs_forward_and_backward() -> None:
    torch.manual_seed(0)
    config = config_for_arch(
        "mambaclinix",
        2,
        2,
        [8, 16, 32, 32],
        [(1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)],
        [(1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2)],
    )
    network = ClinixUNet(config)
    outputs = network(torch.randn(1, 2, 2, 16, 16))
    assert [tuple(o.shape) for o in outputs] == [(1, 2, 2, 16, 16), (1, 2, 2, 8, 8), (1, 2, 2, 4, 4)]
    outputs[0].sum().backward()
    assert network.encoder.stem[0].weight.shape == (8, 2, 1, 3, 3)


def test_deep_supervision_can_be_switched_off_for_inference() -> None:
    with torch.device("meta"):
        network = ClinixUNet(_tiny_config(deep_supervision=False))
    assert tuple(network(torch.empty(2, 1, 16, 16, 16, device="meta")).shape) == (2, 3, 16, 16, 16)
    network.deep_supervision = True
    assert len(network(torch.empty(2, 1, 16, 16, 16, device="meta"))) == 3


def test_an_input_not_divisible_by_the_strides_is_refused() -> None:
    with torch.device("meta"):
        network = ClinixUNet(_tiny_config())
    with pytest.raises(ValueError, match=r"divisible by \(8, 8, 8\)"):
        network(torch.empty(1, 1, 16, 12, 16, device="meta"))


def test_config_round_trips_through_json() -> None:
    config = _tiny_config(gating="mul")
    assert NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.to_dict()["kernel_sizes"][0] == [3, 3, 3]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strides": [(2, 2, 2)] * 4}, "first stage's stride"),
        ({"orders": [2, 3]}, "orders has 2 entries for 4 stages"),
        ({"orders": [2, 5, None, None]}, r"stage 1 \(16 features\): hgConv of order 5 needs a width divisible by 2\^4"),
        ({"orders": [2, 3, 4, None]}, "stage 2: an order is given but the stage is 'mamba'"),
        ({"orders": [None, 3, None, None]}, "stage 0: an 'hgcn' stage needs an order"),
        ({"block_map": ["hgcn", "hgcn", "mamba", "attention"]}, "stage 3: unknown block 'attention'"),
        ({"kernel_sizes": [(3, 3, 3)] * 3 + [(2, 3, 3)]}, "odd"),
        ({"gating": "max"}, "gating"),
    ],
)
def test_inconsistent_configs_are_a_clinix_error_naming_the_problem(changes: dict, message: str) -> None:
    with pytest.raises(ClinixError, match=message):
        _tiny_config(**changes)


def test_from_dict_refuses_unknown_keys() -> None:
    data = _tiny_config().to_dict() | {"width_multiplier": 2}
    with pytest.raises(ClinixError, match="unknown keys"):
        NetworkConfig.from_dict(data)
