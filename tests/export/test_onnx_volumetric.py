"""``pixelseg export`` of a volumetric checkpoint (3D U-Net): dynamic batch and D/H/W, the
volumetric sidecar, and ``predict --model model.onnx`` writing the same NIfTI labels as the
``.pt`` checkpoint (sliding window and flip TTA included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint, save_checkpoint
from pixelseg.cli import main
from pixelseg.config import parse_config
from pixelseg.errors import InvalidInputError
from pixelseg.export import OnnxPredictor, onnx_session, read_sidecar
from pixelseg.medical.io import read_volume
from pixelseg.medical.nifti import write_nifti
from pixelseg.medical.phantom import make_phantom
from pixelseg.tasks import get_plugin

pytestmark = pytest.mark.slow

#: Window (D, H, W) smaller than the test volumes, so prediction slides over them.
WINDOW = [8, 16, 16]


def volumetric_config(options: dict | None = None, **volumetric):
    phantom = {"num_train": 1, "num_val": 1, "shape": [24, 24, 12], "spacing": [6.0, 6.0, 10.0]}
    raw = {
        "task": "volumetric",
        "seed": 0,
        "data": {"in_channels": 1, "batch_size": 2},
        "model": {"name": "unet3d", "options": {"depth": 3, "width": 4, **(options or {})}},
        "volumetric": {"patch_size": WINDOW, "samples_per_epoch": 2, "phantom": phantom},
    }
    raw["volumetric"].update(volumetric)
    return parse_config(raw)


def volumetric_checkpoint(path, options: dict | None = None, **volumetric):
    """A seeded, untrained 3D U-Net's checkpoint (export and parity need no training)."""
    plugin = get_plugin("volumetric")
    config = volumetric_config(options, **volumetric)
    bundle = plugin.build_data(config)
    torch.manual_seed(0)
    net = plugin.build_model(config, bundle)
    meta = plugin.checkpoint_meta(config, bundle, {})
    return save_checkpoint({"model": net.state_dict(), **meta}, path)


@pytest.fixture(scope="module")
def exported(build_once):
    """The checkpoint (flip TTA on, overlap 0.5), its export through the CLI, and two
    NIfTI phantoms larger than the window (made once per test run)."""
    return build_once("volumetric_export", export_volumetric)


def export_volumetric(root: Path) -> dict[str, Path]:
    checkpoint = volumetric_checkpoint(root / "unet3d.pt", tta=True, overlap=0.5)
    model = root / "unet3d.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(model)]) == 0
    inputs = root / "inputs"
    for seed, shape in ((3, (30, 28, 14)), (4, (22, 34, 11))):
        image, _ = make_phantom(seed, shape=shape, spacing=(6.0, 6.0, 10.0), orientation="LPS")
        write_nifti(image.array, image.affine, inputs / f"case_{seed}.nii.gz")
    return {"checkpoint": checkpoint, "model": model, "inputs": inputs}


def test_volumetric_export_is_dynamic_with_its_sidecar(exported):
    graph = onnx.load(str(exported["model"]))
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) == 18
    (graph_input,) = graph.graph.input
    assert graph_input.name == "volumes"
    dims = graph_input.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True, True]  # B, C, D, H, W
    assert dims[1].dim_value == 1

    sidecar = read_sidecar(exported["model"])
    payload = load_checkpoint(exported["checkpoint"])
    keys = ("classes", "preprocessing", "inference", "model_spec", "in_channels", "task")
    for key in keys:
        assert sidecar[key] == json.loads(json.dumps(payload[key])), key  # tuples as lists
    assert sidecar["inference"]["tta"] is True and sidecar["inference"]["window"] == WINDOW
    assert sidecar["input"]["layout"] == "[B, C, D, H, W]"
    # depth 3: two stride-2 downsamplings per axis -> multiple 4, smallest side 4 // 2 + 1.
    assert sidecar["input_rules"] == {
        "min_size": [3, 3, 3],
        "size_multiple": [4, 4, 4],
        "one_axis_above_multiple": True,
    }
    parity = sidecar["parity"]
    # The window at the sliding-window batch (2), an odd size with batch 3 (7, 9, 10: no
    # side a multiple of 4, all different), the smallest volume (one axis above 4).
    assert parity["shapes"] == [[2, 1, *WINDOW], [3, 1, 7, 9, 10], [1, 1, 3, 3, 5]]
    assert parity["max_abs_diff"] <= parity["tolerance"] == 1e-3


def test_exported_volume_logits_match_pytorch_at_new_shapes(exported):
    net = get_plugin("volumetric").predictor_from_checkpoint(
        load_checkpoint(exported["checkpoint"])
    )
    session = onnx_session(exported["model"])
    generator = torch.Generator().manual_seed(3)
    for shape in [(2, 1, 12, 20, 17), (1, 1, 16, 16, 16), (4, 1, 5, 6, 9)]:
        volumes = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = net(volumes).numpy()
        (got,) = session.run(None, {"volumes": volumes.numpy()})
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-3, shape


def test_onnx_nifti_predictions_agree_with_torch(exported, tmp_path):
    inputs = [str(exported["inputs"])]
    torch_paths = workflows.predict_files(exported["checkpoint"], inputs, tmp_path / "pt")
    onnx_paths = workflows.predict_files(exported["model"], inputs, tmp_path / "onnx")
    assert [p.name for p in torch_paths] == [p.name for p in onnx_paths]
    assert [p.name for p in onnx_paths] == ["case_3_seg.nii.gz", "case_4_seg.nii.gz"]
    same = total = 0
    for reference, candidate in zip(torch_paths, onnx_paths, strict=True):
        expected, got = read_volume(reference), read_volume(candidate)
        source = read_volume(exported["inputs"] / reference.name.replace("_seg", ""))
        # Written on the input's own grid, like the .pt path.
        assert got.shape == source.shape and np.allclose(got.affine, source.affine)
        assert np.allclose(got.affine, expected.affine)
        same += int((expected.array == got.array).sum())
        total += expected.array.size
    assert len(np.unique(expected.array)) > 1  # both classes occur, not a constant volume
    assert same / total >= 0.999


def test_small_volumes_and_tiling_options_are_refused(exported, tmp_path, capsys):
    sidecar = read_sidecar(exported["model"])
    predictor = OnnxPredictor(onnx_session(exported["model"]), sidecar)
    with pytest.raises(InvalidInputError, match="input of 2x8x8 voxels is below the ONNX "
                       "model's minimum 3x3x3"):  # fmt: skip
        predictor(torch.zeros(1, 1, 2, 8, 8))
    with pytest.raises(InvalidInputError, match="some axis must exceed its size multiple 4x4x4"):
        predictor(torch.zeros(1, 1, 4, 3, 4))
    with pytest.raises(InvalidInputError, match=r"takes \[B, 1, D, H, W\] inputs"):
        predictor(torch.zeros(1, 1, 8, 8))
    case = str(exported["inputs"] / "case_3.nii.gz")
    argv = ["predict", "--model", str(exported["model"]), "--out", str(tmp_path), case]
    assert main([*argv, "--tta"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is a volumetric model" in err and "unet3d.onnx" in err
