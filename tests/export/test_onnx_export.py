"""``pixelseg export``: an ONNX model with dynamic axes and a sidecar, verified against
PyTorch, and nothing left behind when the check or the input fails."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from pixelseg.checkpoints import load_checkpoint
from pixelseg.cli import main
from pixelseg.errors import CheckpointError
from pixelseg.export import OPSET, export_checkpoint, onnx_session, read_sidecar
from pixelseg.inference import model_from_checkpoint

from .conftest import untrained_checkpoint


def test_export_writes_a_dynamic_model_and_its_sidecar(trained):
    model = onnx.load(str(trained["model"]))
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) == OPSET
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # B, C fixed, H, W
    assert dims[1].dim_value == 3

    sidecar = read_sidecar(trained["model"])
    payload = load_checkpoint(trained["checkpoint"])
    for key in ("classes", "colors", "normalization", "in_channels", "input_size", "task"):
        assert sidecar[key] == payload[key], key
    assert sidecar["opset"] == OPSET and sidecar["precision"] == "fp32"
    assert sidecar["pixelseg_version"]
    assert sidecar["input_rules"]["min_height"] == 9  # U-Net: multiple 16, 16 // 2 + 1
    assert sidecar["parity"]["max_abs_diff"] <= sidecar["parity"]["tolerance"] == 1e-3
    assert {shape[0] for shape in sidecar["parity"]["shapes"]} == {1, 3}


def test_exported_logits_match_pytorch_at_new_batch_and_sizes(trained):
    net = model_from_checkpoint(load_checkpoint(trained["checkpoint"]))
    session = onnx_session(trained["model"])
    generator = torch.Generator().manual_seed(7)
    for shape in [(2, 3, 50, 70), (1, 3, 64, 64), (4, 3, 9, 100)]:
        images = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = net(images).numpy()
        (got,) = session.run(None, {"images": images.numpy()})
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-3, shape


def test_failed_parity_check_writes_nothing(trained, copied_trace, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    argv = ["export", "--checkpoint", str(trained["checkpoint"]), "--out", str(out)]
    assert main([*argv, "--tolerance", "1e-12"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "failed its parity check" in line
    assert "exceeds the tolerance 1e-12" in line and "nothing was written" in line
    assert list(tmp_path.iterdir()) == []  # no model, no sidecar, no temporary file


def test_a_sidecar_that_cannot_be_written_leaves_no_model(trained, copied_trace, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    (tmp_path / "model.json").mkdir()  # the sidecar's name is taken by a folder
    argv = ["export", "--checkpoint", str(trained["checkpoint"]), "--out", str(out)]
    assert main(argv) == 2
    assert "model.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_exported_files_are_readable_as_any_file_written_here(trained):
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in (trained["model"], trained["model"].with_suffix(".json")):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_a_nan_difference_fails_the_parity_check(monkeypatch, tmp_path):
    from pixelseg.errors import ExportError
    from pixelseg.export import onnx_logits, runtime

    monkeypatch.setattr(runtime, "onnx_session", lambda path: None)
    monkeypatch.setattr(onnx_logits, "logits_parity", lambda *args: [1e-6, float("nan"), 2e-6])
    shapes = [[1, 3, 32, 32], [1, 3, 48, 32], [3, 3, 32, 32]]
    with pytest.raises(
        ExportError, match=r"nan \(onnxruntime vs PyTorch, input \[1, 3, 48, 32\]\)"
    ):
        onnx_logits.check_logits(None, tmp_path / "m.onnx", shapes, ("images", "logits"), 1e-3, "x")


def test_input_scale_model_exports_with_dynamic_sizes(tmp_path):
    """The antialiased resize of input_scale (aten::_upsample_bilinear2d_aa), which the
    TorchScript exporter rejects, through the dynamo exporter."""
    checkpoint = untrained_checkpoint(tmp_path / "half.pt", base_channels=4, input_scale=0.5)
    result = export_checkpoint(checkpoint, tmp_path / "half.onnx")
    assert result.max_abs_diff <= 1e-3
    assert result.sidecar["input_rules"] == {
        # The network needs 16 // 2 + 1 = 9 pixels: round(17 * 0.5) = 8 (half to even), 18 -> 9.
        "min_height": 18,
        "min_width": 18,
        "size_multiple": 16,
        "input_scale": 0.5,
    }
    net = model_from_checkpoint(load_checkpoint(checkpoint))
    session = onnx_session(result.model_path)
    for shape in [(1, 3, 45, 61), (2, 3, 33, 40)]:  # odd sizes: 22.5 -> 22, 30.5 -> 30
        images = torch.randn(*shape)
        with torch.no_grad():
            expected = net(images).numpy()
        assert np.abs(session.run(None, {"images": images.numpy()})[0] - expected).max() < 1e-3


def test_bad_checkpoints_and_outputs_are_one_line_errors(trained, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    whole = trained["checkpoint"].read_bytes()
    corrupt.write_bytes(whole[: len(whole) // 2])  # a truncated download
    cases = {
        str(corrupt): "is unreadable or corrupt",
        str(tmp_path / "missing.pt"): "does not exist",
    }
    for checkpoint, message in cases.items():
        out = tmp_path / "m.onnx"
        assert main(["export", "--checkpoint", checkpoint, "--out", str(out)]) == 2
        line = capsys.readouterr().err.strip()
        assert checkpoint in line and message in line
    assert main(["export", "--checkpoint", str(trained["checkpoint"]), "--out", "m.pt"]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_of_a_task_without_export_is_refused(trained, tmp_path, monkeypatch):
    import dataclasses

    from pixelseg.export import onnx as export_onnx
    from pixelseg.tasks import TASKS

    no_export = dataclasses.replace(TASKS["semantic"], export_keys=())
    monkeypatch.setattr(export_onnx, "get_plugin", lambda name: no_export)
    with pytest.raises(CheckpointError, match="'semantic' model, which has no ONNX export yet"):
        export_checkpoint(trained["checkpoint"], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_sidecar_problems_name_the_file(trained, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(trained["model"].read_bytes())
    with pytest.raises(CheckpointError, match=r"has no sidecar .*model\.json"):
        read_sidecar(model)
    sidecar = json.loads(trained["model"].with_suffix(".json").read_text())
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.json' is not readable JSON"):
        read_sidecar(model)
    (tmp_path / "model.json").write_text(json.dumps({**sidecar, "model_sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="was written for another model file"):
        read_sidecar(model)
    del sidecar["classes"]
    (tmp_path / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="lacks 'classes'"):
        read_sidecar(model)


def test_corrupt_onnx_file_is_named(trained, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"model\.onnx' is not a readable ONNX model"):
        onnx_session(model)
