"""The module that Mask R-CNN is exported as: torchvision's parts in torchvision's order,
resizing to eager torchvision's size (its traced branch computes the size in float32, a
pixel short for some sides)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from pixelseg.export import onnx_session
from pixelseg.export.onnx_detection import OUTPUT_NAMES, DetectionGraph, eager_resize
from pixelseg.models.detection import create_detector


class Resize(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return eager_resize(image, 64, 64)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_exported_resize_has_eager_torchvisions_size(tmp_path):
    # What torchvision's traced branch computes for a side of 41 at min_size 64:
    assert np.floor(np.float32(41) * (np.float32(64) / np.float32(41))) == 63
    path = tmp_path / "resize.onnx"
    torch.onnx.export(
        Resize(),
        (torch.rand(3, 30, 50),),
        str(path),
        dynamo=False,
        opset_version=16,
        input_names=["image"],
        dynamic_axes={"image": {1: "height", 2: "width"}},
    )
    session = onnx_session(path)
    eager = GeneralizedRCNNTransform(64, 64, [0.0] * 3, [1.0] * 3)
    sizes = {(39, 41): (60, 64), (41, 39): (64, 60), (97, 41): (64, 27), (30, 30): (64, 64)}
    for size, resized in sizes.items():
        image = torch.rand(3, *size)
        expected, _ = eager.resize(image)
        assert tuple(expected.shape[-2:]) == resized  # eager torchvision's size
        assert torch.equal(eager_resize(image, 64, 64), expected)
        (got,) = session.run(None, {"image": image.numpy()})
        assert got.shape == expected.shape, size
        assert np.abs(got - expected.numpy()).max() < 1e-5


def test_detection_graph_returns_what_the_model_returns():
    torch.manual_seed(0)
    model = create_detector(
        "maskrcnn", 3, fpn_channels=16, mask_head_convs=1, min_size=64, max_size=64
    ).eval()
    image = torch.rand(3, 39, 41)
    with torch.no_grad():
        (expected,) = model([image])
        got = DetectionGraph(model)(image)
    assert len(expected["boxes"]) > 0
    for name, value in zip(OUTPUT_NAMES, got, strict=True):
        assert torch.equal(value, expected[name]), name
