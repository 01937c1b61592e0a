"""Background batch loading: reproducible streams, surfaced worker errors, clean shutdown."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from clinix.train.augment import AugmentationSettings, augment_batch
from clinix.train.loader import BatchLoader, batch_generators
from clinix.train.sampling import PatchSampler
from tests.train.test_sampling import coordinate_image, write_preprocessed_case

PATCH = [8, 8, 8]


class RandomSampler:
    """Draws ``(B, 1, 10, 10, 10)`` uniform images and labels in {−1, 0, 1} from the rng; counts its calls."""

    def __init__(self, batch_size: int = 2) -> None:
        self.batch_size = batch_size
        self.calls = 0

    def sample_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        shape = (self.batch_size, 1, 10, 10, 10)
        return rng.random(shape, dtype=np.float32), rng.integers(-1, 2, shape).astype(np.int16)


def augment(data: torch.Tensor, seg: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return augment_batch(data, seg, PATCH, generator, AugmentationSettings(p_rotation=0.5, p_noise=0.5))


@pytest.fixture(scope="module")
def sampler(tmp_path_factory) -> PatchSampler:
    """Two preprocessed cases (24³ and 20×16×18), labels 1 and 2 with stored locations."""
    workdir = tmp_path_factory.mktemp("work")
    for case_id, shape in (("a", (24, 24, 24)), ("b", (20, 16, 18))):
        seg = np.zeros((1, *shape), dtype=np.int16)
        seg[0, 5:9, 5:9, 5:9] = 1
        seg[0, 10, 10, 10] = 2
        locations = {"1": np.argwhere(seg[0] == 1).tolist(), "2": [[10, 10, 10]]}
        write_preprocessed_case(workdir, case_id, coordinate_image(shape) / 1e5, seg, locations)
    return PatchSampler(workdir, ["a", "b"], PATCH, batch_size=3, enlarged_patch=[12, 12, 12])


def stream(loader: BatchLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.epoch(epoch))


def assert_same_stream(first, second) -> None:
    assert len(first) == len(second)
    for (data, seg), (other_data, other_seg) in zip(first, second, strict=True):
        assert torch.equal(data, other_data) and torch.equal(seg, other_seg)


def test_batches_are_the_seeded_sample_augmented_to_the_patch(sampler):
    loader = BatchLoader(sampler, augment, num_workers=0, seed=5, epoch_batches=2)
    data, seg = next(iter(loader.epoch(3)))
    rng, generator = batch_generators(5, 3, 0)
    expected = augment(*map(torch.from_numpy, sampler.sample_batch(rng)), generator)
    assert data.shape == (3, 1, 8, 8, 8) and seg.dtype == torch.int16
    assert torch.equal(data, expected[0]) and torch.equal(seg, expected[1])


def test_sampling_generator_is_numpy_default_rng_of_seed_epoch_index():
    rng, generator = batch_generators(11, 2, 7)
    assert rng.random() == np.random.default_rng([11, 2, 7]).random()
    assert generator.initial_seed() == batch_generators(11, 2, 7)[1].initial_seed()
    assert generator.initial_seed() != batch_generators(11, 2, 8)[1].initial_seed()


def test_stream_is_the_same_with_and_without_workers(sampler):
    single = BatchLoader(sampler, augment, num_workers=0, seed=1, epoch_batches=5)
    threaded = BatchLoader(sampler, augment, num_workers=2, seed=1, epoch_batches=5)
    assert_same_stream(stream(single, 4), stream(threaded, 4))


def test_resuming_at_an_epoch_gives_that_epochs_stream(sampler):
    uninterrupted = BatchLoader(sampler, augment, num_workers=2, seed=1, epoch_batches=3)
    epochs = [stream(uninterrupted, epoch) for epoch in range(3)]
    resumed = BatchLoader(sampler, augment, num_workers=1, seed=1, epoch_batches=3)
    assert_same_stream(stream(resumed, 2), epochs[2])
    assert not torch.equal(epochs[1][0][0], epochs[2][0][0])


def test_without_augmentation_the_outside_label_becomes_background():
    loader = BatchLoader(RandomSampler(), None, num_workers=0, seed=0, epoch_batches=1)
    _, seg = next(iter(loader.epoch(0)))
    assert set(torch.unique(seg).tolist()) == {0, 1}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_failing_batch_raises_with_its_index_and_original_traceback(num_workers):
    failing_seed = batch_generators(0, 1, 2)[1].initial_seed()

    def fail_on_batch_2(data, seg, generator):
        if generator.initial_seed() == failing_seed:
            raise ValueError("label map of case_042 is corrupt")
        return data, seg

    loader = BatchLoader(RandomSampler(), fail_on_batch_2, num_workers=num_workers, seed=0, epoch_batches=4)
    batches = loader.epoch(1)
    next(batches), next(batches)
    with pytest.raises(RuntimeError, match="data worker failed on batch 2") as raised:
        next(batches)
    assert "ValueError: label map of case_042 is corrupt" in str(raised.value)
    assert "fail_on_batch_2" in str(raised.value)  # the worker's own frame
    assert not any(t.name.startswith("clinix-data") for t in threading.enumerate())


def test_closing_an_epoch_early_joins_the_workers():
    sampler = RandomSampler()
    loader = BatchLoader(sampler, None, num_workers=2, seed=0, epoch_batches=1000)
    batches = loader.epoch(0)
    next(batches)
    closing = threading.Thread(target=loader.close)
    closing.start()
    closing.join(timeout=30)
    assert not closing.is_alive()
    assert not any(t.name.startswith("clinix-data") for t in threading.enumerate())
    assert sampler.calls <= 1 + 2 * 2  # the batch taken and at most the queue of 2 per worker
