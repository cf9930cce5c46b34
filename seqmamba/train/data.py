"""Data loading whose training order is a pure function of (seed, batch index).

Training is step-based, so the training data is an endless stream of batches. Batch
``k`` (counting micro-batches from the start of the run) holds the samples at stream
positions ``[(k * world_size + rank) * batch_size, ... + batch_size)``:

* a map-style dataset (``__len__`` + ``__getitem__``) is read in a shuffled order, a
  new permutation per pass, each a keyed bijection of ``range(len)`` computed per index
  (no permutation array, so huge or virtual datasets cost nothing); one with a true
  ``in_order`` attribute is read in index order instead (e.g. consecutive windows of
  a corpus that is shuffled already);
* an ``IterableDataset`` is read in its own order, restarted when it ends. It must be
  deterministic given its config (it may not draw from torch's global RNG). Each
  loader worker reads the stream and keeps only its own batches, so skipping ahead
  costs generating the skipped items.

Resuming at global step ``s`` starts the stream at batch ``s * accumulate_grad_batches``:
the first batch after a resume is the one the uninterrupted run would have seen next,
whatever the number of loader workers.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info
from torch.utils.data._utils.collate import default_collate

from seqmamba.tasks import Task

_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: a well-mixed 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class IndexPermutation:
    """A pseudo-random permutation of ``range(n)`` keyed by ``(seed, epoch)``.

    A 4-round Feistel network on the smallest even-bit power of two >= n, walked until
    it lands inside ``range(n)``: O(1) memory, a few hashes per index.
    """

    def __init__(self, n: int, *, seed: int, epoch: int) -> None:
        assert n >= 1
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        base = _mix64(_mix64(seed & _MASK64) ^ epoch)
        self._keys = [_mix64(base + round_) for round_ in range(4)]

    def __getitem__(self, index: int) -> int:
        assert 0 <= index < self.n
        x = self._encrypt(index)
        while x >= self.n:  # cycle walking keeps it a bijection of range(n)
            x = self._encrypt(x)
        return x

    def _encrypt(self, x: int) -> int:
        left, right = x >> self._half, x & self._mask
        for key in self._keys:
            left, right = right, left ^ (_mix64(right ^ key) & self._mask)
        return (left << self._half) | right


class TrainStream(IterableDataset):
    """Endless training batches (already collated) starting at batch ``start_batch``.

    Use with ``DataLoader(stream, batch_size=None)``: worker ``w`` of ``W`` makes
    batches ``start_batch + w, start_batch + w + W, ...`` and the loader interleaves
    them back into order.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        collate_fn: Callable[[list[Any]], Any] = default_collate,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"task.batch_size: must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size
        self.collate_fn = collate_fn
        self.iterable = isinstance(dataset, IterableDataset)
        if not self.iterable and len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("the task's train dataset is empty")

    def first_position(self, batch: int) -> int:
        """Stream position of the first sample of micro-batch ``batch`` on this rank."""
        return (batch * self.world_size + self.rank) * self.batch_size

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = itertools.count(self.start_batch + worker, workers)
        if self.iterable:
            yield from self._from_iterable(batches)
        else:
            yield from self._from_map(batches)

    def _from_map(self, batches: Iterator[int]) -> Iterator[Any]:
        n = len(self.dataset)  # type: ignore[arg-type]
        in_order = bool(getattr(self.dataset, "in_order", False))
        epoch_of_permutation, permutation = 0, IndexPermutation(n, seed=self.seed, epoch=0)
        for batch in batches:
            items = []
            first = self.first_position(batch)
            for position in range(first, first + self.batch_size):
                epoch, offset = divmod(position, n)
                if epoch != epoch_of_permutation:
                    epoch_of_permutation, permutation = epoch, IndexPermutation(n, seed=self.seed, epoch=epoch)
                items.append(self.dataset[offset if in_order else permutation[offset]])
            yield self.collate_fn(items)

    def _from_iterable(self, batches: Iterator[int]) -> Iterator[Any]:
        stream = self._endless()
        position = 0
        for batch in batches:
            first = self.first_position(batch)
            # Skip the samples of other ranks and workers (and those before the resume point).
            next(itertools.islice(stream, first - position, first - position), None)
            items = list(itertools.islice(stream, self.batch_size))
            position = first + self.batch_size
            yield self.collate_fn(items)

    def _endless(self) -> Iterator[Any]:
        while True:
            empty = True
            for item in self.dataset:  # type: ignore[attr-defined]
                empty = False
                yield item
            if empty:
                raise ValueError("the task's train dataset is empty")


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``range(n)``, in order and without
    padding, so that validation totals summed over processes count every item once."""

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        self.indices = range(rank, n, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EvalStream(IterableDataset):
    """Batches of an iterable evaluation dataset, batch ``j`` going to shard
    ``j % (world_size * workers)``, so no item is duplicated or dropped; only the
    first ``max_batches`` batches (all shards together) when it is given."""

    def __init__(self, dataset: IterableDataset, *, batch_size: int, rank: int, world_size: int,
                 max_batches: int | None = None,
                 collate_fn: Callable[[list[Any]], Any] = default_collate) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.max_batches = max_batches
        self.collate_fn = collate_fn

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = self.world_size * workers
        shard = self.rank * workers + worker
        items = iter(self.dataset)
        indices = itertools.count() if self.max_batches is None else range(self.max_batches)
        for index in indices:
            batch = list(itertools.islice(items, self.batch_size))
            if not batch:
                return
            if index % shards == shard:
                yield self.collate_fn(batch)


class SequenceDataModule(L.LightningDataModule):
    """The task's "train", "val" (and optional "test") datasets as DataLoaders.

    Batch sizes and worker counts come from the task config. The training stream
    starts where the trainer's global step says (see the module docstring). With
    ``limit_val_batches``, validation covers the first ``limit_val_batches *
    eval_batch_size`` items, split over the processes: the same items for any number
    of processes, so validation losses compare across device counts.
    """

    def __init__(self, task: Task, *, seed: int, limit_val_batches: int | None = None) -> None:
        super().__init__()
        self.task = task
        self.seed = seed
        self.limit_val_batches = limit_val_batches
        self._splits: dict[str, Dataset] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            splits = self.task.datasets()
            for required in ("train", "val"):
                if required not in splits:
                    raise ValueError(f"task {self.task.name!r}: datasets() has no {required!r} split")
            self._splits = splits

    @property
    def splits(self) -> dict[str, Dataset]:
        self.setup()
        assert self._splits is not None
        return self._splits

    def _placement(self) -> tuple[int, int, int]:
        """(micro-batches already trained on, rank, world size)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 1
        return trainer.global_step * trainer.accumulate_grad_batches, trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        start, rank, world_size = self._placement()
        stream = TrainStream(self.splits["train"], batch_size=self.task.cfg.batch_size, seed=self.seed,
                             start_batch=start, rank=rank, world_size=world_size)
        return self._loader(stream, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.splits["val"], max_batches=self.limit_val_batches)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.splits:
            raise ValueError(f"task {self.task.name!r} has no 'test' split")
        return self._eval_loader(self.splits["test"])

    def _eval_loader(self, dataset: Dataset, *, max_batches: int | None = None) -> DataLoader:
        _, rank, world_size = self._placement()
        batch_size = self.task.cfg.eval_batch_size
        if isinstance(dataset, IterableDataset):
            stream = EvalStream(dataset, batch_size=batch_size, rank=rank, world_size=world_size,
                                max_batches=max_batches)
            return self._loader(stream, batch_size=None)
        size = len(dataset)  # type: ignore[arg-type]
        if max_batches is not None:
            size = min(size, max_batches * batch_size)
        sampler = ShardSampler(size, rank=rank, world_size=world_size)
        return self._loader(dataset, batch_size=batch_size, sampler=sampler)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        workers = self.task.cfg.num_workers
        return DataLoader(
            dataset,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            # Seeds the workers' RNGs, so even a dataset that does use torch's RNG in a
            # worker is reproducible.
            generator=torch.Generator().manual_seed(self.seed),
            **kwargs,
        )
