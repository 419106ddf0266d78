"""The DDP throughput benchmark runs end to end on a few tiny steps (timings never asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_every_setting(tmp_path):
    out = tmp_path / "ddp.json"
    argv = ["--steps", "3", "--warmup", "1", "--size", "16", "--repeats", "1", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # A subprocess: the benchmark spawns its ranks, which must import it as a script.
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ddp.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    medians = json.loads(out.read_text())["medians"]
    assert set(medians) == {"1 proc x 1 thread", "1 proc x 2 threads", "2 procs x 1 thread"}
    assert all(math.isfinite(v) and v > 0 for v in medians.values())
    assert "2 procs x 1 thread" in done.stdout
