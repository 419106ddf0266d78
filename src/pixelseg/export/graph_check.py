"""What a task's exporter returns: the check its graph passed, for the sidecar and the CLI.

Every exporter in :data:`pixelseg.export.onnx.GRAPH_EXPORTERS` writes a graph, verifies it
against PyTorch its own way (logits or paired detections) and describes the result with a
:class:`GraphCheck`; the shared driver turns it into the sidecar and the CLI's lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_TOLERANCE", "GraphCheck"]

#: Default limit on the largest absolute difference, onnxruntime against PyTorch (fp32):
#: logits for semantic and volumetric models, paired detection scores for detectors. Logit
#: differences measured 1e-6 to 5e-4 (docs/DEPLOYMENT.md); 1e-3 leaves a margin without letting
#: a wrong graph (differences of 1e-1 and more) through.
DEFAULT_TOLERANCE = 1e-3


@dataclass
class GraphCheck:
    """What a task's exporter wrote and how it checked it.

    ``sidecar``: the task's sidecar entries (``input``, ``output``, ``input_rules``,
    ``parity``); ``max_abs_diff``: the largest difference held against the tolerance;
    ``shapes``: the input shapes compared; ``dynamic``: which axes are dynamic, in words;
    ``summary``: the parity line the CLI prints.
    """

    opset: int
    max_abs_diff: float
    shapes: list[list[int]]
    dynamic: str
    summary: str
    sidecar: dict[str, Any] = field(default_factory=dict)
