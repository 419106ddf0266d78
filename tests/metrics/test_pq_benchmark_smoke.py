"""The PQ benchmark runs end to end on tiny maps and agrees with torchmetrics (timings are
never asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pq.py"


def test_pq_benchmark_runs_and_agrees_with_torchmetrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torchmetrics")
    spec = importlib.util.spec_from_file_location("pixelseg_bench_pq", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rc = bench.main(["--pairs", "3", "--size", "64", "--json", str(tmp_path / "pq.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "EQUAL" in out and "torchmetrics" in out
    written = json.loads((tmp_path / "pq.json").read_text())
    assert written["equal"] is True and written["pairs"] == 3
    assert 0.0 < written["pixelseg"]["All"]["pq"] < 1.0  # the perturbations cost something
