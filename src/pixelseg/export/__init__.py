"""Deployment: ONNX export verified against PyTorch, INT8 quantisation with an accuracy
guard, and the onnxruntime predictor.

onnx, onnxruntime and onnxscript (the ``deploy`` extra) are imported inside the functions
that use them, so importing this package stays light.
"""

from __future__ import annotations

from pixelseg.export.onnx import (
    DEFAULT_TOLERANCE,
    OPSET,
    ExportResult,
    export_checkpoint,
    input_size_rules,
)
from pixelseg.export.runtime import OnnxPredictor, load_onnx_model, onnx_session
from pixelseg.export.sidecar import read_sidecar, sidecar_path

__all__ = [
    "DEFAULT_TOLERANCE",
    "OPSET",
    "ExportResult",
    "OnnxPredictor",
    "export_checkpoint",
    "input_size_rules",
    "load_onnx_model",
    "onnx_session",
    "read_sidecar",
    "sidecar_path",
]
