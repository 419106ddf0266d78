"""Deterministic, resumable batching.

Training order and augmentation depend only on ``(seed, epoch, position)``, never on a
global generator, the number of workers or how often the run was resumed. The sampler
draws each epoch's permutation from its own generator seeded by ``seed + epoch`` and can
start part-way through an epoch; the dataset wrapper restarts the sample's augmentation
generators from ``(seed, epoch, index)`` before each draw.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = [
    "EpochBatchSampler",
    "EpochSampler",
    "SeededDataset",
    "sample_seed",
    "seed_everything",
    "seed_worker",
]

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed unique to one draw of one sample."""
    mixed = np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1)[0]
    return int(mixed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/Python seeds from torch's per-worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` pairs of one epoch, optionally skipping the first ones.

    ``shuffle`` draws the permutation from ``torch.Generator().manual_seed(seed + epoch)``.
    """

    def __init__(
        self, length: int, *, seed: int, epoch: int, shuffle: bool = True, start: int = 0
    ) -> None:
        self.length, self.seed, self.epoch = length, seed, epoch
        self.shuffle, self.start = shuffle, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order()[self.start :]:
            yield index, self.epoch

    def __len__(self) -> int:
        return max(self.length - self.start, 0)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, epoch)`` pairs, epoch after epoch without end, from a position.

    One loader (and its worker processes) then serves the whole run instead of being rebuilt
    every epoch: on a small dataset, restarting workers each epoch cost a third of the steps.
    Each epoch is :class:`EpochSampler`'s permutation cut into ``batch_size`` batches (the
    last one may be short), so no batch mixes two epochs and the order is the same whether
    the run went straight through or was resumed at ``(epoch, start_batch)``.

    With ``num_replicas`` processes, every process draws the same permutation and step
    ``k`` takes the global batch ``permutation[k * B * R : (k + 1) * B * R]`` (``B`` the
    per-process batch size, ``R`` the number of processes), of which process ``rank`` gets
    the ``rank``-th slice of ``B``: one step on ``R`` processes sees exactly the samples
    one process with batch ``B * R`` would. The epoch's last global batch, when short, is
    filled up from the start of the permutation so that every process gets ``B`` samples
    (DistributedDataParallel needs every process to step).
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int = 0,
        start_batch: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if length < 1 or batch_size < 1:
            raise ValueError(
                f"EpochBatchSampler needs length >= 1 and batch_size >= 1, got {length}, "
                f"{batch_size}"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.epoch, self.start_batch, self.shuffle = epoch, start_batch, shuffle
        self.num_replicas, self.rank = num_replicas, rank

    def batches_per_epoch(self) -> int:
        return math.ceil(self.length / (self.batch_size * self.num_replicas))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = self.epoch, self.start_batch
        size = self.batch_size * self.num_replicas
        while True:
            order = EpochSampler(self.length, seed=self.seed, epoch=epoch, shuffle=self.shuffle)
            pairs = list(order)
            if self.num_replicas > 1:
                padded = -len(pairs) % size
                pairs += [pairs[i % len(pairs)] for i in range(padded)]
            for first in range(start * size, self.length, size):
                part = pairs[first : first + size]
                if self.num_replicas > 1:
                    part = part[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
                yield part
            epoch, start = epoch + 1, 0


class SeededDataset(Dataset):
    """Wraps a dataset so each ``(index, epoch)`` draw gets its own augmentation seed.

    Before each draw the wrapped dataset's ``transform.set_seed(sample_seed(seed, epoch,
    index))`` restarts the augmentation stream (pixelseg's :class:`SegmentationTransform`
    draws only from the generators that ``set_seed`` creates). Nothing global is seeded or
    restored: a dataset that draws from the global ``random``/``np.random`` generators is not
    reproducible here, and a transform without ``set_seed`` is logged as a warning.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed
        transform = getattr(dataset, "transform", None)
        if transform is not None and not callable(getattr(transform, "set_seed", None)):
            logger.warning(
                "%s has no set_seed(seed): if it is random, its draws depend on global "
                "generators and are not reproducible across workers or resumes",
                type(transform).__name__,
            )

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        set_seed = getattr(getattr(self.dataset, "transform", None), "set_seed", None)
        if set_seed is not None:
            set_seed(sample_seed(self.seed, epoch, index))
        return self.dataset[index]
