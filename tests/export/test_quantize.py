"""INT8 export: calibrated on the config's training images, scored on its validation set
(the fp32 score checked against PyTorch's), refused when it loses too much mIoU."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pixelseg.build import build_datasets, build_task
from pixelseg.checkpoints import load_checkpoint
from pixelseg.cli import main
from pixelseg.config import load_config
from pixelseg.errors import ExportError, InvalidInputError
from pixelseg.export import load_onnx_model, quantize
from pixelseg.inference import compose_predictor, model_from_checkpoint


def torch_miou(trained) -> float:
    """mIoU of the checkpoint in eager PyTorch on the config's validation set."""
    config = load_config(trained["config"])
    bundle = build_datasets(config)
    task = build_task(config, bundle, with_loss=False)
    predictor = compose_predictor(model_from_checkpoint(load_checkpoint(trained["checkpoint"])))
    return quantize.score_predictor(predictor, bundle.val, task)


def test_int8_export_reports_and_writes_a_runnable_model(trained, copied_trace, tmp_path, capsys):
    out = tmp_path / "int8.onnx"
    argv = ["export", "--checkpoint", str(trained["checkpoint"]), "--out", str(out)]
    argv += ["--quantize", "int8", "--calibration", str(trained["config"])]
    argv += ["--reduce-range", "off"]  # "on" has its own test below
    assert main([*argv, "--calibration-images", "8", "--max-miou-drop", "100"]) == 0
    printed = capsys.readouterr().out
    assert "miou on 8 validation images: fp32" in printed and "latency" in printed
    sidecar = json.loads(out.with_suffix(".json").read_text())
    report = sidecar["quantization"]
    # The fp32 ONNX score is PyTorch's (parity), so the drop is measured from the truth.
    assert report["fp32"] == pytest.approx(torch_miou(trained), abs=1e-3)
    assert report["drop_points"] == pytest.approx((report["fp32"] - report["int8"]) * 100)
    assert sidecar["precision"] == "int8" and report["calibration_images"] == 8
    graph = onnx.load(str(out)).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)
    assert out.stat().st_size < trained["model"].stat().st_size
    assert report["reduce_range"] is False and report["reduce_range_reason"] == "--reduce-range off"
    assert weight_extremes(out) == 127  # 8-bit per-channel weights reach the edge

    _, task, predictor = load_onnx_model(out, tta=True)
    logits = predictor(torch.randn(2, 3, 40, 52))
    assert logits.shape == (2, task.num_classes, 40, 52)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.json", "int8.onnx"]


def test_int8_model_that_loses_too_much_is_refused(trained, copied_trace, tmp_path, monkeypatch):
    """A quantiser that really damages the model (every weight scaled by -1 after
    quantisation): the measured drop exceeds the limit and nothing is written."""
    real = quantize.quantize_onnx

    def damaging(fp32, out, dataset, count, work, *options):
        real(fp32, out, dataset, count, work, *options)
        model = onnx.load(str(out))
        for init in model.graph.initializer:
            if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 4:
                values = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(-np.maximum(values, -127), init.name))
        onnx.save(model, str(out))

    monkeypatch.setattr(quantize, "quantize_onnx", damaging)
    config = load_config(trained["config"])
    with pytest.raises(ExportError) as error:
        quantize.quantize_checkpoint(
            trained["checkpoint"], tmp_path / "int8.onnx", config, calibration_images=4
        )
    message = str(error.value)
    assert "INT8 model of checkpoint" in message and "more than --max-miou-drop 1" in message
    assert "nothing was written" in message
    assert list(tmp_path.iterdir()) == []


def test_quantize_arguments_are_checked(trained, tmp_path, capsys):
    base = ["export", "--checkpoint", str(trained["checkpoint"]), "--out", str(tmp_path / "q.onnx")]
    assert main([*base, "--quantize", "int8"]) == 2
    assert "--quantize int8 needs --calibration CONFIG" in capsys.readouterr().err
    assert main([*base, "--calibration", str(trained["config"])]) == 2
    assert "--calibration is only used with --quantize int8" in capsys.readouterr().err
    argv = [*base, "--quantize", "int8", "--calibration", str(trained["config"])]
    assert main([*argv, "--max-miou-drop", "-1"]) == 2
    assert "--max-miou-drop must be >= 0 points, got -1.0" in capsys.readouterr().err
    assert main([*base, "--reduce-range", "on"]) == 2
    assert "--reduce-range is only used with --quantize int8" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def weight_extremes(path) -> int:
    """The largest |int8| of the quantised convolution weights in an ONNX file."""
    graph = onnx.load(str(path)).graph
    return max(
        int(np.abs(numpy_helper.to_array(init).astype(np.int16)).max())
        for init in graph.initializer
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 4
    )


def test_reduce_range_quantises_weights_to_7_bits_and_is_recorded(trained, copied_trace, tmp_path):
    out = tmp_path / "int8_on.onnx"
    report = quantize.quantize_checkpoint(
        trained["checkpoint"],
        out,
        load_config(trained["config"]),
        calibration_images=4,
        max_miou_drop=100.0,
        reduce_range="on",
    )
    sidecar = json.loads(out.with_suffix(".json").read_text())["quantization"]
    assert sidecar["reduce_range"] is True is report.reduce_range
    assert sidecar["reduce_range_reason"] == "--reduce-range on"
    assert "7-bit weights (--reduce-range on)" in report.lines()[0]
    # Per-channel symmetric weights reach the edge of the 7-bit range (127 with 8 bits: the
    # first test).
    assert weight_extremes(out) == 64


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ({"architecture": "x86_64", "avx2": True}, (True, "auto: x86 CPU without VNNI")),
        (
            {"architecture": "x86_64", "avx2": True, "avx512_vnni": True},
            (False, "auto: x86 CPU with avx512_vnni"),
        ),
        ({"architecture": "x86_64", "avx_vnni": True}, (False, "auto: x86 CPU with avx_vnni")),
        ({"architecture": "aarch64"}, (False, "auto: aarch64 CPU")),
        ({}, (False, "auto: unknown CPU")),
    ],
)
def test_auto_reduce_range_follows_the_cpu(monkeypatch, capabilities, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert quantize.resolve_reduce_range("auto") == expected
    assert quantize.resolve_reduce_range("on") == (True, "--reduce-range on")
    assert quantize.resolve_reduce_range("off") == (False, "--reduce-range off")


def test_unknown_reduce_range_is_refused():
    with pytest.raises(
        InvalidInputError, match="--reduce-range 'maybe' is not one of auto, on, off"
    ):
        quantize.resolve_reduce_range("maybe")
