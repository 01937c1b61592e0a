"""Multi-process training: the batch split, the DDP loss weights, and a 2-process gloo run on the CPU."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from clinix.errors import ClinixError
from clinix.train.distributed import (
    DDP_MIN_WEIGHT,
    DistributedContext,
    context_from_environment,
    ddp_loss_weights,
    rank_batch_size,
    training_device,
)
from clinix.train.schedule import TRAIN_STREAM, stream_seed
from clinix.workdir import WorkDir
from tests.train.test_trainer import build_tiny_workdir

TWO_PROCESSES = DistributedContext(rank=1, world_size=2, local_rank=1)


def test_a_plain_process_is_rank_0_of_1(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = context_from_environment()
    assert (context.rank, context.world_size, context.enabled, context.is_main) == (0, 1, False, True)


def test_torchrun_variables_give_the_rank(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert context_from_environment() == DistributedContext(rank=3, world_size=4, local_rank=1)


def test_non_integer_torchrun_variables_are_a_clinix_error(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ClinixError, match="must be integers"):
        context_from_environment()


def test_each_rank_trains_on_its_share_of_the_batch() -> None:
    assert rank_batch_size(4, TWO_PROCESSES) == 2
    assert rank_batch_size(2, DistributedContext()) == 2


@pytest.mark.parametrize(("batch", "share"), [(5, 2), (1, 1)])
def test_a_batch_that_does_not_split_evenly_warns(batch: int, share: int) -> None:
    with pytest.warns(UserWarning, match=f"each trains on {share}"):
        assert rank_batch_size(batch, TWO_PROCESSES) == share


def test_under_ddp_a_zero_loss_weight_becomes_tiny_so_every_head_gets_a_gradient() -> None:
    weights = [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0]
    assert ddp_loss_weights(weights, DistributedContext()) == weights
    lifted = ddp_loss_weights(weights, TWO_PROCESSES)
    assert lifted[-1] == pytest.approx(DDP_MIN_WEIGHT / (1 + DDP_MIN_WEIGHT))
    assert sum(lifted) == pytest.approx(1.0)


def test_the_cpu_device_is_always_there() -> None:
    assert training_device("cpu", DistributedContext()) == torch.device("cpu")


def test_an_unknown_device_is_a_clinix_error() -> None:
    with pytest.raises(ClinixError, match="tpu"):
        training_device("tpu", DistributedContext())


def test_every_rank_draws_its_own_batch_stream() -> None:
    assert len({stream_seed(0, TRAIN_STREAM, rank) for rank in range(4)}) == 4
    assert stream_seed(0, TRAIN_STREAM, 1) == stream_seed(0, TRAIN_STREAM, 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_as_rank(rank: int, world_size: int, port: int, workdir: Path, out: Path) -> None:
    """One torchrun-like process: trains 1 epoch × 2 iterations, saves its weights, notes its saves."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    from clinix.train import trainer

    real_save, real_fit, real_sampler = trainer.save_checkpoint, trainer._fit, trainer.PatchSampler

    def noted_save(path, state):
        with (out / f"saves_of_rank{rank}.txt").open("a") as file:
            file.write(f"{Path(path).name}\n")
        return real_save(path, state)

    def fit_then_keep_weights(run, *args):
        real_fit(run, *args)
        torch.save(run.network.state_dict(), out / f"weights_of_rank{rank}.pt")

    def noted_sampler(*args, **kwargs):
        sampler = real_sampler(*args, **kwargs)
        if len(args) > 5:  # the training sampler (it crops enlarged patches)
            (out / f"forced_of_rank{rank}.txt").write_text(f"{sampler.batch_size} {sum(sampler.forced)}")
        return sampler

    trainer.save_checkpoint, trainer._fit, trainer.PatchSampler = noted_save, fit_then_keep_weights, noted_sampler
    trainer.train_fold(workdir, 0, device="cpu", epochs=1, iterations=2, val_iterations=1, workers=1, echo=False)


def test_ddp_gloo_two_processes_end_with_identical_weights_and_only_rank_0_writes(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    prepared = build_tiny_workdir(tmp_path_factory.getbasetemp() / "tiny-training")
    workdir = Path(shutil.copytree(prepared, tmp_path / "work"))
    mp.spawn(_train_as_rank, args=(2, _free_port(), workdir, tmp_path), nprocs=2, join=True)

    rank0 = torch.load(tmp_path / "weights_of_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "weights_of_rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    assert (tmp_path / "saves_of_rank0.txt").read_text().split()[-2:] == ["checkpoint_latest.pt", "checkpoint_final.pt"]
    assert not (tmp_path / "saves_of_rank1.txt").exists()
    folder = WorkDir(workdir).results() / "fold_0"
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1
    final = torch.load(folder / "checkpoint_final.pt", weights_only=True)["model"]
    assert all(torch.equal(final[name], rank0[name]) for name in rank0)
    # plan batch 2 over 2 processes: one sample each, and one of the two global samples forced (33 %, as one
    # process with batch 2), not none
    per_rank = [(tmp_path / f"forced_of_rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert per_rank == [["1", "0"], ["1", "1"]]
