"""Training throughput on several processes (gloo, CPU) against one process.

Three ways to use this machine's cores for the same training job, each timed in images per
second over the same steps (the first ``--warmup`` steps left out):

- one process with 1 thread;
- one process with ``--procs`` threads;
- ``--procs`` gloo processes with 1 thread each (DistributedDataParallel, per-process batch
  ``--batch``, so the global batch is ``procs`` times larger).

The model is the U-Net (ResNet-18) on 128x128 in-memory images; the trainer is pixelseg's
own (task, loss, schedule), checkpoint writing excluded by timing ``on_step`` intervals.
The ratio of the last two tells whether processes or threads use the cores better here,
and so the scaling rule: the images a second grow by the measured factor, and with
``train.lr_scaling: linear`` the learning rate by ``procs``.

Run: ``.venv/bin/python benchmarks/ddp.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from pixelseg import losses, models
from pixelseg.config import parse_config
from pixelseg.engine.distributed import DistContext
from pixelseg.engine.trainer import Trainer
from pixelseg.tasks import SemanticTask

CLASSES = 4


class InMemory(Dataset):
    def __init__(self, count: int, size: int) -> None:
        generator = torch.Generator().manual_seed(1)
        self.images = torch.randn(count, 3, size, size, generator=generator)
        self.masks = torch.randint(0, CLASSES, (count, size, size), generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "mask": self.masks[index], "name": str(index)}


class Clock:
    def __init__(self) -> None:
        self.ticks: list[float] = []

    def on_step(self, trainer: Any, logs: dict[str, float]) -> None:
        self.ticks.append(time.perf_counter())


def train_steps(args: argparse.Namespace, dist: DistContext, threads: int) -> float:
    """Images per second of this process's trainer (all processes' images on rank 0)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.create("unet", CLASSES, encoder="resnet18")
    config = parse_config(
        {
            "data": {"batch_size": args.batch},
            "train": {
                "iterations": args.steps,
                "epochs": None,
                "scheduler": {"name": "none"},
                "amp": "off",
                "device": "cpu",
                "tensorboard": False,
                "progress": False,
                "val_every": 10**6,
            },
        }
    )
    clock = Clock()
    data = InMemory(args.batch * args.procs * 4, args.size)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            model,
            SemanticTask(CLASSES, losses.create("ce")),
            data,
            None,
            config,
            run_dir,
            {"task": "semantic"},
            callbacks=[clock],
            dist=dist,
        )
        trainer.fit()
    if not dist.is_main:
        return float("nan")  # callbacks run on rank 0 only; it times the whole group
    timed = clock.ticks[args.warmup :]
    seconds = (timed[-1] - timed[0]) / max(len(timed) - 1, 1)
    return args.batch * dist.world_size / seconds


def _rank(rank: int, args: argparse.Namespace, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank)})
    os.environ["WORLD_SIZE"] = str(args.procs)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=args.procs)
    try:
        rate = train_steps(args, DistContext(rank, args.procs), threads=1)
        if rank == 0:
            Path(out).write_text(json.dumps(rate))
    finally:
        torch.distributed.destroy_process_group()


def ddp_rate(args: argparse.Namespace) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rate.json"
        mp.spawn(_rank, args=(args, port, str(out)), nprocs=args.procs, join=True)
        return float(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="per-process batch")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rounds: dict[str, list[float]] = {
        "1 proc x 1 thread": [],
        f"1 proc x {args.procs} threads": [],
        f"{args.procs} procs x 1 thread": [],
    }
    for _ in range(args.repeats):
        one = argparse.Namespace(**{**vars(args), "procs": 1})
        rounds["1 proc x 1 thread"].append(train_steps(one, DistContext(), threads=1))
        rounds[f"1 proc x {args.procs} threads"].append(
            train_steps(one, DistContext(), threads=args.procs)
        )
        rounds[f"{args.procs} procs x 1 thread"].append(ddp_rate(args))
    medians = {name: statistics.median(values) for name, values in rounds.items()}
    base = medians["1 proc x 1 thread"]
    print(
        f"\nU-Net (ResNet-18) {args.size}x{args.size}, per-process batch {args.batch}, "
        f"median of {args.repeats} rounds"
    )
    print(f"{'setting':<24}{'images/s':>10}{'vs 1 thread':>13}")
    for name, value in medians.items():
        print(f"{name:<24}{value:>10.2f}{value / base:>12.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": None}, "rounds": rounds, "medians": medians},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
