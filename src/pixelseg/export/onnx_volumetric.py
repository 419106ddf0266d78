"""ONNX export of volumetric models (the 3D U-Net): ``volumes [B, C, D, H, W] -> logits
[B, K, D, H, W]`` with dynamic batch, depth, height and width, opset :data:`OPSET`.

The model pads each axis to its size multiple and crops the logits back inside the graph,
so any volume at or above the sidecar's ``input_rules`` runs; the task's sliding window
(Gaussian blending, flip TTA) stays outside the graph, as with the PyTorch model, and is
rebuilt from the sidecar's ``inference`` settings. The parity check runs the inference
window at the sliding-window batch size, an odd size with batch 3, and the smallest volume
the graph takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixelseg.export.graph_check import GraphCheck
from pixelseg.export.onnx_logits import (
    LogitsModule,
    check_logits,
    distinct_sizes,
    export_dynamic,
)
from pixelseg.tasks import get_plugin

__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "export_volumetric", "volume_input_rules"]

#: The same exporter and opset as semantic models (dynamo, opset 18).
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "volumes", "logits"


def volume_input_rules(model: nn.Module) -> dict[str, Any]:
    """The volumes the exported graph takes, per axis ``(D, H, W)`` in voxels.

    ``size_multiple``: the product of the model's downsamplings along each axis; the graph
    always reflect-pads to it, which needs every side to be at least ``min_size`` =
    ``size_multiple // 2 + 1`` (eager PyTorch switches to replicate padding below that).
    ``one_axis_above_multiple``: instance norm needs more than one voxel at the deepest
    level, so some axis must exceed its multiple (PyTorch refuses the volume otherwise; the
    graph would silently return the norm's bias).
    """
    multiple = [int(m) for m in getattr(model, "size_multiple", (1, 1, 1))]
    return {
        "min_size": [m // 2 + 1 for m in multiple],
        "size_multiple": multiple,
        "one_axis_above_multiple": getattr(model, "norm", None) == "instance",
    }


def smallest_volume(rules: dict[str, Any]) -> list[int]:
    """The smallest ``(D, H, W)`` the graph takes (the last axis grown past its multiple
    when the rules need one axis above it)."""
    smallest = [int(v) for v in rules["min_size"]]
    multiple = rules["size_multiple"]
    if rules["one_axis_above_multiple"] and all(
        s <= m for s, m in zip(smallest, multiple, strict=True)
    ):
        smallest[-1] = multiple[-1] + 1
    return smallest


def volume_parity_shapes(
    rules: dict[str, Any], in_channels: int, window: list[int], batch_size: int
) -> list[list[int]]:
    """Input shapes of the parity check: the inference window at the sliding-window batch
    size, an odd size with batch 3 (every axis unaligned, all different) and the smallest
    volume the graph takes (batch 1)."""
    multiple = rules["size_multiple"]
    odd = distinct_sizes([m + 3 for m in multiple], multiple, set())
    return [
        [max(int(batch_size), 1), in_channels, *[int(v) for v in window]],
        [3, in_channels, *odd],
        [1, in_channels, *smallest_volume(rules)],
    ]


def export_volumetric(
    payload: dict[str, Any], where: str, path: Path, *, tolerance: float, opset: int | None
) -> GraphCheck:
    """Export a volumetric checkpoint's model to ``path`` and check its logits."""
    opset = opset or OPSET
    model = get_plugin("volumetric").predictor_from_checkpoint(payload, where=where)
    module = LogitsModule(model).eval()
    in_channels = int(payload["model_spec"]["in_channels"])
    rules = volume_input_rules(model)
    inference = payload["inference"]
    shapes = volume_parity_shapes(
        rules, in_channels, list(inference["window"]), int(inference.get("batch_size", 1))
    )
    multiple = rules["size_multiple"]
    # Batch 2 and three different unaligned sides: no size is specialised into the graph.
    sides = distinct_sizes([m + 1 for m in multiple], multiple, {2, in_channels})
    names = (INPUT_NAME, OUTPUT_NAME)
    export_dynamic(module, path, torch.randn(2, in_channels, *sides), names, opset)
    diffs, parity = check_logits(module, path, shapes, names, tolerance, where)
    return GraphCheck(
        opset=opset,
        max_abs_diff=max(diffs),
        shapes=shapes,
        dynamic="dynamic batch, depth, height and width",
        summary=(
            f"parity: max |logit difference| onnxruntime vs PyTorch {max(diffs):.2g} "
            f"<= {tolerance:g} over inputs {shapes}"
        ),
        sidecar={
            "input": {
                "name": INPUT_NAME,
                "layout": "[B, C, D, H, W]",
                "dtype": "float32",
                "dynamic_axes": ["B", "D", "H", "W"],
                "normalized": "intensities as preprocessing prepares them (resampled to its "
                "spacing, then window / zscore / percentile)",
            },
            "output": {"name": OUTPUT_NAME, "layout": "[B, K, D, H, W]", "dtype": "float32"},
            "input_rules": rules,
            "parity": parity,
        },
    )
