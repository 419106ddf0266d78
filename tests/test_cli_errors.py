"""Every failure of the CLI is one line on stderr and exit status 2 (a traceback only with
--debug), whatever raised it: our errors, the OS, torch, or a checkpoint missing keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pixelseg import models, workflows
from pixelseg.checkpoints import FORMAT_VERSION
from pixelseg.cli import main


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    config = {
        "output_dir": str(tmp_path / "run"),
        "data": {"synthetic": {"num_train": 4, "num_val": 2, "size": 32}, "batch_size": 2},
        "model": {"name": "unet", "options": {"base_channels": 4}},
        "train": {"epochs": 1, "progress": False, "tensorboard": False},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "images" / "x.png"
    path.parent.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(path)
    return path


def test_runtime_error_is_one_typed_line(config_path, monkeypatch, capsys):
    message = "stack expects each tensor to be equal size, but got [3, 32, 32] at entry 0"

    def collate_fails(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(workflows, "train", collate_fails)
    assert main(["train", str(config_path)]) == 2
    line = one_error_line(capsys)
    assert f"RuntimeError: {message}" in line and "--debug" in line


def test_debug_shows_the_traceback(config_path, monkeypatch):
    def fails(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(workflows, "train", fails)
    # --debug before the command used to be reset by the command's own default.
    with pytest.raises(ValueError, match="boom"):
        main(["--debug", "train", str(config_path)])
    with pytest.raises(ValueError, match="boom"):
        main(["train", str(config_path), "--debug"])


def test_multi_line_message_is_joined(config_path, monkeypatch, capsys):
    def fails(*args, **kwargs):
        raise ValueError("first\n  second\n")

    monkeypatch.setattr(workflows, "train", fails)
    assert main(["train", str(config_path)]) == 2
    assert one_error_line(capsys) == "error: first; second"


def test_permission_error_is_one_line(config_path, tmp_path, monkeypatch, capsys):
    # Tests run as root, which may write anywhere: simulate a read-only --out instead.
    out = tmp_path / "readonly" / "run"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if out in (self, *self.parents):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["train", str(config_path), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "Permission denied" in line and "readonly" in line


@pytest.mark.parametrize("command", ["train", "eval", "predict", "demo"])
def test_out_that_is_a_file_is_refused_early(
    command, config_path, image_path, tmp_path, monkeypatch, capsys
):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the job started")

    for job in ("train", "eval_checkpoint", "predict_files", "demo"):
        monkeypatch.setattr(workflows, job, must_not_run)
    out = tmp_path / "taken.txt"
    out.write_text("not a folder")
    argv = {
        "train": ["train", str(config_path)],
        "eval": ["eval", str(config_path), "--checkpoint", str(tmp_path / "best.pt")],
        "predict": ["predict", "--checkpoint", str(tmp_path / "best.pt"), str(image_path)],
        "demo": ["demo"],
    }[command]
    assert main([*argv, "--out", str(out)]) == 2
    assert one_error_line(capsys) == f"error: --out '{out}' is a file, not a folder"


def test_eval_default_report_folder_that_is_a_file(config_path, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "eval").write_text("not a folder")
    assert main(["eval", str(config_path), "--checkpoint", str(tmp_path / "best.pt")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)


def test_cuda_index_beyond_the_devices_present(image_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    argv = ["predict", "--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "p")]
    assert main([*argv, "--device", "cuda:3", str(image_path)]) == 2
    line = one_error_line(capsys)
    assert "'cuda:3'" in line and "1 CUDA device" in line and "cuda:0" in line


def checkpoint_without(tmp_path: Path, *missing: str) -> Path:
    model = models.create("unet", 2, in_channels=3, base_channels=4)
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "model_spec": {
            "name": "unet",
            "num_classes": 2,
            "in_channels": 3,
            "encoder": None,
            "options": {"base_channels": 4},
        },
        "classes": ["background", "thing"],
        "colors": [[0, 0, 0], [255, 0, 0]],
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "in_channels": 3,
        "input_size": [32, 32],
        "task": "semantic",
    }
    for key in missing:
        del payload[key]
    path = tmp_path / "incomplete.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("missing", ["classes", "normalization"])
def test_checkpoint_missing_a_key_is_one_line(missing, image_path, tmp_path, capsys):
    checkpoint = checkpoint_without(tmp_path, missing)
    argv = ["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p")]
    assert main([*argv, str(image_path)]) == 2
    line = one_error_line(capsys)
    assert "incomplete.pt" in line and missing in line


def test_score_threshold_is_refused_for_a_semantic_model(tmp_path, capsys):
    from pixelseg.config import parse_config

    config = parse_config(
        {
            "output_dir": str(tmp_path / "run"),
            "data": {"synthetic": {"num_train": 2, "num_val": 2, "size": 32}, "batch_size": 2},
            "model": {"name": "unet", "options": {"base_channels": 4}},
            "train": {"iterations": 1, "epochs": None, "progress": False, "tensorboard": False},
        }
    )
    _, run = workflows.train(config)
    image = tmp_path / "im.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    argv = ["predict", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "p")]
    assert main([*argv, "--score-threshold", "0.3", str(image)]) == 2
    assert "--score-threshold applies to instance models" in one_error_line(capsys)
