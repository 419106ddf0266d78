"""The instance task's own logic, without a detector: batching, per-image counts, the COCO
accumulator against ``coco_evaluate``, and the files predict writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pixelseg.config import parse_config
from pixelseg.data.coco_write import instances_to_coco
from pixelseg.errors import ConfigError
from pixelseg.metrics.coco import coco_evaluate
from pixelseg.metrics.coco_stream import detections_to_coco_results
from pixelseg.tasks.instance import InstanceTask, match_counts


def _square(h: int, w: int, y: int, x: int, size: int) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.uint8)
    mask[y : y + size, x : x + size] = 1
    return mask


def _target(masks: list[torch.Tensor], labels: list[int], crowd: list[int] | None = None):
    stacked = torch.stack(masks) if masks else torch.zeros(0, 32, 32, dtype=torch.uint8)
    boxes = []
    for m in stacked:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": stacked,
        "iscrowd": torch.tensor(crowd or [0] * len(labels), dtype=torch.int64),
        "area": stacked.flatten(1).sum(1).double(),
        "image_id": 7,
    }


def _prediction(masks: list[torch.Tensor], labels: list[int], scores: list[float]):
    target = _target(masks, labels)
    return {
        "boxes": target["boxes"],
        "labels": target["labels"],
        "scores": torch.tensor(scores),
        "masks": target["masks"].float()[:, None] * 0.9,
    }


def test_match_counts_by_hand():
    a, b, c = _square(32, 32, 0, 0, 10), _square(32, 32, 15, 15, 10), _square(32, 32, 0, 20, 8)
    target = _target([a, b, c], [1, 1, 2])
    shifted = _square(32, 32, 1, 0, 10)  # IoU 90/110 with a
    prediction = _prediction(
        # found a; a duplicate of a (false); b with the wrong class (false); nothing on c
        [shifted, a, b],
        [1, 1, 2],
        [0.9, 0.8, 0.7],
    )
    counts = match_counts(prediction, target)
    assert counts == {"objects": 3, "detections": 3, "found": 1, "missed": 2, "false": 2}


def test_detections_on_crowds_are_neither_found_nor_false():
    crowd = _square(32, 32, 0, 0, 20)
    target = _target([crowd, _square(32, 32, 22, 22, 8)], [1, 1], crowd=[1, 0])
    prediction = _prediction([_square(32, 32, 0, 0, 18)], [1], [0.9])
    counts = match_counts(prediction, target)
    assert counts == {"objects": 1, "detections": 1, "found": 0, "missed": 1, "false": 0}


def test_training_batches_drop_crowds_and_eval_batches_keep_them():
    task = InstanceTask(["thing"])
    sample = {
        "image": torch.rand(3, 32, 32),
        **_target([_square(32, 32, 0, 0, 9), _square(32, 32, 12, 12, 9)], [1, 1], [1, 0]),
        "name": "one",
    }
    train = task.collate([sample, sample])
    assert [len(t["labels"]) for t in train["targets"]] == [1, 1]
    assert train["targets"][0]["masks"].shape == (1, 32, 32)
    (evaluation,) = task.collate_eval([sample])
    assert len(evaluation["targets"][0]["labels"]) == 2
    assert task.batch_size(train) == 2


def test_loss_is_the_sum_of_the_terms():
    task = InstanceTask(["thing"])
    terms = {"a": torch.tensor(1.5), "b": torch.tensor(0.25)}
    assert float(task.loss(terms, {})) == pytest.approx(1.75)


def test_metrics_equal_coco_evaluate():
    """The task's accumulator gives ``coco_evaluate``'s numbers on the same data written as
    COCO files, and per-class AP sits beside them."""
    rng = np.random.default_rng(0)
    task = InstanceTask(["a", "b"])
    metrics = task.new_metrics()
    targets, predictions = [], []
    for image_id in range(1, 6):
        masks = [_square(48, 48, int(rng.integers(0, 30)), int(rng.integers(0, 30)), 14)
                 for _ in range(3)]  # fmt: skip
        labels = [1, 2, 1]
        target = {**_target(masks, labels), "image_id": image_id}
        moved = [torch.roll(m, shifts=int(rng.integers(-3, 4)), dims=1) for m in masks[:2]]
        prediction = _prediction(moved, [1, 2], [float(rng.random()), float(rng.random())])
        targets.append(target)
        predictions.append(prediction)
    metrics.update(predictions, {"targets": targets})
    result = metrics.compute()
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    gt = instances_to_coco([t | {"name": f"im{t['image_id']}"} for t in targets], categories)
    results = [
        r
        for t, p in zip(targets, predictions, strict=True)
        for r in detections_to_coco_results(t["image_id"], p)
    ]
    expected = coco_evaluate(gt, results, "segm")
    assert result["mask_ap"] == expected["AP"] and result["mask_ap50"] == expected["AP50"]
    assert result["box_ap"] == coco_evaluate(gt, results, "bbox")["AP"]
    assert set(result["per_class"]["mask_ap"]) == {"a", "b"}
    assert set(task.metric_names) <= set(result)


def test_predict_files_and_merged_results(tmp_path):
    task = InstanceTask(["a", "b"], category_ids=[3, 9], score_threshold=0.5)
    image = np.full((32, 32, 3), 40, dtype=np.uint8)
    prediction = _prediction(
        [_square(32, 32, 2, 2, 10), _square(32, 32, 18, 18, 10)], [1, 2], [0.9, 0.3]
    )
    names = ["first", "second"]
    for name in names:
        paths = task.write_prediction(tmp_path, name, image, [prediction])
        assert paths == task.output_paths(tmp_path, name)
        assert all(p.is_file() for p in paths)
    overlay = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(paths[0]))
    assert overlay.shape == (32, 32, 3)
    assert (overlay[5, 5] != image[5, 5]).any()  # the shown detection is drawn
    assert (overlay[25, 25] == image[25, 25]).all()  # the one under the threshold is not
    results_path, images_path = task.finish_predictions(tmp_path, names)
    results = json.loads(results_path.read_text())
    # Every detection is kept for COCO (low scores matter to AP), category ids mapped back.
    assert [(r["image_id"], r["category_id"]) for r in results] == [(1, 3), (1, 9), (2, 3), (2, 9)]
    assert {"size", "counts"} <= set(results[0]["segmentation"])
    images = json.loads(images_path.read_text())
    assert images[1] == {"id": 2, "file_name": "second", "height": 32, "width": 32}


def test_config_pairs_datasets_with_tasks():
    parse_config({"task": "instance", "data": {"dataset": "pennfudan", "root": "x"}})
    with pytest.raises(ConfigError, match="'camvid' has no instance targets"):
        parse_config({"task": "instance", "data": {"dataset": "camvid", "root": "x"}})
    with pytest.raises(ConfigError, match="'pennfudan' has no semantic targets"):
        parse_config({"data": {"dataset": "pennfudan", "root": "x"}})
    with pytest.raises(ConfigError, match=r"data\.annotations has no effect"):
        parse_config({"task": "instance", "data": {"dataset": "pennfudan", "root": "x",
                                                   "annotations": "a.json"}})  # fmt: skip


def test_a_detector_under_the_semantic_task_says_which_task_it_needs():
    from pixelseg.tasks.semantic_data import build_datasets
    from pixelseg.tasks.semantic_setup import build_model

    config = parse_config(
        {"data": {"synthetic": {"num_train": 2, "num_val": 2, "size": 32}},
         "model": {"name": "maskrcnn"}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match="set task: instance"):
        build_model(config, build_datasets(config))
