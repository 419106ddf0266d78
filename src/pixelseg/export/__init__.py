"""Deployment: ONNX export verified against PyTorch (semantic and volumetric models,
Mask R-CNN), INT8 quantisation with an accuracy guard, and the onnxruntime predictors.

onnx, onnxruntime and onnxscript (the ``deploy`` extra) are imported inside the functions
that use them, so importing this package stays light.
"""

from __future__ import annotations

from pixelseg.export.detection_parity import (
    DetectionDiff,
    DetectionTolerance,
    compare_detections,
)
from pixelseg.export.onnx import (
    DEFAULT_TOLERANCE,
    GRAPH_EXPORTERS,
    OPSET,
    ExportResult,
    export_checkpoint,
    exportable_tasks,
    input_size_rules,
)
from pixelseg.export.onnx_volumetric import volume_input_rules
from pixelseg.export.runtime import ONNX_PREDICTORS, OnnxPredictor, load_onnx_model, onnx_session
from pixelseg.export.runtime_detection import OnnxDetectionPredictor
from pixelseg.export.sidecar import read_sidecar, sidecar_path

__all__ = [
    "DEFAULT_TOLERANCE",
    "GRAPH_EXPORTERS",
    "ONNX_PREDICTORS",
    "OPSET",
    "DetectionDiff",
    "DetectionTolerance",
    "ExportResult",
    "OnnxDetectionPredictor",
    "OnnxPredictor",
    "compare_detections",
    "export_checkpoint",
    "exportable_tasks",
    "input_size_rules",
    "load_onnx_model",
    "onnx_session",
    "read_sidecar",
    "sidecar_path",
    "volume_input_rules",
]
