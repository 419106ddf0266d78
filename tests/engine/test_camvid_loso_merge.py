"""The CamVid benchmark's leave-one-sequence-out table, merged from per-fold, per-side files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def camvid_script():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "pixelseg_bench_camvid_loso", BENCHMARKS / "camvid.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def write(path: Path, holdout: str, name: str, steps: int, held: float, val: float) -> Path:
    record = {
        "holdout": holdout,
        "minutes": 30.0,
        "threads": 2,
        "curves": [
            {
                "name": name,
                "steps": steps,
                "points": [
                    [15.0, {"miou_holdout": 0.1, "miou_val": 0.1}],
                    [30.0, {"miou_holdout": held, "miou_val": val}],
                ],
            }
        ],
    }
    path.write_text(json.dumps(record))
    return path


def test_merge_prints_each_fold_and_the_mean_ratio(tmp_path, capsys):
    bench = camvid_script()
    files = [
        write(tmp_path / "a.json", "0006R0", "pixelseg", 600, 0.52, 0.60),
        write(tmp_path / "b.json", "0006R0", "baseline", 900, 0.40, 0.55),
        write(tmp_path / "c.json", "0001TP", "pixelseg", 610, 0.48, 0.58),
        write(tmp_path / "d.json", "0001TP", "baseline", 905, 0.40, 0.50),
    ]
    bench.merge([str(f) for f in files])
    out = capsys.readouterr().out
    assert "0006R0" in out and "0001TP" in out
    assert "0.5200 [600]" in out and "0.4000 [900]" in out
    # mean held-out: (0.52 + 0.48) / 2 = 0.50 against 0.40: 1.25x
    assert "pixelseg 0.5000 / baseline 0.4000 = 1.25x (target >= 1.3x)" in out
