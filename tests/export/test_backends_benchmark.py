"""benchmarks/backends.py runs end to end on a tiny model (timings never asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "backends.py"


def test_benchmark_compares_every_backend_and_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pixelseg_bench_backends", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "backends.json"
    argv = ["--models", "tiny", "--size", "48", "--repeats", "1", "--calibration", "2"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    rows = {row["backend"]: row for row in result["rows"]}
    assert set(rows) == {"eager", "ort_fp32", "ort_int8", "ort_int8_raw"}
    assert rows["eager"]["max_abs_logit_diff"] == 0.0
    assert rows["ort_fp32"]["max_abs_logit_diff"] < 1e-3  # the same graph, in fp32
    assert rows["ort_fp32"]["pixel_agreement"] > 0.99
    assert rows["ort_int8"]["size_mb"] < rows["ort_fp32"]["size_mb"]
    assert "vs eager" in capsys.readouterr().out
