"""The metrics benchmark runs end to end on a tiny batch (timings are never asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "metrics.py"


def test_benchmark_runs_and_mious_agree(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchmetrics")
    spec = importlib.util.spec_from_file_location("pixelseg_bench_metrics", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rc = bench.main(["--updates", "3", "--pool", "2", "--batch-shape", "2", "32", "32"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "EQUAL" in out and "torchmetrics MulticlassJaccardIndex" in out
    # The default torchmetrics and its validate_args=False form are both timed and reported.
    assert "torchmetrics, validate_args=False" in out
    assert "over torchmetrics with validate_args=False" in out
