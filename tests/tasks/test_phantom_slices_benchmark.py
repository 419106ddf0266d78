"""The 2D-on-slices against 3D benchmark runs end to end on tiny phantoms (its numbers are
never asserted: two steps learn nothing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "phantom_slices.py"

pytestmark = pytest.mark.slow


def test_phantom_slices_benchmark_trains_and_scores_both_models(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pixelseg_bench_phantom_slices", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tiny = ["volumetric.phantom.num_train=2", "volumetric.phantom.num_val=1",
            "volumetric.phantom.shape=[40,40,24]", "volumetric.phantom.spacing=[3.6,3.6,5.0]"]  # fmt: skip
    out_json = tmp_path / "rows.json"
    argv = ["--iterations", "2", "--out", str(tmp_path / "runs"), "--json", str(out_json),
            "--override", *tiny]  # fmt: skip
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "budget: 2 steps each, 1 thread(s)" in out
    assert "| phantom_unet2d.yaml | unet |" in out and "| phantom_unet3d.yaml | unet3d |" in out
    rows = json.loads(out_json.read_text())
    assert [row["steps"] for row in rows] == [2, 2]
    assert all(row["cases"] == 1 and 0.0 <= row["dice"] <= 1.0 for row in rows)
    assert (tmp_path / "runs" / "phantom_unet2d" / "eval" / "metrics.json").is_file()
