"""Where the loop runs: its rank among the processes and the decisions they must share.

The loop asks this one object, never ``torch.distributed`` directly: rank 0 writes files,
runs callbacks and logs; stop and learning-rate-budget decisions are made from rank 0's
clock and shared, so that every process steps and stops together; metric accumulators
reduce across processes in their ``sync``. In one process (the default) every call is a
plain local answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DistContext", "single_process"]


@dataclass(frozen=True)
class DistContext:
    """``rank`` of ``world_size`` processes; ``group`` for the collectives (None: default)."""

    rank: int = 0
    world_size: int = 1
    group: object | None = None

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

    def share_float(self, value: float) -> float:
        """Rank 0's ``value`` on every process (e.g. the measured training seconds)."""
        if not self.active:
            return value
        box = torch.tensor([value], dtype=torch.float64)
        torch.distributed.broadcast(box, src=0, group=self.group)
        return float(box.item())

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over processes (loss totals and sample counts)."""
        if not self.active:
            return values
        box = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(box, group=self.group)
        return box.tolist()


def single_process() -> DistContext:
    return DistContext()
