"""The residual decoder with deep supervision (SPEC §4.4; reference §1.5)."""

from __future__ import annotations

import torch

from clinix.net.decoder import ResidualDecoder


def _skips() -> list[torch.Tensor]:
    torch.manual_seed(0)
    features, edges = [4, 8, 16], [8, 4, 2]
    return [torch.randn(1, c, e, e, e) for c, e in zip(features, edges, strict=True)]


def test_deep_supervision_returns_every_level_but_the_bottleneck_full_resolution_first() -> None:
    decoder = ResidualDecoder([4, 8, 16], [(3, 3, 3)] * 3, num_classes=3)
    shapes = [tuple(out.shape) for out in decoder(_skips())]
    assert shapes == [(1, 3, 8, 8, 8), (1, 3, 4, 4, 4)]


def test_without_deep_supervision_only_the_full_resolution_logits_come_back() -> None:
    decoder = ResidualDecoder([4, 8, 16], [(3, 3, 3)] * 3, num_classes=3).eval()
    skips = _skips()
    with torch.no_grad():
        all_levels = decoder(skips)
        decoder.deep_supervision = False
        full_resolution = decoder(skips)
    assert torch.equal(full_resolution, all_levels[0])


def test_each_level_upsamples_the_deeper_features_with_a_1x1_conv_after_nearest_interpolation() -> None:
    decoder = ResidualDecoder([4, 8], [(3, 3, 3)] * 2, num_classes=2)
    level = decoder.levels[0]
    assert level.up.kernel_size == (1, 1, 1) and (level.up.in_channels, level.up.out_channels) == (8, 4)
    assert level.merge.conv1.in_channels == 8 and level.head.out_channels == 2
    # the heads exist whether or not deep supervision is on, so one checkpoint serves both modes
    off = ResidualDecoder([4, 8], [(3, 3, 3)] * 2, num_classes=2, deep_supervision=False)
    assert off.state_dict().keys() == decoder.state_dict().keys()
