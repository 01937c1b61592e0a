from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clinix.cli import app
from clinix.errors import ClinixError
from clinix.fingerprint import CaseFingerprint, Fingerprint
from clinix.net.network import NetworkConfig
from clinix.plan import PROFILES, Plan, load_plan, make_plan, plan_experiment
from clinix.plan.cost import measure_cost
from clinix.plan.memory import loader_gb, training_memory_gb

runner = CliRunner()


def fingerprint(
    shape: list[int], spacing: list[float], cases: int = 10, channels: tuple[str, ...] = ("CT",), kept: float = 0.9
) -> Fingerprint:
    """A hand-built fingerprint: ``cases`` identical cases of ``shape`` at ``spacing``."""
    case = CaseFingerprint(
        case_id="c",
        shape=shape,
        spacing=spacing,
        origin=[0.0] * 3,
        direction=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
        crop_box=[[0, s] for s in shape],
        shape_after_crop=shape,
        relative_size_after_crop=kept,
        label_voxels={},
        label_fraction={},
    )
    stats = {"mean": 50.0, "std": 20.0, "median": 45.0, "percentile_00_5": -80.0, "percentile_99_5": 200.0}
    return Fingerprint(
        dataset={
            "root": "/data/D",
            "name": "D",
            "channel_names": list(channels),
            "labels": {"background": 0, "organ": 1, "tumour": 2},
            "ignore_label": None,
        },
        cases=[case] * cases,
        intensity={str(i): {"name": name, **stats} for i, name in enumerate(channels)},
        labels={
            name: {"values": [value], "voxels": 1000 * cases, "cases_present": cases}
            for name, value in (("background", 0), ("organ", 1), ("tumour", 2))
        },
        median_relative_size_after_crop=kept,
    )


def cost_of(plan: Plan):
    return measure_cost(plan.arch, NetworkConfig.from_dict(plan.network))


def test_cpu_plan_keeps_within_its_iteration_budget_by_structure() -> None:
    plan = make_plan(fingerprint([64, 160, 160], [2.5, 0.8, 0.8]), PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice-trs")
    assert plan.device == "cpu"
    assert plan.network["features"][0] == 8
    assert max(plan.network["features"]) <= 128
    assert plan.batch_size == 2
    assert plan.seconds_per_iteration_budget == 2.0
    assert plan.optimizer.lr == 1e-3  # the short CPU schedule
    assert plan.seconds_per_iteration_estimate <= 2.0
    flops = 3 * cost_of(plan).forward_flops_per_voxel * math.prod(plan.patch_size) * plan.batch_size
    assert plan.seconds_per_iteration_estimate == pytest.approx(flops / plan.cpu_flops_per_second, rel=1e-3)
    assert math.prod(plan.patch_size) < 64 * 160 * 160


def test_gpu_plan_fits_the_memory_target_and_fills_it_with_batch() -> None:
    shape = fingerprint([40, 96, 96], [1.0, 1.0, 1.0], cases=200)
    plan = make_plan(shape, PROFILES["cuda"], 8.0, "mambaclinix", "ce-dice")
    config = NetworkConfig.from_dict(plan.network)
    exact = training_memory_gb(plan.arch, config, plan.patch_size, plan.batch_size, plan.loss, plan.optimizer,
                               "chunked", "cuda")  # fmt: skip
    assert exact == pytest.approx(plan.memory_estimate_gb, abs=1e-3) and exact <= 8.0
    one_more = training_memory_gb(plan.arch, config, plan.patch_size, plan.batch_size + 1, plan.loss, plan.optimizer,
                                  "chunked", "cuda")  # fmt: skip
    assert one_more > 8.0 or plan.batch_size == max(2, round(0.05 * 40 * 96 * 96 * 200 / math.prod(plan.patch_size)))
    assert plan.batch_size >= 2
    assert plan.network["features"][:3] == [32, 64, 128]
    assert (plan.optimizer.name, plan.optimizer.lr, plan.optimizer.weight_decay) == ("adam", 1e-4, 1e-5)


def test_batch_is_capped_at_five_percent_of_the_dataset() -> None:
    plan = make_plan(fingerprint([16, 32, 32], [1.0, 1.0, 1.0], cases=4), PROFILES["cuda"], 80.0, "resunet", "ce-dice")
    voxels = 16 * 32 * 32 * 4
    assert plan.batch_size == max(2, round(0.05 * voxels / math.prod(plan.patch_size)))
    assert plan.batch_size == 2


def test_block_map_follows_eq_11() -> None:
    plan = make_plan(fingerprint([64, 128, 128], [1.0, 1.0, 1.0]), PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice-trs")
    stages = len(plan.network["features"])
    early = math.ceil(stages / 2)
    assert plan.network["block_map"] == ["hgcn"] * early + ["mamba"] * (stages - early)
    assert plan.network["orders"][:early] == [min(s + 2, 6) for s in range(early)]


def hgcn_stages(shape: Fingerprint) -> int:
    plan = make_plan(shape, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice")
    return plan.network["block_map"].count("hgcn")


def test_orders_override_and_arch_are_stored() -> None:
    shape = fingerprint([64, 128, 128], [1.0, 1.0, 1.0])
    count = hgcn_stages(shape)
    plan = make_plan(shape, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice", [3] * count)
    assert [n for n in plan.network["orders"] if n is not None] == [3] * count
    assert (plan.arch, plan.loss) == ("mambaclinix", "ce-dice")


def test_ct_channel_uses_dataset_statistics_and_mr_channel_zscores_inside_the_body() -> None:
    plan = make_plan(
        fingerprint([32, 64, 64], [1.0, 1.0, 1.0], channels=("CT", "T2"), kept=0.6),
        PROFILES["cpu"],
        8.0,
        "resunet",
        "ce-dice",
    )
    ct, t2 = plan.normalization
    assert (ct.scheme, ct.mean, ct.std, ct.lower, ct.upper) == ("ct", 50.0, 20.0, -80.0, 200.0)
    assert (t2.scheme, t2.use_nonzero_mask) == ("zscore", True)


def test_anisotropic_data_gets_in_plane_kernels_first() -> None:
    plan = make_plan(fingerprint([24, 256, 256], [5.0, 0.7, 0.7]), PROFILES["cuda"], 8.0, "mambaclinix", "ce-dice")
    assert plan.network["kernel_sizes"][0] == [1, 3, 3]
    assert plan.network["strides"][1] == [1, 2, 2]
    assert plan.target_spacing == [5.0, 0.7, 0.7]


def test_images_smaller_than_a_pooling_step_still_get_two_stages() -> None:
    plan = make_plan(fingerprint([4, 6, 7], [2.5, 0.75, 0.75]), PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice")
    assert len(plan.network["features"]) == 2
    assert min(plan.patch_size) >= 8


def test_an_order_too_high_for_the_width_is_a_user_error() -> None:
    shape = fingerprint([64, 128, 128], [1.0] * 3)
    orders = [4] * hgcn_stages(shape)  # stage 0 has 8 features: hgConv width 4 takes order 3 at most
    with pytest.raises(ClinixError, match="hgConv of order 4 needs a width divisible by"):
        make_plan(shape, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice", orders)


def test_unknown_loss_and_arch_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ClinixError, match="unknown loss"):
        plan_experiment(tmp_path, tmp_path, loss="dice-only")
    with pytest.raises(ClinixError, match="unknown architecture"):
        make_plan(fingerprint([32, 64, 64], [1.0] * 3), PROFILES["cpu"], 8.0, "transformer", "ce-dice")


def test_plan_runs_the_fingerprint_and_round_trips(nnunet_dataset: Path, tmp_path: Path) -> None:
    plan, path = plan_experiment(nnunet_dataset, tmp_path / "w", device="cpu", workers=1)
    assert (tmp_path / "w" / "fingerprint.json").is_file()
    data = json.loads(path.read_text())
    assert data["clinix_version"]
    assert data["dataset_root"] == str(nnunet_dataset.resolve())
    assert load_plan(tmp_path / "w") == plan


def test_cli_prints_the_table_2_row(nnunet_dataset: Path, tmp_path: Path) -> None:
    arguments = ["plan", str(nnunet_dataset), "-w", str(tmp_path / "w"), "--device", "cpu", "-j", "1"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    for column in ("Stages", "Encoder blocks", "Patch size", "Batch size", "Pooling per axis"):
        assert column in result.stdout
    assert "nnU-Net's rules" in result.stdout


def test_cli_rejects_bad_orders_with_one_line(nnunet_dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", str(nnunet_dataset), "-w", str(tmp_path), "--orders", "4,x"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --orders expects comma-separated integers like 64,64,64, got '4,x'"


def test_cli_defaults_match_the_library() -> None:
    from clinix.cli import plan as plan_cli
    from clinix.cli.options import ARCH_NAMES
    from clinix.net.registry import ARCH_NAMES as REGISTRY_ARCH_NAMES
    from clinix.plan import DEFAULT_ARCH
    from clinix.train.losses import DEFAULT_LOSS

    assert (plan_cli.DEFAULT_ARCH, plan_cli.DEFAULT_LOSS) == (DEFAULT_ARCH, DEFAULT_LOSS)
    assert ARCH_NAMES == REGISTRY_ARCH_NAMES


def test_the_memory_checked_is_that_of_the_network_with_the_users_orders() -> None:
    shape = fingerprint([64, 128, 128], [1.0] * 3)
    count = hgcn_stages(shape)
    plan = make_plan(shape, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice", [3] * count)
    config = NetworkConfig.from_dict(plan.network)
    assert [n for n in config.orders if n is not None] == [3] * count
    exact = training_memory_gb(plan.arch, config, plan.patch_size, plan.batch_size, plan.loss, plan.optimizer,
                               "chunked", "cpu")  # fmt: skip
    assert plan.memory_estimate_gb == pytest.approx(exact + loader_gb(plan.patch_size, plan.batch_size, 1), abs=1e-3)


def test_a_budget_too_small_for_any_patch_names_what_the_smallest_plan_needs() -> None:
    with pytest.raises(ClinixError) as raised:
        make_plan(fingerprint([64, 128, 128], [1.0] * 3), PROFILES["cuda"], 0.5, "mambaclinix", "ce-dice")
    message = str(raised.value)
    assert message.startswith("the smallest plan of mambaclinix (patch [")
    needed = float(message.split("needs ")[1].split(" GB")[0])
    assert needed > 0.5 and message.endswith(f"over --memory-gb 0.5; give at least {math.ceil(needed * 10) / 10:g}")


def test_a_cpu_too_slow_for_any_patch_says_so() -> None:
    with pytest.raises(ClinixError, match=r"takes .* s per iteration on this CPU, over the 2 s budget"):
        make_plan(fingerprint([64, 128, 128], [1.0] * 3), PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice", None, 1e6)


@pytest.mark.parametrize(
    ("shape", "spacing", "problem"),
    [
        ([64, 128, 128], [0.0, 1.0, 1.0], "case c has spacing [0.0, 1.0, 1.0] mm: every spacing must be positive"),
        (
            [1, 128, 128],
            [1.0, 1.0, 1.0],
            "the cases are one voxel thick along z (2D images?): clinix plans 3D networks",
        ),
    ],
)
def test_a_degenerate_fingerprint_is_one_line(shape: list[int], spacing: list[float], problem: str) -> None:
    with pytest.raises(ClinixError, match=re.escape(problem)):
        make_plan(fingerprint(shape, spacing), PROFILES["cuda"], 8.0, "mambaclinix", "ce-dice")


def test_a_faster_cpu_or_a_longer_budget_gets_a_larger_patch() -> None:
    shape = fingerprint([80, 192, 192], [1.0] * 3)
    slow = make_plan(shape, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice", None, 30e9)
    fast = make_plan(shape, PROFILES["cpu"], 8.0, "mambaclinix", "ce-dice", None, 120e9)
    assert math.prod(fast.patch_size) > math.prod(slow.patch_size)
    for plan in (slow, fast):
        assert plan.seconds_per_iteration_estimate <= 2.0


def test_cli_shows_the_estimate_beside_the_budget_and_refuses_bad_budgets(nnunet_dataset: Path, tmp_path) -> None:
    work = tmp_path / "w"
    result = runner.invoke(app, ["plan", str(nnunet_dataset), "-w", str(work), "--device", "cpu", "-j", "1"])
    assert result.exit_code == 0, result.output
    plan = load_plan(work)
    assert f"memory {plan.memory_estimate_gb:.2f} of 8 GB (RAM)" in " ".join(result.stdout.split())
    assert plan.memory_model_version == 2 and plan.cpu_flops_per_second > 0
    for arguments, message in (
        (["--memory-gb", "0"], "error: --memory-gb must be a positive number of GB, not 0"),
        (["--seconds-per-iteration", "-1"], "error: --seconds-per-iteration takes a positive number of seconds"),
        (["--device", "cuda", "--seconds-per-iteration", "3"], "error: --seconds-per-iteration takes a positive"),
    ):
        bad = runner.invoke(app, ["plan", str(nnunet_dataset), "-w", str(work), *arguments])
        assert bad.exit_code == 2 and bad.stderr.startswith(message), bad.output
