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


def test_cross_validation_merge_reports_mean_spread_and_the_target(tmp_path):
    import json

    bench = _membrane_script()
    paths = []
    for fold, (ours, base) in enumerate([(0.070, 0.080), (0.072, 0.081), (0.074, 0.079)]):
        for name, error in (("pixelseg", ours), ("baseline", base)):
            point = {"isbi_pixel_error": error - 0.03, "pixel_error": error}
            record = {"fold": fold, "folds": 3, "minutes": 10.0, "curves": [{"name": name, "steps": 100, "points": [[10.0, point]]}]}  # fmt: skip
            path = tmp_path / f"{fold}_{name}.json"
            path.write_text(json.dumps(record))
            paths.append(str(path))
    lines = bench.merge(paths)
    text = "\n".join(lines)
    assert "pixelseg  pixel_error       0.0720 +- 0.0020 (0.0700..0.0740, folds [0, 1, 2])" in text
    # lower by 0.0080 against a spread of 0.0020 (pixelseg's std; the baseline's is 0.0010)
    assert "lower by 0.0080 against a spread of 0.0020 (target: lower by more: met)" in text
    # Two of the three folds (the baseline's fold 2 missing): a spread, but no verdict.
    partial = "\n".join(bench.merge([p for p in paths if not p.endswith("2_baseline.json")]))
    assert "(target: lower by more: no verdict: both sides have folds [0, 1] of 3)" in partial


def test_folds_hold_each_slice_out_once(tmp_path):
    import numpy as np
    from PIL import Image

    for index in range(10):
        for sub in ("image", "label"):
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / sub / f"{index}.png")
    bench = _membrane_script()
    held = []
    for fold in range(5):
        args = type("Args", (), {"data": str(tmp_path), "fold": fold, "folds": 5})()
        train, val = bench.fold_stems(args)
        assert not set(train) & set(val) and len(train) + len(val) == 10
        held += val
    assert sorted(held) == sorted(str(i) for i in range(10))
