"""The CLI end to end on tiny synthetic data, plus its help and error behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pixelseg import workflows
from pixelseg.cli import EXAMPLES, main
from pixelseg.config import load_config
from pixelseg.workflows import DEMO_CONFIGS

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_has_help_with_example(capsys):
    for command in EXAMPLES:
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "example: pixelseg" in out, command


def test_models_lists_names(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("fcn8s", "unet", "unetpp", "deeplabv3plus", "resnet50"):
        assert name in out
    volumetric = out.split("volumetric models")[1]
    assert "unet3d" in volumetric and "deep_supervision" in volumetric
    assert "context_slices" in volumetric


def test_config_error_is_one_line_with_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"epoch": 2}}))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'epochs'" in err[0]


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    code = main(["predict", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path), "x"])
    assert code == 2
    assert "none.pt" in capsys.readouterr().err


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run")}))
    return path


def test_overrides_may_follow_options(tmp_path, monkeypatch):
    seen = {}

    def fake_eval(config, checkpoint, out):
        seen.update(config=config, checkpoint=checkpoint, out=out)
        return {"miou": 0.5, "pixel_accuracy": 0.5}

    def fake_train(config, out=None, resume=None):
        seen.update(config=config, out=out, resume=resume)
        return {}, Path(out)

    monkeypatch.setattr(workflows, "eval_checkpoint", fake_eval)
    monkeypatch.setattr(workflows, "train", fake_train)
    path = str(write_config(tmp_path))
    assert main(["eval", path, "--checkpoint", "x.pt", "data.batch_size=3", "seed=7"]) == 0
    assert seen["config"].data.batch_size == 3 and seen["config"].seed == 7
    assert seen["checkpoint"] == "x.pt"
    out = str(tmp_path / "o")
    assert main(["train", path, "seed=5", "--out", out, "data.batch_size=2", "--resume"]) == 0
    assert seen["config"].seed == 5 and seen["config"].data.batch_size == 2
    assert seen["out"] == out and seen["resume"] is True


def test_bare_resume_before_an_override_is_explained(tmp_path, capsys):
    path = str(write_config(tmp_path))
    assert main(["train", path, "--resume", "train.epochs=8"]) == 2
    err = capsys.readouterr().err
    assert "--resume took 'train.epochs=8' as its checkpoint" in err


def test_eval_report_folder_is_what_the_help_says(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_eval(config, checkpoint, out):
        seen["out"] = out
        return {"miou": 0.5, "pixel_accuracy": 0.5}

    monkeypatch.setattr(workflows, "eval_checkpoint", fake_eval)
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "(default: <output_dir>/eval" in " ".join(capsys.readouterr().out.split())
    other = tmp_path / "elsewhere"
    path = str(write_config(tmp_path))
    assert main(["eval", path, "--checkpoint", "ckpts/best.pt", f"output_dir={other}"]) == 0
    assert seen["out"] == f"{other}/eval"
    assert f"report: {other}/eval/metrics.json" in capsys.readouterr().out


def test_shipped_configs_validate_and_demo_copy_matches():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)
    for name in DEMO_CONFIGS.values():  # the demos' embedded copies
        packaged = ROOT / "src" / "pixelseg" / "resources" / name
        assert packaged.read_text() == (ROOT / "configs" / name).read_text()


@pytest.mark.slow
def test_train_eval_predict_round_trip(tmp_path, capsys):
    config = {
        "output_dir": str(tmp_path / "run"),
        "data": {"synthetic": {"num_train": 8, "num_val": 4, "size": 32}, "batch_size": 4},
        "model": {"name": "unet", "options": {"base_channels": 4}},
        "train": {"epochs": 1, "progress": False, "tensorboard": False},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "train.optimizer.lr=0.01"]) == 0
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "config.yaml", "log.csv"):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["optimizer"]["lr"] == 0.01

    assert (
        main(
            ["eval", str(path), "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "ev")]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("miou", "pixel_accuracy", "mean_pixel_accuracy", "fwiou", "mdice"):
        assert key in metrics
    assert set(metrics["iou"]) == {"background", "circle", "square", "triangle"}
    for name in ("per_image.csv", "class_iou.png", "confusion_matrix.png", "worst_cases.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 0, name
    # Without --checkpoint, eval scores the run's final weights into <output_dir>/eval.
    capsys.readouterr()
    assert main(["eval", str(path)]) == 0
    assert f"report: {run}/eval/metrics.json" in capsys.readouterr().out
    assert (run / "eval" / "metrics.json").is_file()

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(images / "big.png")
    Image.fromarray(rng.integers(0, 255, (20, 25, 3), dtype=np.uint8)).save(images / "small.jpg")
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(run / "best.pt"),
                "--out",
                str(out),
                "--tta",
                str(images),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "big_mask.png",
        "big_overlay.png",
        "small_mask.png",
        "small_overlay.png",
    ]
    big = Image.open(out / "big_mask.png")
    assert big.mode == "P" and big.size == (90, 70)
    assert np.asarray(big).max() < 4
    assert Image.open(out / "small_overlay.png").size == (25, 20)
