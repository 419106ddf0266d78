"""benchmarks/serve_load.py runs end to end on the tiny exported model (timings never
asserted): both modes answer every request, the service's batch sizes are read back, and
the model-only ceiling is measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


@pytest.mark.slow
def test_load_benchmark_runs_both_modes_and_writes_json(served, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pixelseg_bench_serve_load", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "load.json"
    argv = ["--model", str(served["model"]), "--requests", "8", "--rounds", "1", "--batch", "4"]
    assert bench.main([*argv, "--concurrency", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["single"]["answered"] == 8 and result["micro"]["answered"] == 8
    assert result["single"]["errors"] == 0 and result["micro"]["errors"] == 0
    assert result["single"]["mean_batch"] == 1.0  # batch 1 never batches
    assert 1.0 <= result["micro"]["mean_batch"] <= 4.0
    assert set(result["model_only"]) == {"batch_1", "batch_4"}
    assert "micro-batching / batch 1 throughput" in capsys.readouterr().out
