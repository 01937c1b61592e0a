"""Background production of training batches, reproducible whatever the number of workers.

Batch ``i`` of epoch ``e`` is drawn with generators seeded from ``(seed, e, i)`` alone, so the stream of
an epoch is the same with 0 or 8 workers and when a run resumes at that epoch.

Workers are threads, not processes: cropping a memory map (numpy copies) and torch's operators release
the GIL, threads share the sampler's open memory maps (a process would have to reopen them, and
pickling a memmap copies its data), a worker's exception arrives with its traceback, and nothing needs
a ``__main__`` guard or a spawn start-up per worker. At most ``2 · num_workers`` batches are in flight,
and they are yielded in order.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from clinix.train.augment import map_outside_label
from clinix.train.sampling import PatchSampler

AUGMENTATION_STREAM = 1  # appended to (seed, epoch, index) so sampling and augmentation draw unrelated numbers
PREFETCH_PER_WORKER = 2

Batch = tuple[torch.Tensor, torch.Tensor]
Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], Batch]


def batch_generators(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, torch.Generator]:
    """The sampling and augmentation generators of batch ``index`` of ``epoch``."""
    sequence = np.random.SeedSequence([seed, epoch, index, AUGMENTATION_STREAM])
    augmentation_seed = int(sequence.generate_state(1, dtype=np.uint64)[0])
    return np.random.default_rng([seed, epoch, index]), torch.Generator().manual_seed(augmentation_seed)


class BatchLoader:
    """Yields an epoch's batches ``(data (B, C, *patch) float32, seg (B, 1, *patch) int16)`` on ``device``.

    Args:
        sampler: draws the patches (``PatchSampler``).
        augment: called as ``augment(data, seg, generator)`` on CPU or ``device`` tensors, e.g. a
            closure over ``augment_batch`` with the plan patch; None only maps the outside label −1
            to 0 (nnU-Net's validation batches).
        num_workers: background threads; 0 produces each batch in the calling thread.
        seed: the run's seed (give each distributed rank its own).
        epoch_batches: batches per epoch.
        device: where batches are yielded. On an accelerator the workers only sample, and the
            augmentation runs there in the calling thread; on the CPU the workers augment too.
    """

    def __init__(
        self,
        sampler: PatchSampler,
        augment: Augment | None,
        num_workers: int,
        seed: int,
        epoch_batches: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.sampler = sampler
        self.augment = augment
        self.num_workers = num_workers
        self.seed = seed
        self.epoch_batches = epoch_batches
        self.device = torch.device(device)
        self._current: Generator[Batch, None, None] | None = None

    def __len__(self) -> int:
        return self.epoch_batches

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the running epoch's workers, if any, and wait for them."""
        if self._current is not None:
            self._current.close()
            self._current = None

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch`` in order; closes the previous epoch's iterator if still open.

        Closing the iterator early (or ``close()``) cancels the queued batches and joins the workers. A
        failing batch raises ``RuntimeError`` naming the batch, with the original traceback text.
        """
        self.close()
        self._current = self._stream(epoch)
        return self._current

    def _stream(self, epoch: int) -> Generator[Batch, None, None]:
        if self.num_workers == 0:
            for index in range(self.epoch_batches):
                yield self._finish(index, lambda index=index: self._produce(epoch, index))
            return
        executor = ThreadPoolExecutor(self.num_workers, thread_name_prefix="clinix-data")
        depth = PREFETCH_PER_WORKER * self.num_workers
        try:
            pending: deque[Future] = deque(
                executor.submit(self._produce, epoch, index) for index in range(min(depth, self.epoch_batches))
            )
            for index in range(self.epoch_batches):
                future = pending.popleft()
                if index + depth < self.epoch_batches:
                    pending.append(executor.submit(self._produce, epoch, index + depth))
                yield self._finish(index, future.result)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _produce(self, epoch: int, index: int) -> tuple[Batch, torch.Generator]:
        """Sample batch ``index`` (and augment it when the augmentation runs on the CPU)."""
        rng, generator = batch_generators(self.seed, epoch, index)
        data, seg = self.sampler.sample_batch(rng)
        batch = torch.from_numpy(data), torch.from_numpy(seg)
        if self.device.type == "cpu":
            return self._augment(batch, generator), generator
        if self.device.type == "cuda":
            batch = batch[0].pin_memory(), batch[1].pin_memory()
        return batch, generator

    def _finish(self, index: int, result: Callable[[], tuple[Batch, torch.Generator]]) -> Batch:
        """The produced batch, moved to the device and augmented there if not yet; errors name the batch."""
        try:
            batch, generator = result()
            if self.device.type == "cpu":
                return batch
            on_device = tuple(t.to(self.device, non_blocking=True) for t in batch)
            return self._augment(on_device, generator)
        except Exception as error:
            text = "".join(traceback.format_exception(error))
            raise RuntimeError(f"data worker failed on batch {index}:\n{text}") from error

    def _augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        data, seg = batch
        if self.augment is None:
            return data, map_outside_label(seg)
        return self.augment(data, seg, generator)
