"""How predict names its outputs: never onto an input, never twice in one run.

The model is replaced by a stub (labels 0 at every pixel) so that these tests check only the
file handling; tests/test_cli.py runs predict with a trained checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelseg import workflows
from pixelseg.cli import main
from pixelseg.errors import InvalidInputError
from pixelseg.tasks import TASKS

SEMANTIC = TASKS["semantic"]


STUB_CHECKPOINT = {
    "task": "semantic",
    "classes": ["background", "thing"],
    "colors": [[0, 0, 0], [255, 0, 0]],
    "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
    "in_channels": 3,
}


def stub_predictor(payload, **options):
    """Logits that make every pixel class 0."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(images.shape[0], 2, *images.shape[2:])
        logits[:, 0] = 1.0
        return logits

    return predict


@pytest.fixture(autouse=True)
def stub_model(monkeypatch):
    plugin = dataclasses.replace(SEMANTIC, predictor_from_checkpoint=stub_predictor)
    monkeypatch.setattr(workflows, "load_checkpoint", lambda path: dict(STUB_CHECKPOINT))
    monkeypatch.setattr(workflows, "get_plugin", lambda name: plugin)


def save(path: Path, height: int, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 128, dtype=np.uint8)).save(path)
    return path


def size(path: Path) -> tuple[int, int]:
    width, height = Image.open(path).size
    return height, width


def predict(inputs: list[Path], out: Path) -> list[Path]:
    return workflows.predict_files("stub.pt", [str(p) for p in inputs], out)


def test_out_may_be_the_input_folder(tmp_path):
    x, y = save(tmp_path / "x.png", 10, 12), save(tmp_path / "y.jpg", 14, 16)
    before = {path: path.read_bytes() for path in (x, y)}
    written = predict([tmp_path], tmp_path)
    assert written == [tmp_path / "x_mask.png", tmp_path / "y_mask.png"]
    assert {path: path.read_bytes() for path in (x, y)} == before
    assert size(tmp_path / "x_mask.png") == (10, 12)
    assert size(tmp_path / "y_overlay.png") == (14, 16)


def test_rerun_into_the_input_folder_refuses_before_writing(tmp_path):
    save(tmp_path / "x.png", 10, 12)
    predict([tmp_path], tmp_path)
    outputs = {path: path.read_bytes() for path in tmp_path.glob("x_*.png")}
    # Now x_mask.png is an input too, and the mask of x.png would replace it.
    with pytest.raises(InvalidInputError, match=r"x_mask\.png.*would replace the input"):
        predict([tmp_path], tmp_path)
    assert {path: path.read_bytes() for path in tmp_path.glob("x_*.png")} == outputs
    assert not (tmp_path / "x_mask_mask.png").exists()


def test_same_stem_different_extension(tmp_path):
    inputs = [save(tmp_path / "in" / "x.jpg", 10, 12), save(tmp_path / "in" / "x.png", 14, 16)]
    out = tmp_path / "out"
    assert predict(inputs, out) == [out / "x_jpg_mask.png", out / "x_png_mask.png"]
    assert size(out / "x_jpg_mask.png") == (10, 12)
    assert size(out / "x_png_overlay.png") == (14, 16)
    assert len(list(out.iterdir())) == 4


def test_same_name_in_different_folders(tmp_path):
    a = save(tmp_path / "a" / "x.png", 10, 12)
    b = save(tmp_path / "b" / "deep" / "x.png", 14, 16)
    alone = save(tmp_path / "a" / "y.png", 6, 8)
    out = tmp_path / "out"
    written = predict([a, b, alone], out)
    assert written == [out / "a_x_png_mask.png", out / "b_deep_x_png_mask.png", out / "y_mask.png"]
    assert size(out / "a_x_png_mask.png") == (10, 12)
    assert size(out / "b_deep_x_png_mask.png") == (14, 16)
    assert len(list(out.iterdir())) == 6


def test_names_that_still_clash_are_refused(tmp_path):
    # x.png and x.jpg become x_png and x_jpg, which x_png.bmp's stem already is.
    inputs = [save(tmp_path / name, 4, 4) for name in ("x.png", "x.jpg", "x_png.bmp")]
    with pytest.raises(InvalidInputError, match=r"x_png\.bmp.*would both be written"):
        predict(inputs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_prints_how_outputs_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "<name>_mask.png" in help_text and "a_cat_png, b_cat_png" in help_text
    save(tmp_path / "x.png", 4, 4)
    argv = ["predict", "--checkpoint", "stub.pt", "--out", str(tmp_path / "o"), str(tmp_path)]
    assert main(argv) == 0
    assert f"wrote predictions for 1 inputs to {tmp_path / 'o'}" in capsys.readouterr().out
