"""ONNX export of Mask R-CNN through torchvision's supported path: the TorchScript tracer
(``torch.onnx.export(..., dynamo=False)``), opset :data:`OPSET`.

torchvision's detection code switches to ONNX-friendly branches while it is traced
(batching by padding, the mask paste as a scripted loop, NMS and RoIAlign as ONNX
operators), as in its own ONNX tests: one image ``[3, H, W]`` with dynamic height and width
per run, outputs ``boxes``, ``labels``, ``scores`` and ``masks`` with a dynamic number of
detections. The list of images a traced detector takes has the length of the sample, so
the graph takes one image per run. :class:`DetectionGraph` runs the detector's own parts,
with one change: the resized size is computed as in eager PyTorch (:func:`eager_resize`).

The parity check compares detections, not tensors (:mod:`.detection_parity`): PyTorch and
onnxruntime run the same images (synthetic shapes at two sizes and aspect ratios, and a
blank grey image, which usually has none) and the pairs must agree within the
tolerances, with no detection left unpaired unless its score is borderline.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelseg.errors import CheckpointError, ExportError
from pixelseg.export.deps import import_deploy
from pixelseg.export.detection_parity import DetectionDiff, DetectionTolerance, compare_detections
from pixelseg.export.graph_check import GraphCheck
from pixelseg.tasks import get_plugin

__all__ = [
    "EXPORTABLE_DETECTORS",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAMES",
    "DetectionGraph",
    "check_detections",
    "check_exportable",
    "eager_resize",
    "export_detection",
    "parity_images",
    "trace_export",
]

log = logging.getLogger(__name__)

#: torchvision registers its ``roi_align`` symbolic for opsets 11 and 16; from 16 the
#: ``RoiAlign`` operator states its coordinate mode (``output_half_pixel``, torchvision's
#: ``aligned=False``) instead of relying on opset 10's implicit one.
OPSET = 16
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "labels", "scores", "masks")
#: Instance models with an ONNX export.
EXPORTABLE_DETECTORS = ("maskrcnn",)


def eager_resize(image: Tensor, min_size: int, max_size: int) -> Tensor:
    """``image [C, H, W]`` resized as torchvision's detection transform resizes it in eager
    mode: the short side to ``min_size`` unless the long side would exceed ``max_size``,
    bilinear, the output size ``floor(side * scale)`` computed in float64.

    Written here because torchvision's traced branch computes that size in float32, where
    ``floor(41 * (64 / 41))`` is 63 against eager's 64: at ``min_size`` 800 the two differ
    by a pixel for 312 of the sides from 10 to 3000 px, and the exported graph's detections
    then differed from PyTorch's (boxes by pixels). The size is computed from the image's
    shape as a tensor, so the traced graph keeps it dynamic.
    """
    from torch.onnx import operators

    size = operators.shape_as_tensor(image)[-2:].to(torch.float64)
    # 1-d tensors throughout: the exporter gives Python floats and 0-d tensors the default
    # dtype, which would make the arithmetic float32 again.
    limits = torch.tensor([min_size, max_size], dtype=torch.float64)
    scale = (limits / size.sort().values).min(dim=0, keepdim=True).values
    out = torch.floor(size * scale).to(torch.int64)
    # The tracer records sizes given as tensors; eager interpolate wants ints.
    target = [out[0], out[1]] if torch.jit.is_tracing() else [int(out[0]), int(out[1])]
    resized = torch.nn.functional.interpolate(
        image[None], size=target, mode="bilinear", align_corners=False
    )
    return resized[0]


class DetectionGraph(nn.Module):
    """``image [3, H, W] float in 0..1 -> (boxes [D, 4], labels [D], scores [D],
    masks [D, 1, H, W])``: a torchvision ``GeneralizedRCNN`` in eval mode on one image.

    Its parts run in the order of torchvision's ``GeneralizedRCNN.forward`` and
    ``GeneralizedRCNNTransform.forward`` (normalise, resize, batch, backbone, RPN, RoI
    heads, map back to the input size), with :func:`eager_resize` in place of the
    transform's resize so that the traced graph resizes to eager's size; eager, it returns
    exactly what ``model([image])`` returns.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from torchvision.models.detection.image_list import ImageList

        model, transform = self.model, self.model.transform
        original = image.shape[-2:]
        resized = eager_resize(
            transform.normalize(image), transform.min_size[-1], transform.max_size
        )
        batch = transform.batch_images([resized], size_divisible=transform.size_divisible)
        images = ImageList(batch, [(resized.shape[-2], resized.shape[-1])])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        (found,) = transform.postprocess(detections, images.image_sizes, [original])
        return tuple(found[name] for name in OUTPUT_NAMES)  # type: ignore[return-value]


def check_exportable(spec: dict[str, Any], where: str) -> None:
    """Refuse instance models and options that have no faithful ONNX graph, naming them."""
    name = spec["name"]
    if name not in EXPORTABLE_DETECTORS:
        raise CheckpointError(
            f"{where} is an instance model {name!r}, which has no ONNX export; exportable "
            f"instance models: {', '.join(EXPORTABLE_DETECTORS)} (and every semantic model "
            "and the volumetric unet3d)"
        )
    nms = spec["options"].get("nms", "hard")
    if nms != "hard":
        raise CheckpointError(
            f"{where} uses Mask R-CNN option nms: {nms!r} (Soft-NMS), which has no ONNX "
            "export: its loop runs once per kept box, a count that tracing would fix to the "
            "sample image's; models with nms: 'hard' (the default) export"
        )


def _detector_settings(model: nn.Module) -> dict[str, Any]:
    """The resize and filtering a torchvision detector applies (fixed in the graph)."""
    transform, heads = model.transform, model.roi_heads  # type: ignore[union-attr]
    return {
        "min_size": int(transform.min_size[-1]),
        "max_size": int(transform.max_size),
        "size_divisible": int(transform.size_divisible),
        "box_score_thresh": float(heads.score_thresh),
        "box_nms_thresh": float(heads.nms_thresh),
        "box_detections_per_img": int(heads.detections_per_img),
    }


def parity_images(min_size: int, seed: int = 0) -> list[Tensor]:
    """Images ``[3, H, W]`` in 0..1 for the parity check: synthetic shapes at two sizes
    and aspect ratios around the detector's ``min_size``, and a blank grey image (as in
    torchvision's own ONNX tests), on which a trained detector usually finds nothing, so
    that the empty output is run too."""
    from pixelseg.data import SyntheticShapes

    side = max(int(min_size), 32)
    sizes = [(side, side + side // 3 + 1), (side * 3 // 4 + 3, side // 2 + 5)]
    images = []
    for index, size in enumerate(sizes):
        image = SyntheticShapes(1, size=size, seed=seed + index).generate(0)[0]
        images.append(torch.from_numpy(image).permute(2, 0, 1).float().div(255))
    images.append(torch.full((3, side // 2 + 7, side // 2 + 9), 0.3))
    return images


def trace_export(module: DetectionGraph, path: Path, sample: Tensor, opset: int) -> None:
    """Write ``module`` with torchvision's supported exporter (TorchScript tracing):
    dynamic image height and width and number of detections."""
    import_deploy("onnx")
    detections = {0: "detections"}
    axes = {INPUT_NAME: {1: "height", 2: "width"}}
    axes.update({name: dict(detections) for name in OUTPUT_NAMES})
    axes["masks"].update({2: "height", 3: "width"})
    chatter = io.StringIO()
    try:
        # The tracer warns about every Python value it freezes; torchvision's ONNX branches
        # are written for exactly that, and the parity check is the real test.
        with (
            contextlib.redirect_stdout(chatter),
            warnings.catch_warnings(record=True) as caught,
            torch.no_grad(),
        ):
            warnings.simplefilter("always")
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except Exception as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        raise ExportError(f"torch.onnx.export failed: {type(error).__name__}: {first}") from None
    log.debug(
        "torch.onnx.export (TorchScript) said: %s; %d warnings, first: %s",
        chatter.getvalue(),
        len(caught),
        caught[0].message if caught else None,
    )


def check_detections(
    model: nn.Module,
    path: Path,
    images: list[Tensor],
    tolerance: DetectionTolerance,
    settings: dict[str, Any],
    where: str,
) -> tuple[DetectionDiff, list[dict[str, Any]]]:
    """Run the parity check of the graph at ``path`` against ``model`` (the detector
    itself, called as ``predict`` calls it) on ``images``; ``(all images' diff, per-image
    rows)``, or :class:`ExportError` naming the first image that fails."""
    from pixelseg.export.runtime import onnx_session
    from pixelseg.export.runtime_detection import OnnxDetectionPredictor

    predictor = OnnxDetectionPredictor(onnx_session(path), INPUT_NAME, OUTPUT_NAMES)
    total, rows = DetectionDiff(), []
    for index, image in enumerate(images):
        with torch.no_grad():
            (expected,) = model([image])
        diff = compare_detections(
            expected,
            predictor.detect(image),
            tolerance,
            score_threshold=settings["box_score_thresh"],
            max_detections=settings["box_detections_per_img"],
        )
        problems = diff.failures(tolerance)
        if problems:
            raise ExportError(
                f"export of {where} failed its parity check on image {index + 1} of "
                f"{len(images)} ({list(image.shape)}): {'; '.join(problems)} (onnxruntime "
                "vs PyTorch, paired detections); nothing was written"
            )
        rows.append({"shape": list(image.shape), **diff.to_dict()})
        total = total.merge(diff)
    return total, rows


def export_detection(
    payload: dict[str, Any], where: str, path: Path, *, tolerance: float, opset: int | None
) -> GraphCheck:
    """Export an instance checkpoint's Mask R-CNN to ``path`` and check its detections;
    ``tolerance`` bounds the score difference of paired detections."""
    opset = opset or OPSET
    check_exportable(payload["model_spec"], where)
    plugin = get_plugin("instance")
    model = plugin.predictor_from_checkpoint(payload, where=where)
    module = DetectionGraph(model).eval()
    settings = _detector_settings(model)
    images = parity_images(settings["min_size"])
    trace_export(module, path, images[0], opset)
    limits = DetectionTolerance(score=tolerance)
    total, rows = check_detections(model, path, images, limits, settings, where)
    if total.expected == 0:
        log.warning(
            "the parity check of %s compared no detections (the model found nothing on its "
            "images); only the empty output was verified",
            where,
        )
    shapes = [list(image.shape) for image in images]
    task = plugin.task_from_checkpoint(payload, None)
    return GraphCheck(
        opset=opset,
        max_abs_diff=total.max_score,
        shapes=shapes,
        dynamic="one image per run, dynamic height and width and number of detections",
        summary=(
            f"parity: {total.matched} of {total.expected} PyTorch detections paired "
            f"({total.borderline} borderline unpaired), max box difference "
            f"{total.max_box_px:.2g} px <= {limits.box_px:g}, max score difference "
            f"{total.max_score:.2g} <= {limits.score:g}, mask IoU "
            f"{total.mask_iou:.4f} >= {limits.mask_iou:g} over images {shapes}"
        ),
        sidecar={
            "input": {
                "name": INPUT_NAME,
                "layout": "[3, H, W]",
                "dtype": "float32",
                "dynamic_axes": ["H", "W"],
                "images_per_run": 1,
                "normalized": "RGB / 255 in 0..1; the graph resizes and normalises "
                "(model_spec image_mean, image_std)",
            },
            "output": {
                "names": list(OUTPUT_NAMES),
                "layout": {
                    "boxes": "[D, 4] float32 (x1, y1, x2, y2) input pixels",
                    "labels": "[D] int64 in 1..K",
                    "scores": "[D] float32, best first",
                    "masks": "[D, 1, H, W] float32 probabilities",
                },
            },
            "input_rules": {
                **{key: settings[key] for key in ("min_size", "max_size", "size_divisible")},
                "resize": "the short side to min_size unless the long side would exceed "
                "max_size; padded to size_divisible inside the graph",
            },
            "detections": {
                key: settings[key]
                for key in ("box_score_thresh", "box_nms_thresh", "box_detections_per_img")
            },
            "score_threshold": task.score_threshold,
            "parity": {
                "compares": "paired detections",
                "tolerance": {
                    "score": limits.score,
                    "box_px": limits.box_px,
                    "mask_iou": limits.mask_iou,
                    "match_iou": limits.match_iou,
                },
                "shapes": shapes,
                **total.to_dict(),
                "per_image": rows,
            },
        },
    )
