"""Where the loop runs: its rank among the processes and the decisions they must share.

The loop asks this one object, never ``torch.distributed`` directly: rank 0 writes files,
runs callbacks and logs; stop and learning-rate-budget decisions are made from rank 0's
clock and shared, so that every process steps and stops together; metric accumulators
reduce across processes in their ``sync``. In one process (the default) every call is a
plain local answer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from pixelseg.errors import ConfigError

__all__ = [
    "DistContext",
    "from_environment",
    "process_runtime",
    "shutdown",
    "single_process",
    "wrap_for_processes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """``rank`` of ``world_size`` processes; ``local_rank`` picks this process's GPU on its
    machine; ``group`` for the collectives (None: the default group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: object | None = None
    owns_group: bool = False  # joined by from_environment, so left by shutdown

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and reports."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        dist = torch.distributed
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def decide(self, value: bool) -> bool:
        """Rank 0's ``value`` on every process (a stop decision taken once)."""
        if not self.active:
            return value
        flag = torch.tensor([1 if value else 0], dtype=torch.int64)
        torch.distributed.broadcast(flag, src=0, group=self.group)
        return bool(flag.item())

    def any_process(self, value: bool) -> bool:
        """Whether ``value`` holds on any process (a failure that one process saw)."""
        if not self.active:
            return value
        flag = torch.tensor([1 if value else 0], dtype=torch.int64)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self.group)
        return bool(flag.item())

    def share_float(self, value: float) -> float:
        """Rank 0's ``value`` on every process (e.g. the measured training seconds)."""
        if not self.active:
            return value
        box = torch.tensor([value], dtype=torch.float64)
        torch.distributed.broadcast(box, src=0, group=self.group)
        return float(box.item())

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier(group=self.group)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order (per-sample rows, detections)."""
        if not self.active:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value, group=self.group)
        return gathered

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over processes (loss totals and sample counts)."""
        if not self.active:
            return values
        box = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(box, group=self.group)
        return box.tolist()


def single_process() -> DistContext:
    return DistContext()


def from_environment(device_type: str, timeout_minutes: float = 10.0) -> DistContext:
    """The process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``), joined once: NCCL for CUDA tensors, gloo for CPU ones.

    Without those variables (a plain ``pixelseg`` run) this is one process. A collective
    that waits longer than ``timeout_minutes`` (a rank died) raises instead of hanging.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dist = torch.distributed
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if dist.is_initialized():  # a caller's group (a notebook, a test): use it, leave it
        return DistContext(rank=rank, world_size=world, local_rank=local)
    # On CUDA, NCCL carries the gradients and gloo the small CPU tensors of decide(),
    # share_float() and sum() (NCCL has no CPU backend: alone it would fail at step one).
    backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    log.info("process %d of %d joined the %s group", rank, world, backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, owns_group=True)


def shutdown(context: DistContext) -> None:
    """Leave the process group this job joined (every process calls it at the end)."""
    if context.owns_group and context.active:
        torch.distributed.destroy_process_group()


def process_runtime(runtime: Any, context: DistContext) -> Any:
    """The runtime with this process's own GPU (``cuda:LOCAL_RANK``) when several share a
    machine; unchanged for one process or the CPU."""
    if context.world_size > 1 and runtime.device.type == "cuda":
        return dataclasses.replace(runtime, device=torch.device("cuda", context.local_rank))
    return runtime


def wrap_for_processes(model: nn.Module, config: Any, runtime: Any, context: DistContext):
    """``model`` for the training forward: DistributedDataParallel over the process group
    (SyncBatchNorm first when ``train.sync_batchnorm``), or the model itself alone."""
    cuda = runtime.device.type == "cuda"
    if config.sync_batchnorm and not cuda:
        raise ConfigError(
            "train.sync_batchnorm needs CUDA: torch's SyncBatchNorm only runs on GPU tensors; "
            "on the CPU each process keeps its own BatchNorm statistics (leave it false)"
        )
    if not context.active:
        return model
    if config.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[runtime.device.index] if cuda else None,
        find_unused_parameters=config.find_unused_parameters,
    )
