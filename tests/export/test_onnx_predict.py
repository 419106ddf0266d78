"""``pixelseg predict --model``: the onnxruntime backend agrees with the PyTorch backend on
at least 99.9% of pixels, whole images, sliding window and flip TTA alike."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixelseg import workflows
from pixelseg.cli import main

OPTIONS = {
    "whole": {},
    "window+tta": {"window": (32, 32), "overlap": 0.5, "tta": True},
    "tta": {"tta": True},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_onnx_masks_agree_with_torch(trained, tmp_path, options):
    inputs = [str(trained["images"])]
    torch_masks = workflows.predict_files(trained["checkpoint"], inputs, tmp_path / "pt", **options)
    onnx_masks = workflows.predict_files(trained["model"], inputs, tmp_path / "onnx", **options)
    assert [p.name for p in torch_masks] == [p.name for p in onnx_masks]
    same = total = 0
    for reference, candidate in zip(torch_masks, onnx_masks, strict=True):
        expected, got = np.asarray(Image.open(reference)), np.asarray(Image.open(candidate))
        assert expected.shape == got.shape
        same += int((expected == got).sum())
        total += expected.size
    assert len(np.unique(expected)) > 1  # the trained model predicts shapes, not one class
    assert same / total >= 0.999


def test_cli_predict_with_the_onnx_model(trained, tmp_path, capsys):
    out = tmp_path / "pred"
    argv = ["predict", "--model", str(trained["model"]), "--out", str(out), "--tta"]
    assert main([*argv, str(trained["images"])]) == 0
    assert "wrote predictions for 4 inputs" in capsys.readouterr().out
    assert (out / "noise_mask.png").is_file() and (out / "noise_overlay.png").is_file()


def test_onnx_model_errors_are_one_line(trained, tmp_path, capsys):
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(trained["model"].read_bytes())
    image = trained["images"] / "noise.png"
    out = str(tmp_path / "p")
    cases = [
        (["--model", str(lonely)], f"ONNX model '{lonely}' has no sidecar"),
        (["--checkpoint", str(trained["model"])], "is an ONNX model; pass it with --model"),
        (["--model", str(trained["model"]), "--device", "cuda"], "runs in onnxruntime on the CPU"),
    ]
    for args, message in cases:
        assert main(["predict", *args, "--out", out, str(image)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err


def test_image_below_the_exported_minimum_is_refused(trained, tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((8, 40, 3), dtype=np.uint8)).save(tiny)
    argv = ["predict", "--model", str(trained["model"]), "--out", str(tmp_path / "p"), str(tiny)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "input of 8x40 pixels is below the ONNX model's minimum 9x9" in err
