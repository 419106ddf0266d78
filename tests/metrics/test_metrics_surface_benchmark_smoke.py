"""The surface-metrics benchmark runs end to end on tiny volumes (timings are never asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "surface.py"


def test_surface_benchmark_runs_and_agrees_with_monai(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("monai")
    pytest.importorskip("scipy")
    spec = importlib.util.spec_from_file_location("pixelseg_bench_surface", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out_json = tmp_path / "surface.json"
    rc = bench.main(["--pairs", "2", "--size", "20", "--repeats", "1", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "EQUAL" in out and "MONAI hd95 + assd + nsd" in out
    results = json.loads(out_json.read_text())
    assert results["equal"] is True and len(results["values"]["monai"]["hd95"]) == 2
