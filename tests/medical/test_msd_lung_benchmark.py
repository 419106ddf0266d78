"""benchmarks/msd_lung.py: its Dice definition by hand, its fixed stratified split, and both
sides run end to end for a few steps on a tiny h5 file written here (no ../shared/data)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "pixelseg_bench_msd", BENCHMARKS / "msd_lung.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        while str(BENCHMARKS) in sys.path:  # the script adds its folder too
            sys.path.remove(str(BENCHMARKS))


def _masks(*rows: list[int]) -> torch.Tensor:
    """Patches of 1 x 4 pixels from 0/1 rows: ``[N, 1, 4]``."""
    return torch.tensor(rows, dtype=torch.uint8).unsqueeze(1)


def test_dice_per_patch_with_the_empty_cases_by_hand(bench):
    pred = _masks([0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1])
    truth = _masks([0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1])
    scores = bench.dice_scores(pred, truth)
    # empty/empty 1, empty truth with a prediction 0, missed tumour 0, 2*1/(2+1), perfect 1
    assert scores["per_patch"] == pytest.approx([1.0, 0.0, 0.0, 2 / 3, 1.0])
    assert scores["dice"] == pytest.approx((1 + 0 + 0 + 2 / 3 + 1) / 5)
    assert scores["dice_tumour"] == pytest.approx((0 + 2 / 3 + 1) / 3)  # truth non-empty only
    # pooled: |P∩G| = 0 + 0 + 0 + 1 + 4 = 5, |P| = 0 + 1 + 0 + 2 + 4 = 7, |G| = 0 + 0 + 1 + 1 + 4 = 6
    assert scores["dice_global"] == pytest.approx(2 * 5 / (7 + 6))


def test_dice_without_any_tumour_patch_has_no_tumour_mean(bench):
    scores = bench.dice_scores(_masks([0, 0, 0, 0]), _masks([0, 0, 0, 0]))
    assert scores["dice"] == 1.0 and scores["dice_global"] == 1.0
    assert np.isnan(scores["dice_tumour"])


def test_split_is_fixed_disjoint_and_stratified(bench):
    labels = np.zeros((130, 4, 4), np.uint8)
    labels[19:, 0, 0] = 1  # 19 tumour-free patches, as in the real file
    train, test = bench.split_indices(labels, "test")
    assert (train, test) == bench.split_indices(labels, "test")  # seeded, not the run's seed
    assert len(test) == 30 and len(train) == 100 and not set(train) & set(test)
    assert sum(i < 19 for i in test) in (4, 5)  # 19 * 30 / 130 = 4.4 tumour-free
    tune_train, tune = bench.split_indices(labels, "tune")
    assert len(tune) == 20 and sorted(tune_train + tune) == train  # never a test patch
    assert sum(i < 19 for i in tune) in (3, 4)  # 15 or 14 of the 100, times 20 / 100
    with pytest.raises(ValueError, match="choose test or tune"):
        bench.split_indices(labels, "val")


def write_h5(path: Path, count: int = 50, empty: int = 10) -> Path:
    """``count`` noisy 48x48 patches in [0, 1], a bright disc of tumour in all but ``empty``."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    images = rng.uniform(0.0, 0.4, size=(count, 1, 48, 48)).astype(np.float32)
    labels = np.zeros((count, 1, 48, 48), np.float64)
    for i in range(empty, count):
        cy, cx = rng.integers(12, 36, size=2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(4, 9)) ** 2
        labels[i, 0][disc] = 1.0
        images[i, 0][disc] += 0.5
    with h5py.File(path, "w") as f:
        f["images"], f["labels"] = images, labels
    return path


@pytest.mark.slow
def test_both_sides_run_write_json_and_merge(bench, tmp_path, capsys):
    pytest.importorskip("segmentation_models_pytorch")
    data = write_h5(tmp_path / "patches.h5")
    common = ["--data", str(data), "--out", str(tmp_path / "runs"), "--threads", "1"]
    small = "model.options.base_channels=4"
    records = {}
    for side, length in (("pixelseg", ["--minutes", "0.02"]), ("baseline", ["--minutes", "0.02"]),
                         ("pixelseg", ["--steps", "2"]), ("baseline", ["--steps", "3"])):  # fmt: skip
        path = tmp_path / f"{side}_{length[0][2:]}.json"
        overrides = [small] if side == "pixelseg" else []  # a tiny U-Net, for speed
        bench.main(["--side", side, *length, *common, "--json", str(path), *overrides])
        record = json.loads(path.read_text())
        assert record["side"] == side and record["seed"] == 0
        assert record["scored_patches"] == 30 and record["training_patches"] == 20
        assert record["tumour_free_patches"] == 6  # 10 of 50, in proportion
        assert len(record["per_patch"]) == 30 and record["steps"] >= 1
        assert record["dice"] == pytest.approx(np.mean(record["per_patch"]))
        assert 0.0 <= record["dice_global"] <= 1.0 and record["machine"]["threads"] == 1
        records[(side, length[0])] = (path, record)
    assert records[("pixelseg", "--steps")][1]["steps"] == 2
    assert records[("baseline", "--steps")][1]["steps"] == 3
    assert records[("pixelseg", "--minutes")][1]["training_minutes"] >= 0.02
    assert records[("pixelseg", "--minutes")][1]["overrides"] == [small]
    assert (tmp_path / "runs" / "pixelseg_test_0" / "last.pt").is_file()
    capsys.readouterr()
    bench.main(["--merge", *(str(records[(s, "--minutes")][0]) for s in ("pixelseg", "baseline"))])
    out = capsys.readouterr().out
    assert "30 scored patches (6 tumour-free), 20 training patches, 0.02 training minutes" in out
    assert "pixelseg  0" in out and "baseline  0" in out
    assert "target >= 1.2x" in out and "threads 1" in out


def _record(side: str, seed: int, dice: float, steps: int) -> dict:
    return {"side": side, "seed": seed, "split": "test", "minutes": 10.0, "step_budget": None,
            "steps": steps, "scored_patches": 30, "tumour_free_patches": 4,
            "training_patches": 100, "dice": dice, "dice_tumour": dice - 0.1,
            "dice_global": dice + 0.1,
            "machine": {"platform": "Linux", "cpus": 2, "threads": 2, "load_average_before": 0.5 + seed}}  # fmt: skip


def test_merge_gives_mean_and_spread_over_seeds_and_the_ratio(bench, tmp_path):
    paths = []
    runs = [("pixelseg", 0.6, 900), ("pixelseg", 0.7, 910), ("pixelseg", 0.8, 920),
            ("baseline", 0.5, 300), ("baseline", 0.5, 310), ("baseline", 0.6, 320)]  # fmt: skip
    for i, (side, dice, steps) in enumerate(runs):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(_record(side, i % 3, dice, steps)))
        paths.append(str(path))
    lines = bench.merge(paths)
    text = "\n".join(lines)
    assert "4 tumour-free" in lines[0] and "10 training minutes" in lines[0]
    row = next(line for line in lines if line.startswith("pixelseg"))
    assert "0.7000 +- 0.1000" in row and "0.6000 +- 0.1000" in row and "900, 910, 920" in row
    row = next(line for line in lines if line.startswith("baseline"))
    assert "0.5333 +- 0.0577" in row
    # 0.7 / 0.5333 = 1.3125
    assert "pixelseg 0.7000 / baseline 0.5333 = 1.31x (target >= 1.2x: met)" in text
    assert "threads 2; 1-minute load average at the runs' starts 0.5..2.5" in text


def test_merge_refuses_runs_of_different_budgets(bench, tmp_path):
    short = {**_record("baseline", 0, 0.5, 30), "minutes": 1.0}
    paths = []
    for name, record in (("a", _record("pixelseg", 0, 0.6, 90)), ("b", short)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
        paths.append(str(tmp_path / f"{name}.json"))
    with pytest.raises(ValueError, match="differ in split or budget"):
        bench.merge(paths)
