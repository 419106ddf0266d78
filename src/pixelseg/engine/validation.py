"""Validation during training: the task's metrics of a model over a dataset.

Every process scores its own share of the samples (every ``world_size``-th, no padding, so
none is counted twice); the accumulators then ``sync`` so every process holds the totals.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pixelseg.engine.device import Runtime, autocast_context, move_to_device
from pixelseg.engine.distributed import DistContext
from pixelseg.tasks.base import Task

__all__ = ["validate"]


@torch.inference_mode()
def validate(
    model: nn.Module,
    dataset: Dataset,
    task: Task,
    runtime: Runtime,
    dist: DistContext,
    *,
    batch_size: int,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Scores of ``model`` in eval mode over ``dataset``, plus the mean ``val_loss`` where
    the task can compute one in evaluation."""
    model.eval()
    # A fresh loader per validation, on purpose: validation runs a few times a fit, and
    # persistent workers would sit idle (holding their memory) between validations.
    shard = list(range(dist.rank, len(dataset), dist.world_size))  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=shard,
        num_workers=num_workers,
        collate_fn=task.collate_eval,
    )
    metrics, loss_sum, count = task.new_metrics(), 0.0, 0
    for groups in loader:
        for batch in groups:
            batch = move_to_device(batch, runtime.device, runtime.memory_format)
            with autocast_context(runtime):
                output = task.forward_eval(model, batch)
                loss = task.eval_loss(output, batch)
            if loss is not None:
                size = task.batch_size(batch)
                loss_sum, count = loss_sum + float(loss) * size, count + size
            metrics.update(task.predict(output), batch)
    metrics.sync(dist.group)
    result = metrics.compute()
    loss_sum, count = dist.sum([loss_sum, float(count)])
    if count:
        result["val_loss"] = loss_sum / count
    return result
