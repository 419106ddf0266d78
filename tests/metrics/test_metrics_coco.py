"""COCO evaluation against pycocotools: all twelve stats and the full precision/recall arrays.

The cases are generated (tests/metrics/coco_cases.py): perturbations, duplicates, wrong
classes, crowds, a category without ground truth, empty images, images without detections,
tied scores, >100 detections on one image, and annotation ids from 0.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from pycocotools import mask as mask_utils

from pixelseg.data.coco_write import instances_to_coco
from pixelseg.errors import DataError, InvalidInputError
from pixelseg.metrics.coco import coco_accumulate, coco_evaluate
from pixelseg.metrics.coco_match import STAT_NAMES
from pixelseg.metrics.coco_stream import CocoEvaluator, detections_to_coco_results

_spec = importlib.util.spec_from_file_location(
    "coco_cases", Path(__file__).with_name("coco_cases.py")
)
assert _spec is not None and _spec.loader is not None
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)


def _assert_equal_to_pycocotools(gt: dict, results: list, iou_type: str) -> dict[str, float]:
    ref_stats, ref = cases.pycocotools_eval(gt, results, iou_type)
    ours = coco_evaluate(copy.deepcopy(gt), copy.deepcopy(results), iou_type)
    assert list(ours) == list(STAT_NAMES)
    np.testing.assert_allclose(list(ours.values()), ref_stats, rtol=0, atol=1e-9)
    arrays = coco_accumulate(gt, results, iou_type)
    np.testing.assert_allclose(arrays["precision"], ref["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(arrays["recall"], ref["recall"], rtol=0, atol=1e-12)
    return ours


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_generated_cases_equal_pycocotools(seed: int, iou_type: str) -> None:
    gt, results = cases.make_case(seed)
    stats = _assert_equal_to_pycocotools(gt, results, iou_type)
    assert 0 < stats["AP"] < 1  # a case where matching decides the number


@pytest.mark.parametrize("drop", ["bbox", "segmentation"])
def test_results_with_one_field_equal_pycocotools(drop: str) -> None:
    # Without 'bbox' a detection's area is its mask's; without 'segmentation', bbox only.
    gt, results = cases.make_case(11)
    for res in results:
        res.pop(drop)
    for iou_type in ["bbox"] if drop == "segmentation" else ["segm", "bbox"]:
        _assert_equal_to_pycocotools(gt, results, iou_type)


def _box_case(dets: list[tuple[list[float], float]]) -> tuple[dict, list]:
    gt = {
        "images": [{"id": 1, "file_name": "a.png", "height": 50, "width": 50}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 100.0,
             "iscrowd": 0, "segmentation": [[box[0], box[1], box[0] + 10, box[1], box[0] + 10,
                                             box[1] + 10, box[0], box[1] + 10]]}
            for i, box in enumerate([[0, 0, 10, 10], [30, 30, 10, 10]])
        ],
    }  # fmt: skip
    results = [{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for b, s in dets]
    return gt, results


def test_hand_computed_ap() -> None:
    # Two ground truths of area 100 (small); a detection with IoU 72/100 = 0.72 on the first
    # (score 0.9), then a false positive (0.8). For t <= 0.70 recall reaches 0.5 at
    # precision 1: 51 of 101 recall points, so AP_t = 51/101; for t >= 0.75 nothing matches.
    gt, results = _box_case([([0, 0, 10, 7.2], 0.9), ([20, 0, 5, 5], 0.8)])
    stats = coco_evaluate(gt, results, "bbox")
    assert stats["AP50"] == pytest.approx(51 / 101, abs=1e-12)
    assert stats["AP75"] == 0.0
    assert stats["AP"] == pytest.approx(5 * 51 / 101 / 10, abs=1e-12)
    assert stats["APs"] == stats["AP"] and stats["APm"] == -1.0 and stats["APl"] == -1.0
    assert stats["AR1"] == stats["AR100"] == pytest.approx(0.25, abs=1e-12)
    _assert_equal_to_pycocotools(gt, results, "bbox")


def test_equal_scores_keep_result_order() -> None:
    # Tied scores: the stable sort keeps file order, so the order changes AP (as pycocotools).
    hit, miss = ([0, 0, 10, 10], 0.5), ([20, 0, 5, 5], 0.5)
    first = _assert_equal_to_pycocotools(*_box_case([hit, miss]), "bbox")
    second = _assert_equal_to_pycocotools(*_box_case([miss, hit]), "bbox")
    assert first["AP"] == pytest.approx(51 / 101, abs=1e-12)
    assert second["AP"] == pytest.approx(51 / 101 * 0.5, abs=1e-12)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_no_detections_give_zero_not_a_crash(iou_type: str) -> None:
    # pycocotools cannot load an empty result list; the answer is 0 where there is ground
    # truth and -1 where an area range has none.
    gt, _ = _box_case([])
    stats = coco_evaluate(gt, [], iou_type)
    for name, value in stats.items():
        assert value == (-1.0 if name in ("APm", "APl", "ARm", "ARl") else 0.0), name


def test_files_on_disk(tmp_path: Path) -> None:
    gt, results = cases.make_case(4)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    from_files = coco_evaluate(tmp_path / "gt.json", str(tmp_path / "res.json"), "segm")
    assert from_files == coco_evaluate(gt, results, "segm")


def _targets_and_predictions(gt: dict, results: list) -> tuple[list, list]:
    """Per-image torchvision-style dicts (float32 boxes, float32 scores) from a case."""
    import torch

    cat_ids = sorted(c["id"] for c in gt["categories"])
    label = {cid: i + 1 for i, cid in enumerate(cat_ids)}
    targets, predictions = [], []
    for img in gt["images"]:
        h, w = img["height"], img["width"]
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        rles = [mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))
                if isinstance(a["segmentation"], list)
                else mask_utils.frPyObjects(a["segmentation"], h, w)
                if isinstance(a["segmentation"]["counts"], list) else a["segmentation"]
                for a in anns]  # fmt: skip
        masks = mask_utils.decode(rles).transpose(2, 0, 1) if rles else np.zeros((0, h, w))
        xywh = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
        targets.append(
            {
                "image_id": torch.tensor(img["id"]),
                "boxes": torch.tensor(np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]).float(),
                "labels": torch.tensor([label[a["category_id"]] for a in anns], dtype=torch.int64),
                "masks": torch.from_numpy(masks.astype(np.uint8)),
                "iscrowd": torch.tensor([a["iscrowd"] for a in anns]),
                "area": torch.tensor([a["area"] for a in anns], dtype=torch.float64),
            }
        )
        dets = [r for r in results if r["image_id"] == img["id"]]
        dmasks = mask_utils.decode([r["segmentation"] for r in dets]) if dets else None
        dxywh = np.array([r["bbox"] for r in dets]).reshape(-1, 4)
        predictions.append(
            {
                "boxes": torch.tensor(np.c_[dxywh[:, :2], dxywh[:, :2] + dxywh[:, 2:]]).float(),
                "labels": torch.tensor([label[r["category_id"]] for r in dets], dtype=torch.int64),
                "scores": torch.tensor([r["score"] for r in dets], dtype=torch.float32),
                # Mask R-CNN style: probabilities [N, 1, H, W], cut at 0.5.
                "masks": torch.from_numpy(
                    dmasks.transpose(2, 0, 1)[:, None] * 0.75 if dets else np.zeros((0, 1, h, w))
                ).float(),
            }
        )
    return targets, predictions


def test_streaming_equals_json_route_and_pycocotools() -> None:
    gt, results = cases.make_case(4)  # an even seed: annotation ids from 1, as written back
    targets, predictions = _targets_and_predictions(gt, results)
    evaluator = CocoEvaluator(num_classes=len(gt["categories"]))
    for start in range(0, len(targets), 3):  # batches of 3 images
        evaluator.update(predictions[start : start + 3], targets[start : start + 3])
    streamed = evaluator.compute()
    categories = sorted(gt["categories"], key=lambda c: c["id"])
    gt_written = instances_to_coco(
        [t | {"name": f"im{int(t['image_id'])}"} for t in targets], categories
    )
    label_to_id = {i + 1: c["id"] for i, c in enumerate(categories)}
    res_written = [
        r
        for t, p in zip(targets, predictions, strict=True)
        for r in detections_to_coco_results(int(t["image_id"]), p, label_to_id)
    ]
    for iou_type in ("segm", "bbox"):
        assert streamed[iou_type] == coco_evaluate(gt_written, res_written, iou_type)
        _assert_equal_to_pycocotools(gt_written, res_written, iou_type)
    # The masks survive the round trip exactly, so segm equals the original case too (only
    # because its annotation ids start at 1: pycocotools never counts a match to id 0).
    original = coco_evaluate(gt, results, "segm")
    np.testing.assert_allclose(list(streamed["segm"].values()), list(original.values()), atol=1e-12)


def test_streaming_rejects_bad_input() -> None:
    import torch

    evaluator = CocoEvaluator(num_classes=2, iou_types=["bbox"])
    target = {"image_id": 7, "boxes": torch.zeros(1, 4), "labels": torch.tensor([3])}
    pred = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
    with pytest.raises(InvalidInputError, match=r"image 7 target: labels must be in 1\.\.2"):
        evaluator.update([pred], [target])
    target["labels"] = torch.tensor([1])
    evaluator.update([pred], [target])
    with pytest.raises(InvalidInputError, match="image 7 was already added"):
        evaluator.update([pred], [target])
    with pytest.raises(InvalidInputError, match="iou_types"):
        CocoEvaluator(num_classes=2, iou_types=["keypoints"])


def _small_case() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return cases.make_case(2, num_images=3, size=(40, 40))


def test_results_on_unknown_images_are_an_error() -> None:
    gt, results = _small_case()
    results.append(dict(results[0], image_id=999))
    with pytest.raises(DataError, match="image ids not in the ground truth: 999"):
        coco_evaluate(gt, results)


def test_non_finite_score_and_wrong_mask_size_are_errors() -> None:
    gt, results = _small_case()
    bad = copy.deepcopy(results)
    bad[1]["score"] = float("nan")
    with pytest.raises(DataError, match=r"result 1 .*score must be a finite number"):
        coco_evaluate(gt, bad)
    bad = copy.deepcopy(results)
    bad[0]["segmentation"] = cases._rle(np.ones((7, 9), dtype=np.uint8))
    with pytest.raises(DataError, match=r"result 0 .*RLE size \[7, 9\] differs"):
        coco_evaluate(gt, bad, "segm")


def test_unknown_categories_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    gt, results = _small_case()
    results.append(dict(results[0], category_id=555))
    gt["annotations"].append(dict(gt["annotations"][0], id=9999, category_id=556))
    with caplog.at_level(logging.WARNING):
        _assert_equal_to_pycocotools(gt, results, "segm")  # pycocotools drops them silently
    assert "category_id 555" in caplog.text and "annotation 9999 (category_id 556)" in caplog.text


def test_bad_ground_truth_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.json' is empty"):
        coco_evaluate(empty, [])
    gt, results = _small_case()
    gt["annotations"].append(dict(gt["annotations"][0]))
    with pytest.raises(DataError, match=f"annotation id {gt['annotations'][0]['id']} appears"):
        coco_evaluate(gt, results)
    with pytest.raises(InvalidInputError, match="iou_type must be one of"):
        coco_evaluate(gt, results, "keypoints")


def test_missing_pycocotools_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    gt, results = _small_case()
    with pytest.raises(ImportError, match=r"pip install pycocotools"):
        coco_evaluate(gt, results)


def test_merged_shards_equal_one_evaluator() -> None:
    """What ``sync`` does across processes: shards merged give the whole set's numbers."""
    gt, results = cases.make_case(6)
    targets, predictions = _targets_and_predictions(gt, results)
    whole = CocoEvaluator(num_classes=len(gt["categories"]))
    whole.update(predictions, targets)
    shards = [CocoEvaluator(num_classes=len(gt["categories"])) for _ in range(2)]
    for i, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        shards[i % 2].update([p], [t])
    merged = shards[0].merge(shards[1])
    assert merged.num_images == whole.num_images == len(targets)
    assert merged.compute() == whole.compute()
    with pytest.raises(InvalidInputError, match="image ids"):
        merged.merge(whole)
    merged.sync()  # outside torch.distributed: a no-op
    assert merged.compute() == whole.compute()


def test_box_iou_combos_equals_pycocotools_bit_for_bit() -> None:
    from pixelseg.metrics.coco import box_iou_combos

    rng = np.random.default_rng(3)
    # Random, touching, nested, zero-width and identical boxes; some ground truths crowds.
    dt = np.round(rng.uniform(0, 40, size=(30, 4)), 2)
    gt = np.round(rng.uniform(0, 40, size=(20, 4)), 2)
    gt[0] = dt[0]
    gt[1] = [dt[1, 0] + dt[1, 2], dt[1, 1], 5.0, 5.0]  # touches dt[1] on its right edge
    dt[2, 2] = 0.0
    gt[3] = [dt[3, 0] + 1, dt[3, 1] + 1, dt[3, 2] / 3, dt[3, 3] / 3]  # inside dt[3]
    crowd = rng.random(20) < 0.3
    ref = np.asarray(mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(int).tolist()))
    d, g = (a.reshape(-1) for a in np.meshgrid(np.arange(30), np.arange(20), indexing="ij"))
    ours = box_iou_combos(dt, gt, crowd, d, g).reshape(30, 20)
    assert np.array_equal(ours, ref)  # not allclose: the same float operations


def test_matching_in_small_chunks_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Large evaluations are matched chunk by chunk to bound memory; chunks must not change a bit.
    import pixelseg.metrics.coco_match as coco_match

    gt, results = cases.make_case(5)
    whole = coco_accumulate(gt, results, "segm")
    monkeypatch.setattr(coco_match, "_CHUNK_ELEMENTS", 1)  # every pair its own chunk
    chunked = coco_accumulate(gt, results, "segm")
    assert np.array_equal(whole["precision"], chunked["precision"])
    assert np.array_equal(whole["recall"], chunked["recall"])


def test_multi_polygon_and_single_polygon_ground_truth_equal_pycocotools() -> None:
    # Single polygons take a batched path, several polygons per object the general one.
    square = [[2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]]
    two = [[20.0, 20.0, 28.0, 20.0, 28.0, 28.0], [30.0, 30.0, 38.0, 30.0, 38.0, 38.0, 30.0, 38.0]]
    gt = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 48, "width": 40} for i in (1, 2)],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image,
                "category_id": 1,
                "segmentation": seg,
                "area": float(
                    mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(seg, 48, 40)))
                ),
                "bbox": [0.0, 0.0, 1.0, 1.0],
                "iscrowd": 0,
            }
            for n, (image, seg) in enumerate([(1, square), (1, two), (2, two), (2, square)])
        ],
    }
    results = []
    for image in (1, 2):
        for seg, score in ((square, 0.9), (two, 0.6)):
            shifted = [[v + 1.0 for v in poly] for poly in seg]
            rle = mask_utils.merge(mask_utils.frPyObjects(shifted, 48, 40))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append(
                {"image_id": image, "category_id": 1, "segmentation": rle, "score": score}
            )
    _assert_equal_to_pycocotools(gt, results, "segm")
