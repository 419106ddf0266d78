"""ONNX export of semantic segmentation models: ``images [B, C, H, W] -> logits
[B, K, H, W]`` with dynamic batch, height and width, opset :data:`OPSET`.

The export verifies itself: onnxruntime and PyTorch run the same seeded inputs at several
shapes (the training size, an odd size with batch 3, the smallest size allowed), and a
largest absolute logit difference above the tolerance fails the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixelseg.export.graph_check import GraphCheck
from pixelseg.export.onnx_logits import LogitsModule, check_logits, export_dynamic
from pixelseg.inference import model_from_checkpoint
from pixelseg.models.base import scaled_length

__all__ = [
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "export_module",
    "export_semantic",
    "input_size_rules",
    "parity_shapes",
]

#: ONNX opset of semantic exports: 18 is the first with an antialiased ``Resize``.
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def input_size_rules(model: nn.Module) -> dict[str, Any]:
    """The sizes the exported graph takes: ``{"min_height", "min_width", "size_multiple",
    "input_scale"}`` in pixels.

    The graph always reflect-pads the network's input to ``size_multiple``, which needs the
    padding to be smaller than the side (eager PyTorch switches to replicate padding for
    smaller inputs); every side of at least ``size_multiple // 2 + 1`` pixels at the
    network (after ``input_scale``) satisfies it.
    """
    multiple = int(getattr(model, "size_multiple", 1))
    scale = float(getattr(model, "input_scale", 1.0))
    network_min = multiple // 2 + 1
    smallest = 1
    while scaled_length(smallest, scale) < network_min:
        smallest += 1
    return {
        "min_height": smallest,
        "min_width": smallest,
        "size_multiple": multiple,
        "input_scale": scale,
    }


def _sample_size(rules: dict[str, Any], start: int) -> int:
    # A side whose network size is not a multiple: the padding branch is then captured as
    # a general pad (of possibly zero) rather than specialised away.
    multiple, scale = rules["size_multiple"], rules["input_scale"]
    side = max(start, rules["min_height"], 8)
    while multiple > 1 and scaled_length(side, scale) % multiple == 0:
        side += 1
    return side


def parity_shapes(rules: dict[str, Any], in_channels: int, trained: list[int] | None):
    """Input shapes of the parity check: the training size (batch 1), an odd size
    (batch 3, height != width) and the smallest size the graph takes (batch 1)."""
    multiple = rules["size_multiple"]
    height, width = (list(trained) if trained else [64, 64])[-2:]
    odd_h = _sample_size(rules, multiple + 5)
    odd_w = _sample_size(rules, 2 * multiple + 3)
    return [
        [1, in_channels, max(height, rules["min_height"]), max(width, rules["min_width"])],
        [3, in_channels, odd_h, odd_w],
        [1, in_channels, rules["min_height"], rules["min_width"]],
    ]


def export_module(
    module: nn.Module, path: Path, in_channels: int, rules: dict[str, Any], opset: int = OPSET
) -> None:
    """Write ``module`` (``images -> logits``) as an ONNX file with dynamic batch, height and
    width (weights inside the file, no external data)."""
    height = _sample_size(rules, rules["size_multiple"] + 1)
    width = _sample_size(rules, height + 1)
    # Batch 2 and height != width: sizes 0, 1 and repeated sizes would be specialised.
    sample = torch.randn(2, in_channels, height, width)
    export_dynamic(module, path, sample, (INPUT_NAME, OUTPUT_NAME), opset)


def export_semantic(
    payload: dict[str, Any], where: str, path: Path, *, tolerance: float, opset: int | None
) -> GraphCheck:
    """Export a semantic checkpoint's model to ``path`` and check its logits."""
    opset = opset or OPSET
    model = model_from_checkpoint(payload, where=where)
    module = LogitsModule(model).eval()
    in_channels = int(payload["model_spec"]["in_channels"])
    rules = input_size_rules(model)
    shapes = parity_shapes(rules, in_channels, payload.get("input_size"))
    export_module(module, path, in_channels, rules, opset)
    names = (INPUT_NAME, OUTPUT_NAME)
    diffs, parity = check_logits(module, path, shapes, names, tolerance, where)
    return GraphCheck(
        opset=opset,
        max_abs_diff=max(diffs),
        shapes=shapes,
        dynamic="dynamic batch, height and width",
        summary=(
            f"parity: max |logit difference| onnxruntime vs PyTorch {max(diffs):.2g} "
            f"<= {tolerance:g} over inputs {shapes}"
        ),
        sidecar={
            "input": {
                "name": INPUT_NAME,
                "layout": "[B, C, H, W]",
                "dtype": "float32",
                "dynamic_axes": ["B", "H", "W"],
                "normalized": "(image / 255 - mean) / std, see normalization",
            },
            "output": {"name": OUTPUT_NAME, "layout": "[B, K, H, W]", "dtype": "float32"},
            "input_rules": rules,
            "parity": parity,
        },
    )
