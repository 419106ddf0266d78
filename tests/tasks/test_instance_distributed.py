"""The instance task on two processes (gloo on the CPU): DDP training runs and its ranks agree
on the validation metrics, and a sharded ``eval`` (each rank scores half the images, the
COCO records are gathered) reports what one process reports."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pixelseg import workflows
from pixelseg.config import parse_config

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_config(run_dir: Path) -> dict:
    return {
        "task": "instance",
        "output_dir": str(run_dir),
        "seed": 2,
        "data": {"synthetic": {"num_train": 4, "num_val": 5, "size": 64}, "batch_size": 1},
        "model": {
            "name": "maskrcnn",
            "encoder": "mobilenet_v3_large",
            "options": {"norm": "group", "min_size": 64, "max_size": 64, "fpn_channels": 32,
                        "box_detections_per_img": 10},
        },
        "train": {"iterations": 2, "epochs": None, "progress": False, "tensorboard": False,
                  "threads": 1},
    }  # fmt: skip


def _environment(rank: int, port: int) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip


def train_then_eval_rank(rank: int, port: int, run_dir: str, out: str) -> None:
    """Both jobs in one process group (as a notebook would hold it), saving two process
    starts: each job uses the group and leaves it."""
    _environment(rank, port)
    torch.distributed.init_process_group("gloo")
    config = parse_config(raw_config(Path(run_dir)))
    metrics, _ = workflows.train(config)
    torch.save({k: v for k, v in metrics.items() if isinstance(v, float)},
               Path(run_dir) / f"metrics_rank{rank}.pt")  # fmt: skip
    torch.distributed.barrier()  # rank 0 has written last.pt
    workflows.eval_checkpoint(config, Path(run_dir) / "last.pt", out)
    torch.distributed.destroy_process_group()


def test_two_ranks_train_and_evaluate_like_one(tmp_path):
    run = tmp_path / "ddp"
    args = (free_port(), str(run), str(tmp_path / "two"))
    mp.spawn(train_then_eval_rank, args=args, nprocs=2, join=True)
    ranks = [torch.load(run / f"metrics_rank{r}.pt") for r in (0, 1)]
    assert ranks[0] == ranks[1] and "mask_ap" in ranks[0]

    single = workflows.eval_checkpoint(
        parse_config(raw_config(run)), run / "last.pt", tmp_path / "one"
    )
    sharded = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert sharded["num_images"] == single["num_images"] == 5
    for name in ("mask_ap", "mask_ap50", "box_ap", "box_ar100"):
        assert sharded[name] == pytest.approx(single[name], abs=1e-6), name
