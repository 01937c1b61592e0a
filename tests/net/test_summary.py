"""What `clinix info` reports: parameters, FLOPs, scan backend, stages (SPEC §4.5; reference §5.2).

The command-line tests of `clinix info` live here beside the library function it calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clinix.cli import app
from clinix.errors import ClinixError
from clinix.net.network import NetworkConfig
from clinix.net.registry import config_for_arch
from clinix.net.summary import (
    default_topology,
    summarize_arch,
    summarize_network,
    summarize_plans,
)


def _plans(arch: str, config: NetworkConfig, patch_size: list[int]) -> dict:
    """The keys of a plans.json (clinix.plan.model.Plan) that describe the network, plus one it ignores."""
    return {"arch": arch, "patch_size": patch_size, "network": config.to_dict(), "batch_size": 2}


def up_conv_flops_saved(features: list[int], edge: int) -> int:
    """Forward FLOPs clinix saves against the reference's count on a cube of ``edge`` halved per stage.

    Reference §5.2 (conv + linear only) counts each decoder level's 1x1 "up" conv after the nearest
    upsampling; clinix runs it before (the same result), on an eighth of the voxels.
    """
    voxels = [edge**3 // 8**s for s in range(len(features))]
    return sum(2 * features[s + 1] * features[s] * (voxels[s] - voxels[s + 1]) for s in range(len(features) - 1))


def test_forward_flops_of_the_six_stage_network_at_128_cubed_match_the_reference() -> None:
    summary = summarize_arch("mambaclinix", 6, (128, 128, 128), num_classes=3)
    saved = up_conv_flops_saved([32, 64, 128, 256, 320, 320], 128)
    assert round(saved / 1e9, 2) == 13.83
    assert round((summary.forward_flops + saved) / 1e9, 1) == 1853.7


def test_flops_scale_with_the_voxel_count() -> None:
    # counted ops are per voxel (convs) or per token (linears): an eighth of the voxels, an eighth of the
    # FLOPs, except the 3 padded outputs per sequence that Mamba's causal conv computes and drops
    large = summarize_arch("mambaclinix", 5, (64, 64, 64)).forward_flops
    small = summarize_arch("mambaclinix", 5, (32, 32, 32)).forward_flops
    padded = sum(3 * (2 * c) * 4 * 2 for c in (256, 320))  # outputs · d_inner · taps · 2, Mamba stages 3, 4
    assert large - padded == 8 * (small - padded)


def test_stage_table_lists_tokens_for_the_mamba_stages_only() -> None:
    summary = summarize_arch("mambaclinix", 6, (128, 128, 128))
    assert [s.tokens for s in summary.stages] == [None, None, None, 4096, 512, 64]  # reference §1.4
    assert [s.order for s in summary.stages] == [2, 3, 4, None, None, None]
    assert summary.stages[1].feature_map == (64, 64, 64) and summary.stages[1].stride == (2, 2, 2)
    assert summary.parameters == 48_874_186


def test_a_patch_not_divisible_by_the_strides_is_a_clinix_error() -> None:
    with pytest.raises(ClinixError, match=r"divisible by \[32, 32, 32\]"):
        summarize_arch("mambaclinix", 6, (96, 100, 96))


def test_a_plans_file_describes_the_network_of_its_arch_patch_and_network_keys(tmp_path: Path) -> None:
    config = config_for_arch(
        "hgcn-uniform-4",
        2,
        4,
        [16, 32, 64, 128],
        [(1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)],
        [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)],
    )
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(_plans("hgcn-uniform-4", config, [8, 32, 32])))
    assert summarize_plans(plans) == summarize_network("hgcn-uniform-4", config, (8, 32, 32))


def test_plans_without_a_network_are_refused(tmp_path: Path) -> None:
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"arch": "resunet", "configurations": {}}))
    with pytest.raises(ClinixError, match="plans lack 'patch_size', 'network'"):
        summarize_plans(plans)


def test_default_topology_is_nnunets() -> None:
    features, kernels, strides = default_topology(7)
    assert features == [32, 64, 128, 256, 320, 320, 320]
    assert kernels == [(3, 3, 3)] * 7 and strides == [(1, 1, 1)] + [(2, 2, 2)] * 6


def test_info_json_gives_the_parameter_count_and_exit_0() -> None:
    arguments = ["info", "--arch", "mambaclinix", "--stages", "6", "--patch", "64,64,64", "--json"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["parameters"] == 48_874_186
    assert report["patch_size"] == [64, 64, 64]
    assert [s["tokens"] for s in report["stages"]] == [None, None, None, 512, 64, 8]


def test_info_table_names_the_scan_backend() -> None:
    result = CliRunner().invoke(app, ["info", "--arch", "resunet", "--stages", "4", "--patch", "32,32,32"])
    assert result.exit_code == 0, result.output
    assert "selective scan backend:" in result.stdout and "residual" in result.stdout


def test_info_reads_the_network_of_a_plans_file(tmp_path: Path) -> None:
    config = config_for_arch("umamba-bot", 1, 2, *default_topology(4))
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(_plans("umamba-bot", config, [32, 32, 32])))
    result = CliRunner().invoke(app, ["info", "--plans", str(plans), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["block"] for s in report["stages"]] == ["residual"] * 3 + ["mamba"]
    assert report["stages"][3]["tokens"] == 4**3  # 32 / (2·2·2) per axis


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--patch", "64,sixty,64"], "error: --patch expects comma-separated integers like 64,64,64"),
        (["--arch", "vnet"], "error: unknown architecture 'vnet'"),
        (["--plans", "p.json", "--arch", "resunet"], "error: --plans describes its own network"),
    ],
)
def test_info_bad_input_exits_2_with_one_line(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["info", *arguments])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)
