"""The membrane benchmark's scoring and target report, without its data or its training."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _membrane_script():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "pixelseg_bench_membrane", BENCHMARKS / "membrane.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        while str(BENCHMARKS) in sys.path:  # the script adds its folder too
            sys.path.remove(str(BENCHMARKS))


def _final(isbi: float, error: float) -> dict:
    return {
        "isbi_pixel_error": isbi,
        "isbi_pixel_error_tta": isbi - 0.001,
        "pixel_error": error,
        "pixel_error_tta": error - 0.001,
        "membrane_dice": 0.81,
        "membrane_dice_tta": 0.82,
    }


def test_target_line_is_the_isbi_pixel_error_with_one_minus_accuracy_beside_the_plain_loops():
    bench = _membrane_script()
    ours, plain = bench.Curve("pixelseg"), bench.Curve("baseline")
    ours.points.append((10.0, _final(0.0482, 0.0765)))
    plain.points.append((10.0, _final(0.0650, 0.0796)))
    lines = bench.summary_lines([ours, plain], 10.0)
    assert bench.ISBI_TARGET == 0.061
    assert lines[0].startswith("pixelseg: ISBI pixel error (1 - max F-score of the cell class)")
    assert "0.0482" in lines[0] and "(target <= 0.061: met)" in lines[0]
    assert "1 - accuracy 0.0765 (plain loop 0.0796)" in lines[0]
    assert lines[1].startswith("baseline: ISBI pixel error") and "MISSED" in lines[1]
    assert "plain loop" not in lines[1]
    # pixelseg alone (--only pixelseg): no plain-loop figure to print beside its own.
    (alone,) = bench.summary_lines([ours], 10.0)
    assert "1 - accuracy 0.0765, with flip TTA" in alone


def test_scores_whole_images_with_both_pixel_errors():
    bench = _membrane_script()
    mask = torch.ones(64, 64, dtype=torch.long)
    mask[:, :8] = 0  # a membrane strip; the rest is cell interior (class 1)
    image = torch.zeros(1, 64, 64)
    seen = []

    def predict(batch: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(batch.shape))
        logits = torch.zeros(batch.shape[0], 2, *batch.shape[-2:])
        logits[:, 1] = 1.0  # "cell" everywhere
        return logits

    metrics = bench.score_both(predict, [(image, mask)])
    assert seen[0] == (1, 1, 64, 64)  # the whole image, not tiles
    assert abs(metrics["pixel_error"] - 8 / 64) < 1e-6
    # All-cell at every threshold: precision 56/64, recall 1, F = 112/120.
    assert abs(metrics["isbi_pixel_error"] - (1 - 112 / 120)) < 1e-6
    assert abs(metrics["isbi_pixel_error_tta"] - metrics["isbi_pixel_error"]) < 1e-6
