"""A training process killed with SIGKILL leaves a loadable checkpoint that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint
from pixelseg.config import load_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"),
]


def test_sigkill_mid_run_leaves_a_resumable_checkpoint(tmp_path):
    config = {
        "output_dir": str(tmp_path / "run"),
        "data": {"synthetic": {"num_train": 16, "num_val": 4, "size": 32}, "batch_size": 2},
        "model": {"name": "unet", "options": {"base_channels": 4}},
        "train": {
            "epochs": None,
            "iterations": 400,
            "checkpoint_every": 1,
            "progress": False,
            "tensorboard": False,
            "threads": 1,
        },
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    last = tmp_path / "run" / "last.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "pixelseg.cli", "train", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert last.exists(), "training never wrote a checkpoint"
        time.sleep(0.5)  # let it get into the middle of further writes
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    state = load_checkpoint(last)["state"]
    assert 1 <= state["iteration"] < 400
    resumed = load_config(path, ["train.iterations=" + str(state["iteration"] + 2)])
    workflows.train(resumed, resume=True)
    final = load_checkpoint(last)["state"]
    assert final["iteration"] == state["iteration"] + 2 and final["finished"]
