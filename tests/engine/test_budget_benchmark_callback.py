"""The wall-clock benchmarks' curve callback: its scoring time is left out of the budget."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest
import torch

from pixelseg import workflows
from pixelseg.config import parse_config

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.slow


def _camvid_script():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "pixelseg_bench_camvid", BENCHMARKS / "camvid.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        while str(BENCHMARKS) in sys.path:  # the script adds its folder too
            sys.path.remove(str(BENCHMARKS))


def test_curve_callback_scores_on_the_trainers_clock_and_excludes_its_own_time(tmp_path):
    bench = _camvid_script()
    config = parse_config(
        {
            "output_dir": str(tmp_path / "run"),
            "data": {"synthetic": {"num_train": 8, "num_val": 2, "size": 32}, "batch_size": 4},
            "model": {"name": "unet", "options": {"base_channels": 4}},
            "train": {"epochs": 3, "progress": False, "tensorboard": False, "val_every": 100},
        }
    )
    calls, seen = [], []

    def slow_score(predict):
        assert not seen[0].inference_model.training
        # CPU in, float32 CPU logits out, wherever the model runs.
        logits = predict(torch.zeros(1, 3, 32, 32))
        assert logits.device.type == "cpu" and logits.dtype == torch.float32
        calls.append(time.perf_counter())
        time.sleep(0.1)
        return {"miou": 0.5}

    curve = bench.Curve("pixelseg")
    callback = bench.CurveCallback(curve, every=1e-9, score_fn=slow_score)

    class Spy:
        def on_train_start(self, trainer):
            seen.append(trainer)

    tick = time.perf_counter()
    workflows.train(config, callbacks=[Spy(), callback])
    wall = time.perf_counter() - tick
    trainer = seen[0]
    # The mark is tiny: scored after each of the 6 steps, and not twice after the last one.
    assert len(curve.points) == len(calls) == 6
    assert all(metrics == {"miou": 0.5} for _, metrics in curve.points)
    minutes = [m for m, _ in curve.points]
    assert minutes == sorted(minutes)
    assert trainer.excluded_seconds >= 0.6
    assert minutes[-1] * 60 < wall - 0.6


def test_run_sides_honours_only_and_scores_at_every_mark_and_the_end():
    bench = _camvid_script()
    budget = sys.modules["budget"]
    parser = budget.budget_parser("doc", minutes=7.0, eval_every=3.0, data="d", config="c", out="o")
    called = []

    def side(name):
        return lambda: called.append(name) or budget.Curve(name)

    args = parser.parse_args(["--only", "baseline"])
    curves, marks = budget.run_sides(args, side("pixelseg"), side("baseline"))
    assert called == ["baseline"] and [c.name for c in curves] == ["baseline"]
    assert marks == [3.0, 6.0, 7.0]
    args = parser.parse_args(["--minutes", "4", "--eval-every", "2", "a=1"])
    curves, marks = budget.run_sides(args, side("pixelseg"), side("baseline"))
    assert [c.name for c in curves] == ["pixelseg", "baseline"] and marks == [2.0, 4.0]
    assert args.overrides == ["a=1"] and (args.data, args.threads) == ("d", 2)
    # camvid.py builds its command line with this shared parser, not a copy of its own.
    assert bench.budget_parser is budget.budget_parser
