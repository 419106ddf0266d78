"""Micro-batching: requests that arrive close together share one forward pass.

Each request puts one normalised image ``[C, H, W]`` in a bounded queue and awaits its
future. One worker task forms the batches:

1. It waits for the first request, then keeps collecting until ``max_batch_size`` requests
   of that request's size are waiting or ``max_wait_ms`` have passed since it arrived
   (whichever comes first; requests that arrived while the previous pass ran are already
   there, so a busy service batches without waiting at all).
2. **Only images of the same (height, width) share a forward pass.** The batch is the
   oldest waiting request plus the next requests of exactly its size, in arrival order, up
   to ``max_batch_size``; requests of other sizes stay queued, in order, and the oldest of
   them leads the next pass. Images are never padded or resized to fit a batch, so a
   request's mask is the one its image alone would get.
3. The pass runs in a single worker thread (``run_in_executor``): the event loop keeps
   accepting and decoding requests meanwhile, and passes never overlap. Each future gets
   its own mask and the batch size; an error in the pass goes to every request in it.

The queue holds at most ``max_queue`` requests (counting those waiting for a same-size
partner); beyond that :meth:`MicroBatcher.submit` refuses at once with 503
(``queue_full``). A caller that stops waiting (its timeout) cancels its future, and the
worker drops it from the queue instead of computing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pixelseg.serve.errors import ApiError

__all__ = ["BatchResult", "MicroBatcher", "take_group"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """One request's answer: ``labels int64 [H, W]`` and the size of the pass it rode in."""

    labels: np.ndarray
    batch_size: int


@dataclass(eq=False)
class _Job:
    image: Tensor  # [C, H, W]
    future: asyncio.Future[BatchResult]
    arrived: float  # loop.time(), seconds

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])


def _shutting_down() -> ApiError:
    return ApiError(503, "shutting_down", "the service is shutting down; retry later")


def take_group(jobs: deque[_Job], max_batch_size: int) -> list[_Job]:
    """Remove and return the next batch from ``jobs``: the oldest live job and the following
    live jobs of its (height, width), up to ``max_batch_size``, in order. Jobs whose future
    is already done (cancelled by a timeout) are dropped; the others stay, in order."""
    group: list[_Job] = []
    kept: deque[_Job] = deque()
    for job in jobs:
        if job.future.done():
            continue
        if (not group or job.size == group[0].size) and len(group) < max_batch_size:
            group.append(job)
        else:
            kept.append(job)
    jobs.clear()
    jobs.extend(kept)
    return group


class MicroBatcher:
    """Group concurrent requests into forward passes of ``run_batch``.

    ``run_batch(images [B, C, H, W]) -> labels [B, H, W]`` runs in a worker thread.
    ``on_batch(size)`` and ``on_depth(waiting)`` report to the metrics. The worker starts on
    :meth:`start` (the app's start-up) or on the first :meth:`submit` in an event loop, and
    restarts if that loop changes.
    """

    def __init__(
        self,
        run_batch: Callable[[Tensor], np.ndarray],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda size: None)
        self.on_depth = on_depth or (lambda waiting: None)
        self._jobs: deque[_Job] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        """Requests queued for a forward pass (the one running not included)."""
        return sum(1 for job in self._jobs if not job.future.done())

    def _drop_finished(self) -> None:
        """Forget queued jobs whose request already ended (a timeout cancelled them), so
        that they hold no place in ``max_queue`` while a long forward pass runs."""
        live = [job for job in self._jobs if not job.future.done()]
        if len(live) != len(self._jobs):
            self._jobs.clear()
            self._jobs.extend(live)

    async def start(self) -> None:
        self._ensure_running()

    async def stop(self) -> None:
        """Stop the worker; requests still queued get 503 (``shutting_down``)."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(_shutting_down())
        self._jobs.clear()
        self.on_depth(0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._worker = self._loop = self._executor = None

    async def submit(self, image: Tensor) -> BatchResult:
        """Queue ``image [C, H, W]`` and wait for its mask; 503 when the queue is full."""
        self._ensure_running()
        self._drop_finished()
        if len(self._jobs) >= self.max_queue:
            raise ApiError(
                503,
                "queue_full",
                f"{len(self._jobs)} requests are already waiting (max_queue {self.max_queue}); "
                "retry later",
            )
        loop = asyncio.get_running_loop()
        job = _Job(image, loop.create_future(), loop.time())
        self._jobs.append(job)
        self.on_depth(len(self._jobs))
        assert self._arrived is not None
        self._arrived.set()
        return await job.future

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return
        if self._loop is not loop:
            # A new event loop (a restarted app, a test client without start-up): futures of
            # the old loop can never be resolved from this one.
            self._jobs.clear()
        self._loop = loop
        self._arrived = asyncio.Event()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="pixelseg-forward")
        self._worker = loop.create_task(self._work(), name="pixelseg-batcher")

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._arrived is not None
        while True:
            while not self._jobs:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._jobs[0]
            deadline = first.arrived + self.max_wait_s
            while self._same_size(first) < self.max_batch_size and not first.future.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            group = take_group(self._jobs, self.max_batch_size)
            self.on_depth(len(self._jobs))
            if group:
                await self._run(group, loop)

    def _same_size(self, first: _Job) -> int:
        return sum(1 for job in self._jobs if job.size == first.size and not job.future.done())

    async def _run(self, group: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        self.on_batch(len(group))
        images = [job.image for job in group]
        try:
            labels = await loop.run_in_executor(
                self._executor, lambda: self.run_batch(torch.stack(images))
            )
        except asyncio.CancelledError:
            # stop() cancelled the worker mid-pass: the requests of this pass get the 503
            # that queued ones get, not a 504 when their timeout runs out.
            for job in group:
                if not job.future.done():
                    job.future.set_exception(_shutting_down())
            raise
        except Exception as error:  # the pass failed: every request in it learns why
            log.exception("forward pass of %d images failed", len(group))
            for job in group:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        for index, job in enumerate(group):
            if not job.future.done():
                job.future.set_result(BatchResult(labels[index], len(group)))
