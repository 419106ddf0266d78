"""ConfusionMatrix.all_reduce across two real gloo processes on CPU."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pixelseg.metrics import ConfusionMatrix

NUM_CLASSES, IGNORE = 5, 255


def shared_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, NUM_CLASSES, (4, 16, 16), generator=gen)
    pred = torch.randint(0, NUM_CLASSES, (4, 16, 16), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.1] = IGNORE
    return pred, target


def worker(rank: int, world_size: int, tmp: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size
    )
    try:
        pred, target = shared_data()
        half = pred.shape[0] // world_size
        cm = ConfusionMatrix(NUM_CLASSES, IGNORE)
        cm.update(pred[rank * half : (rank + 1) * half], target[rank * half : (rank + 1) * half])
        torch.save(cm.matrix, f"{tmp}/before{rank}.pt")
        cm.all_reduce()
        torch.save(cm.matrix, f"{tmp}/after{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_one_shot(tmp_path: Path) -> None:
    mp.spawn(worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    pred, target = shared_data()
    one_shot = ConfusionMatrix(NUM_CLASSES, IGNORE)
    one_shot.update(pred, target)
    before = [torch.load(tmp_path / f"before{r}.pt") for r in range(2)]
    assert not torch.equal(before[0], one_shot.matrix)  # each rank saw only half
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"after{rank}.pt"), one_shot.matrix)
