"""The COCO evaluation benchmark runs end to end on tiny data (timings are never asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "coco_eval.py"


def test_benchmark_runs_and_stats_agree(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pycocotools")
    spec = importlib.util.spec_from_file_location("pixelseg_bench_coco_eval", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tiny = ["--images", "6", "--size", "64", "--repeats", "1"]
    assert bench.main(tiny) == 0
    out = capsys.readouterr().out
    assert "EQUAL to pycocotools" in out and "pycocotools COCOeval" in out
    assert bench.main([*tiny, "--json", "--iou-types", "bbox"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["iou_types"]["bbox"]["pixelseg coco_evaluate"]["max_abs_diff"] <= 1e-9
