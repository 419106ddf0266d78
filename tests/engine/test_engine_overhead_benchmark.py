"""The engine-overhead benchmark runs end to end on a few steps (timings never asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_overhead.py"


def test_benchmark_runs_both_sides_and_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pixelseg_bench_engine_overhead", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "overhead.json"
    argv = ["--models", "small", "--repeats", "1", "--steps", "3", "--no-warmup"]
    argv += ["--json", str(out)]
    assert bench.main(argv) == 0
    (result,) = json.loads(out.read_text())
    assert result["model"] == "small" and len(result["rounds"]) == 1
    assert result["pixelseg_ms"] > 0 and result["plain_ms"] > 0
    assert "overhead ms" in capsys.readouterr().out
