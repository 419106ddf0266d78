from __future__ import annotations

import math

import pytest
import torch

from pixelseg import losses
from pixelseg.tasks.base import Task
from pixelseg.tasks.semantic import SemanticTask, mask_like


def make_task(**kwargs):
    return SemanticTask(3, losses.create("ce", ignore_index=255), ignore_index=255, **kwargs)


def test_is_a_task():
    assert isinstance(make_task(), Task)


def test_deep_supervision_loss_is_weighted_sum():
    torch.manual_seed(0)
    outputs = [torch.randn(2, 3, 4, 4) for _ in range(3)]
    batch = {"mask": torch.randint(0, 3, (2, 4, 4))}
    ce = losses.create("ce", ignore_index=255)
    single = [float(ce(o, batch["mask"])) for o in outputs]
    task = make_task(deep_supervision_weights=[0.2, 0.3, 0.5])
    expected = 0.2 * single[0] + 0.3 * single[1] + 0.5 * single[2]
    assert float(task.loss(outputs, batch)) == pytest.approx(expected, rel=1e-6)
    assert float(make_task().loss(outputs, batch)) == pytest.approx(sum(single) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="2 values but the model returned 3"):
        make_task(deep_supervision_weights=[0.5, 0.5]).loss(outputs, batch)


def test_predict_multiclass_binary_and_list():
    logits = torch.tensor([[[[0.1, 2.0]], [[0.5, -1.0]], [[0.0, 0.0]]]])  # [1, 3, 1, 2]
    assert make_task().predict(logits).tolist() == [[[1, 0]]]
    assert make_task().predict([torch.zeros_like(logits), logits]).tolist() == [[[1, 0]]]
    binary = SemanticTask(1, losses.create("ce"))
    assert binary.predict(torch.tensor([[[[0.3, -0.2]]]])).tolist() == [[[1, 0]]]
    assert binary.new_metrics().matrix.matrix.shape == (2, 2)


def test_per_image_scores_by_hand():
    target = torch.tensor([[[0, 0, 1, 255]], [[2, 2, 2, 2]]])
    prediction = torch.tensor([[[0, 1, 1, 2]], [[2, 2, 0, 0]]])
    rows = make_task().sample_rows(prediction, {"mask": target, "name": ["a", "b"]})
    assert [r["name"] for r in rows] == ["a", "b"]
    assert [r["score"] for r in rows] == [r["iou"] for r in rows]
    # image 0 (3 valid pixels): class 0 IoU 1/2, class 1 IoU 1/2 -> 0.5; Dice 2/3 each.
    assert rows[0]["pixel_accuracy"] == pytest.approx(2 / 3)
    assert rows[0]["iou"] == pytest.approx(0.5)
    assert rows[0]["dice"] == pytest.approx(2 / 3)
    # image 1: class 2 IoU 2/4, class 0 predicted only -> 0; mean 0.25.
    assert rows[1]["iou"] == pytest.approx(0.25)
    all_ignored = make_task().sample_rows(
        torch.zeros(1, 1, 2, dtype=torch.long), {"mask": torch.full((1, 1, 2), 255)}
    )
    assert math.isnan(all_ignored[0]["pixel_accuracy"]) and math.isnan(all_ignored[0]["iou"])


def test_gallery_item_draws_the_denormalised_image():
    image = torch.tensor([[[0.2, 0.8]], [[0.5, 0.0]], [[1.0, 0.4]]])
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    normalised = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    task = make_task(mean=mean, std=std)
    batch = {"image": normalised[None], "mask": torch.zeros(1, 1, 2, dtype=torch.long)}
    item = task.gallery_item(torch.ones(1, 1, 2, dtype=torch.long), batch, 0)
    assert item["image"].shape == (1, 2, 3)
    assert item["image"][0, 0].tolist() == [51, 128, 255]
    assert item["prediction"].tolist() == [[1, 1]] and item["target"].tolist() == [[0, 0]]


def test_logits_smaller_than_the_mask_meet_the_nearest_downsampled_mask():
    mask = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]])
    small = mask_like(mask, torch.zeros(1, 3, 2, 2))
    assert small.tolist() == [[[0, 1], [2, 255]]] and small.dtype == mask.dtype
    assert mask_like(mask, torch.zeros(1, 3, 4, 4)) is mask
    logits = torch.randn(1, 3, 2, 2)
    expected = float(losses.create("ce", ignore_index=255)(logits, small))
    assert float(make_task().loss(logits, {"mask": mask})) == pytest.approx(expected)
    # Larger (or mixed) sizes are not resized: the loss reports the mismatch.
    with pytest.raises(ValueError):
        make_task().loss(torch.randn(1, 3, 8, 8), {"mask": mask})
