"""``pixelseg export`` of a Mask R-CNN checkpoint (torchvision's TorchScript path, one image
per run, dynamic height and width), its sidecar and paired-detection parity, and
``predict --model maskrcnn.onnx`` writing the detections of the ``.pt`` path; the models and
options without an ONNX export are refused by name."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint, save_checkpoint
from pixelseg.cli import main
from pixelseg.coco_format import mask_api, xywh_to_xyxy
from pixelseg.config import parse_config
from pixelseg.data import SyntheticShapes
from pixelseg.errors import CheckpointError
from pixelseg.export import DetectionTolerance, compare_detections, export_checkpoint, read_sidecar
from pixelseg.tasks import get_plugin

pytestmark = pytest.mark.slow

#: A small Mask R-CNN; untrained, so the default score threshold (0.05) keeps detections.
OPTIONS = {"norm": "group", "min_size": 96, "max_size": 128, "fpn_channels": 16,
           "mask_head_convs": 1, "box_detections_per_img": 12}  # fmt: skip


def instance_checkpoint(path, model: str = "maskrcnn", **options):
    """A seeded, untrained detector's checkpoint (export and parity need no training)."""
    plugin = get_plugin("instance")
    encoder = "mobilenet_v3_large" if model == "maskrcnn" else "resnet18"
    config = parse_config(
        {
            "task": "instance",
            "data": {"synthetic": {"num_train": 2, "num_val": 2, "size": 64}, "batch_size": 2},
            "model": {"name": model, "encoder": encoder, "options": options},
        }
    )
    bundle = plugin.build_data(config)
    torch.manual_seed(0)
    net = plugin.build_model(config, bundle)
    meta = plugin.checkpoint_meta(config, bundle, {})
    return save_checkpoint({"model": net.state_dict(), **meta}, path)


@pytest.fixture(scope="module")
def exported(build_once):
    """The Mask R-CNN checkpoint, its export through the CLI, and two shapes images of
    different sizes (made once per test run)."""
    return build_once("maskrcnn_export", export_maskrcnn)


def export_maskrcnn(root: Path) -> dict[str, Path]:
    checkpoint = instance_checkpoint(root / "maskrcnn.pt", **OPTIONS)
    model = root / "maskrcnn.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(model)]) == 0
    images = root / "images"
    images.mkdir()
    for index, size in enumerate([(48, 72), (90, 64)]):
        image = SyntheticShapes(1, size=size, seed=7 + index).generate(0)[0]
        Image.fromarray(image).save(images / f"shapes_{index}.png")
    return {"checkpoint": checkpoint, "model": model, "images": images}


def test_detection_export_graph_and_sidecar(exported):
    graph = onnx.load(str(exported["model"]))
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) == 16
    (graph_input,) = graph.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "image" and [bool(d.dim_param) for d in dims] == [False, True, True]
    assert [o.name for o in graph.graph.output] == ["boxes", "labels", "scores", "masks"]

    sidecar = read_sidecar(exported["model"])
    payload = load_checkpoint(exported["checkpoint"])
    for key in ("classes", "category_ids", "colors", "normalization", "model_spec", "task"):
        assert sidecar[key] == payload[key], key
    assert sidecar["opset"] == 16 and sidecar["input"]["images_per_run"] == 1
    assert {k: sidecar["input_rules"][k] for k in ("min_size", "max_size", "size_divisible")} == {
        "min_size": 96,
        "max_size": 128,
        "size_divisible": 32,
    }
    assert sidecar["detections"] == {
        "box_score_thresh": 0.05,
        "box_nms_thresh": 0.5,
        "box_detections_per_img": 12,
    }
    assert sidecar["score_threshold"] == 0.5
    parity = sidecar["parity"]
    assert parity["tolerance"] == {"score": 1e-3, "box_px": 0.1, "mask_iou": 0.99, "match_iou": 0.5}
    assert len({tuple(shape) for shape in parity["shapes"]}) == 3  # three image sizes
    assert parity["expected"] > 0 and parity["unexplained"] == 0
    assert parity["matched"] + parity["borderline"] >= parity["expected"]
    assert parity["max_score"] <= 1e-3 and parity["max_box_px"] <= 0.1
    assert parity["mask_iou"] >= 0.99 and parity["mask_agreement"] >= 0.999


def read_results(folder) -> dict[int, dict[str, torch.Tensor]]:
    """``results.json`` of a predict folder as one detections dict per image id."""
    sizes = {item["id"]: (item["height"], item["width"]) for item in json.loads(
        (folder / "images.json").read_text())}  # fmt: skip
    grouped = defaultdict(list)
    for result in json.loads((folder / "results.json").read_text()):
        grouped[result["image_id"]].append(result)
    out = {}
    for image_id, size in sizes.items():
        results = grouped[image_id]
        masks = np.zeros((len(results), 1, *size), dtype=np.float32)
        if results:  # pycocotools decodes a list of RLEs into [H, W, N]
            decoded = mask_api().decode([r["segmentation"] for r in results])
            masks[:, 0] = decoded.transpose(2, 0, 1)
        out[image_id] = {
            "boxes": torch.from_numpy(xywh_to_xyxy([r["bbox"] for r in results])).float(),
            "labels": torch.tensor([r["category_id"] for r in results], dtype=torch.int64),
            "scores": torch.tensor([r["score"] for r in results]),
            "masks": torch.from_numpy(masks),
        }
    return out


def test_onnx_detections_agree_with_torch(exported, tmp_path):
    inputs = [str(exported["images"])]
    options = {"score_threshold": 0.0}  # overlays draw every detection
    torch_files = workflows.predict_files(
        exported["checkpoint"], inputs, tmp_path / "pt", **options
    )
    onnx_files = workflows.predict_files(exported["model"], inputs, tmp_path / "onnx", **options)
    assert [p.name for p in onnx_files] == [p.name for p in torch_files]
    expected, got = read_results(tmp_path / "pt"), read_results(tmp_path / "onnx")
    assert sorted(expected) == sorted(got) == [1, 2]
    tolerance = DetectionTolerance()
    for image_id in expected:
        diff = compare_detections(expected[image_id], got[image_id], tolerance, max_detections=12)
        assert diff.expected > 0 and diff.failures(tolerance) == [], image_id
        assert diff.matched == diff.expected == diff.got
        assert diff.mask_agreement >= 0.999
    for reference, candidate in zip(torch_files, onnx_files, strict=True):
        drawn = np.asarray(Image.open(reference)), np.asarray(Image.open(candidate))
        assert drawn[0].shape == drawn[1].shape
        assert (drawn[0] == drawn[1]).all(axis=-1).mean() >= 0.999


def test_models_and_options_without_onnx_export_are_refused(exported, tmp_path):
    payload = load_checkpoint(exported["checkpoint"])
    soft = {**payload, "model_spec": {**payload["model_spec"]}}
    soft["model_spec"]["options"] = {**payload["model_spec"]["options"], "nms": "soft"}
    yolact = {**payload, "model_spec": {**payload["model_spec"], "name": "yolact"}}
    panoptic = {**payload, "task": "panoptic", "categories": [], "fusion": {}}
    cases = {
        "soft.pt": (soft, "nms: 'soft' (Soft-NMS), which has no ONNX export"),
        "yolact.pt": (yolact, "instance model 'yolact', which has no ONNX export; exportable "
                      "instance models: maskrcnn"),
        "panoptic.pt": (panoptic, "'panoptic' model, which has no ONNX export yet; exportable "
                        "tasks: semantic, volumetric, instance"),
    }  # fmt: skip
    for name, (data, message) in cases.items():
        checkpoint = save_checkpoint(data, tmp_path / name)
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            export_checkpoint(checkpoint, tmp_path / "out" / f"{name}.onnx")
        assert not list((tmp_path / "out").glob("*")), name  # nothing written
    from pixelseg.export.quantize import quantize_checkpoint

    config = parse_config({"task": "instance", "model": {"name": "maskrcnn"}})
    with pytest.raises(CheckpointError, match="INT8 quantisation is for semantic models"):
        quantize_checkpoint(exported["checkpoint"], tmp_path / "out" / "int8.onnx", config)
    assert not list((tmp_path / "out").glob("*"))


def test_tiling_options_are_refused_for_onnx_detectors(exported, tmp_path, capsys):
    image = str(exported["images"] / "shapes_0.png")
    argv = ["predict", "--model", str(exported["model"]), "--out", str(tmp_path), image]
    for extra in (["--tta"], ["--window", "32", "32"]):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is an instance model" in err and "maskrcnn.onnx" in err
