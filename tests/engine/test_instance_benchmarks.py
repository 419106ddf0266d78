"""The instance benchmarks' scoring and reports: perfect detections score AP 1, and the
Penn-Fudan table merges the two sides run as separate commands."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def script(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            f"pixelseg_bench_{name}", BENCHMARKS / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        while str(BENCHMARKS) in sys.path:
            sys.path.remove(str(BENCHMARKS))


def test_perfect_detections_score_one_and_none_score_zero():
    from pixelseg.data import SyntheticInstances

    bench = script("shapes_instance")
    samples = [SyntheticInstances(3, size=48, seed=1)[i] for i in range(3)]
    by_image = {id(s["image"]): s for s in samples}

    def perfect(images):
        out = []
        for image in images:
            s = by_image[id(image)]
            count = len(s["labels"])
            out.append({"boxes": s["boxes"], "labels": s["labels"], "scores": s["boxes"].new_ones(count),
                        "masks": s["masks"].float()[:, None]})  # fmt: skip
        return out

    assert bench.score(perfect, samples)["mask_ap"] == pytest.approx(1.0)

    def nothing(images):
        empty = samples[0]["boxes"][:0]
        return [{"boxes": empty, "labels": samples[0]["labels"][:0], "scores": empty[:, 0],
                 "masks": samples[0]["masks"][:0].float()[:, None]} for _ in images]  # fmt: skip

    assert bench.score(nothing, samples)["mask_ap"] == 0.0


def test_pennfudan_sides_merge_into_one_report(tmp_path, capsys):
    bench = script("pennfudan")
    for name, ap, ap50 in (("pixelseg", 0.30, 0.60), ("baseline", 0.04, 0.10)):
        points = [[m, {"mask_ap": ap * m / 30, "mask_ap50": ap50 * m / 30, "box_ap": 0.0,
                       "box_ap50": 0.0}] for m in (5.0, 10.0, 30.0)]  # fmt: skip
        record = {"minutes": 30.0, "eval_every": 5.0, "threads": 2,
                  "curves": [{"name": name, "steps": 100, "points": points}]}  # fmt: skip
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    bench.merge([str(tmp_path / "pixelseg.json"), str(tmp_path / "baseline.json")])
    out = capsys.readouterr().out
    assert "pixelseg mask AP50 at 30 min: 0.6000 (target >= 0.35)" in out
    assert "= 7.50x (target >= 1.5x; applies)" in out
