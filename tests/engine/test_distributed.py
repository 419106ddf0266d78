"""Training on several processes with gloo on the CPU: exact validation metrics, the same
weights as one process with the global batch, resume rules, and a rank killed mid-run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint
from pixelseg.config import parse_config
from pixelseg.engine.distributed import DistContext
from pixelseg.errors import CheckpointError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_config(run_dir: Path, batch: int, epochs: int = 1) -> dict:
    """FCN-32s on VGG-16 without BatchNorm or dropout, plain CE: a step on R processes with
    batch B must equal one process's step with batch R * B."""
    return {
        "output_dir": str(run_dir),
        "seed": 5,
        "data": {"synthetic": {"num_train": 8, "num_val": 6, "size": 32}, "batch_size": batch},
        "model": {
            "name": "fcn32s",
            "encoder": "vgg16",
            "options": {"fc_channels": 8, "dropout": 0.0},
        },
        "loss": {"terms": [{"name": "ce"}]},
        "train": {
            "epochs": epochs,
            # SGD: an update proportional to the gradient, so float noise in the summation
            # order stays float noise (Adam divides it by tiny second moments).
            "optimizer": {"name": "sgd", "lr": 0.01},
            "scheduler": {"name": "poly", "warmup_iters": 1},
            "progress": False,
            "tensorboard": False,
            "threads": 1,
        },
    }


def ranked(rank: int, world: int, port: int, run_dir: str, batch: int, epochs: int) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    metrics, _ = workflows.train(parse_config(raw_config(Path(run_dir), batch, epochs)))
    torch.save(metrics, Path(run_dir) / f"metrics_rank{rank}.pt")


def run_two(run_dir: Path, batch: int, epochs: int = 1) -> None:
    mp.spawn(ranked, args=(2, free_port(), str(run_dir), batch, epochs), nprocs=2, join=True)


def two_runs(base: Path) -> dict[str, Path]:
    run_two(base / "two", batch=2)
    metrics, _ = workflows.train(parse_config(raw_config(base / "one", batch=4)))
    torch.save(metrics, base / "one_metrics.pt")
    return {"base": base}


@pytest.fixture(scope="module")
def runs(build_once):
    """Runs on two ranks (batch 2) and on one process (batch 4), made once per test run;
    each test writes only under names of its own."""
    base = build_once("ddp_runs", two_runs)["base"]
    return base, torch.load(base / "one_metrics.pt")


def test_two_ranks_step_like_one_process_with_the_global_batch(runs):
    base, _ = runs
    one = load_checkpoint(base / "one" / "last.pt")
    two = load_checkpoint(base / "two" / "last.pt")
    assert one["state"]["iteration"] == two["state"]["iteration"] == 2
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert two["world_size"] == 2 and one["world_size"] == 1


def test_validation_metrics_across_ranks_equal_one_process(runs):
    base, single_metrics = runs
    per_rank = [torch.load(base / "two" / f"metrics_rank{r}.pt") for r in range(2)]
    assert per_rank[0] == per_rank[1]
    # Same data, same weights (to float tolerance): the reduced confusion matrix gives the
    # single process's scores; evaluating the two-rank weights in one process matches too.
    config = parse_config(raw_config(base / "two", batch=2))
    reference = workflows.eval_checkpoint(config, base / "two" / "last.pt", base / "eval")
    for name in ("miou", "pixel_accuracy", "fwiou", "mdice"):
        assert per_rank[0][name] == pytest.approx(reference[name], abs=1e-12), name
        assert per_rank[0][name] == pytest.approx(single_metrics[name], abs=1e-3), name


def test_only_rank_zero_writes(runs):
    base, _ = runs
    rows = (base / "two" / "log.csv").read_text().splitlines()
    assert len(rows) == 2  # header + one epoch, written once


def test_resume_on_another_world_size_is_refused(runs):
    base, _ = runs
    config = parse_config(raw_config(base / "two", batch=2, epochs=2))
    with pytest.raises(CheckpointError, match=r"2 process\(es\).*this run has 1"):
        workflows.train(config, resume=True)


def test_sync_batchnorm_is_refused_on_the_cpu(tmp_path):
    raw = raw_config(tmp_path / "run", batch=2)
    raw["train"]["sync_batchnorm"] = True
    with pytest.raises(Exception, match="sync_batchnorm needs CUDA"):
        workflows.train(parse_config(raw))


KILLER = """
import os, sys
from pathlib import Path
import yaml
from pixelseg import workflows
from pixelseg.config import parse_config

class KillRankOne:
    def on_step(self, trainer, logs):
        pass

def kill_on_step(trainer, logs):
    pass

config = parse_config(yaml.safe_load(Path(sys.argv[1]).read_text()))
resume = len(sys.argv) > 2
if not resume and int(os.environ["RANK"]) == 1:
    # Rank 1 dies in its third step of the second epoch, after epoch 1's checkpoint.
    import pixelseg.engine.trainer as trainer_module
    original = trainer_module.Trainer._train_batch
    def dying(self, batch):
        if self.state.epoch == 1 and self.state.batch_in_epoch == 1:
            os._exit(3)
        return original(self, batch)
    trainer_module.Trainer._train_batch = dying
workflows.train(config, resume=resume or None)
"""


def torchrun(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", "--max_restarts=0", str(script), *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_a_killed_rank_fails_the_run_fast_and_the_run_resumes(tmp_path):
    import yaml

    raw = raw_config(tmp_path / "run", batch=2, epochs=3)
    raw["train"]["dist_timeout_minutes"] = 1.0
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    # torchrun's agent sees rank 1 exit and stops rank 0 instead of letting it hang.
    failed = torchrun(script, str(config_path), timeout=240)
    assert failed.returncode != 0
    assert "exitcode" in failed.stderr and "3" in failed.stderr
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["state"]["epoch"] == 1 and saved["world_size"] == 2
    resumed = torchrun(script, str(config_path), "resume", timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = load_checkpoint(tmp_path / "run" / "last.pt")["state"]
    assert final["epoch"] == 3 and final["finished"]


def sharded_eval_and_predict(rank: int, world: int, port: int, base: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    # One group for both jobs (as a notebook would hold it); each job uses it and leaves it.
    torch.distributed.init_process_group("gloo")
    base_path = Path(base)
    # The trainer's stop-together vote on a non-finite loss: rank 1's True reaches rank 0.
    context = DistContext(rank, world)
    votes = [context.any_process(rank == 1), context.any_process(False)]
    torch.save(votes, base_path / f"votes_rank{rank}.pt")
    config = parse_config(raw_config(base_path / "one", batch=4))
    metrics = workflows.eval_checkpoint(config, base_path / "one" / "last.pt", base_path / "ev2")
    torch.save(metrics, base_path / f"eval_rank{rank}.pt")
    written = workflows.predict_files(
        base_path / "one" / "last.pt", [str(base_path / "inputs")], base_path / "pred2"
    )
    torch.save([str(p) for p in written], base_path / f"written_rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_eval_and_predict_shard_over_ranks_and_match_one_process(runs):
    import numpy as np
    from PIL import Image

    base, _ = runs
    inputs = base / "inputs"
    inputs.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(5):
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(
            inputs / f"im{index}.png"
        )
    config = parse_config(raw_config(base / "one", batch=4))
    single = workflows.eval_checkpoint(config, base / "one" / "last.pt", base / "ev1")
    single_written = workflows.predict_files(
        base / "one" / "last.pt", [str(inputs)], base / "pred1"
    )
    mp.spawn(sharded_eval_and_predict, args=(2, free_port(), str(base)), nprocs=2, join=True)
    for rank in range(2):
        assert torch.load(base / f"votes_rank{rank}.pt") == [True, False]
        sharded = torch.load(base / f"eval_rank{rank}.pt")
        for name in ("miou", "pixel_accuracy", "fwiou", "mdice", "num_images"):
            assert sharded[name] == single[name], name
    rows = (base / "ev2" / "per_image.csv").read_text()
    assert rows == (base / "ev1" / "per_image.csv").read_text()
    written = [p for rank in range(2) for p in torch.load(base / f"written_rank{rank}.pt")]
    assert sorted(Path(p).name for p in written) == sorted(p.name for p in single_written)
    assert len(written) == len(set(written)) == 5
    for path in single_written:
        other = base / "pred2" / path.name
        assert np.array_equal(np.asarray(Image.open(other)), np.asarray(Image.open(path)))
