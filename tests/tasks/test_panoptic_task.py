"""The panoptic task's own hooks: batching keeps crowds for PQ and drops them from the
detector's targets, the fusion of a perfect model's outputs scores PQ 1, metrics merge and
report per class, and the plug-in builds data, model and checkpoint metadata."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pixelseg.config import parse_config
from pixelseg.data import SyntheticPanoptic
from pixelseg.data.synthetic import PANOPTIC_CATEGORIES
from pixelseg.errors import CheckpointError, ConfigError, InvalidInputError
from pixelseg.inference.panoptic_fusion import FusionSettings
from pixelseg.tasks import TASKS, PanopticTask


def oracle_output(sample: dict, num_stuff: int = 2) -> dict[str, torch.Tensor]:
    """What a perfect Panoptic FPN returns for ``sample``: its thing masks at score 1 and
    semantic logits that put all weight on the true class (VOID: the things class)."""
    semantic = sample["semantic"].clone()
    semantic[semantic == 255] = 0
    logits = F.one_hot(semantic, num_stuff + 1).permute(2, 0, 1).float() * 20.0
    count = len(sample["labels"])
    return {
        "masks": sample["masks"].float()[:, None],
        "scores": torch.ones(count),
        "labels": sample["labels"],
        "boxes": sample["boxes"],
        "semantic": logits,
    }


def test_a_perfect_model_scores_pq_one_through_the_fusion():
    data = SyntheticPanoptic(6, size=64, seed=3, max_shapes=5)
    task = PanopticTask(PANOPTIC_CATEGORIES, fusion=FusionSettings(stuff_area_threshold=0))
    (batch,) = task.collate_eval([data[i] for i in range(6)])
    prediction = task.predict([oracle_output(data[i]) for i in range(6)])
    metrics = task.new_metrics()
    metrics.update(prediction, batch)
    scores = metrics.compute()
    assert scores["pq"] == pytest.approx(1.0) and scores["n"] == 5
    assert scores["pq_things"] == pytest.approx(1.0) and scores["pq_stuff"] == pytest.approx(1.0)
    rows = task.sample_rows(prediction, batch)
    assert [row["pq"] for row in rows] == pytest.approx([1.0] * 6)
    assert all(row["missed"] == row["false"] == 0 for row in rows)


def test_a_dropped_thing_costs_what_pq_says():
    # One image, one thing left out of the prediction: it is missed (FN); its pixels, which
    # the semantic map calls "things", are never pasted as stuff and stay VOID.
    data = SyntheticPanoptic(1, size=64, seed=1, min_shapes=2, max_shapes=2)
    sample = data[0]
    task = PanopticTask(PANOPTIC_CATEGORIES, fusion=FusionSettings(stuff_area_threshold=0))
    output = oracle_output(sample)
    output["scores"][0] = 0.1  # under the fusion's score threshold
    (batch,) = task.collate_eval([sample])
    rows = task.sample_rows(task.predict([output]), batch)
    assert rows[0]["missed"] == 1 and rows[0]["pq"] < 1.0


def test_metrics_per_class_marks_unseen_categories_nan():
    data = SyntheticPanoptic(2, size=64, seed=0)
    task = PanopticTask(PANOPTIC_CATEGORIES, fusion=FusionSettings(stuff_area_threshold=0))
    (batch,) = task.collate_eval([data[0], data[1]])
    metrics = task.new_metrics()
    metrics.update(task.predict([oracle_output(data[0]), oracle_output(data[1])]), batch)
    per_class = metrics.compute()["per_class"]
    assert set(per_class) == {c["name"] for c in PANOPTIC_CATEGORIES}
    seen = {s["category_id"] for i in (0, 1) for s in data[i]["segments_info"]}
    for category in PANOPTIC_CATEGORIES:
        entry = per_class[category["name"]]
        assert math.isnan(entry["pq"]) == (category["id"] not in seen)


def test_collate_drops_crowds_from_the_detector_targets_only():
    sample = SyntheticPanoptic(1, size=64, seed=2, min_shapes=2, max_shapes=2)[0]
    sample["iscrowd"] = torch.tensor([1] + [0] * (len(sample["labels"]) - 1))
    task = PanopticTask(PANOPTIC_CATEGORIES)
    train = task.collate([sample])["targets"][0]
    (evaluation,) = task.collate_eval([sample])
    assert len(train["labels"]) == len(sample["labels"]) - 1
    assert len(train["masks"]) == len(train["boxes"]) == len(train["labels"])
    assert torch.equal(train["semantic"], sample["semantic"])  # crowd pixels stay "things"
    assert len(evaluation["targets"][0]["labels"]) == len(sample["labels"])


def test_task_needs_things_and_stuff():
    with pytest.raises(InvalidInputError, match="1 thing and 0 stuff"):
        PanopticTask([{"id": 1, "name": "a", "isthing": 1}])


def test_plugin_builds_data_model_and_checkpoint_meta():
    plugin = TASKS["panoptic"]
    config = parse_config(
        {
            "task": "panoptic",
            "data": {"synthetic": {"num_train": 2, "num_val": 2, "size": 64}},
            "model": {"name": "panoptic_fpn", "encoder": "mobilenet_v3_large",
                      "options": {"fpn_channels": 32, "semantic_channels": 32,
                                  "min_size": 64, "max_size": 64}},
            "panoptic": {"score_threshold": 0.3, "stuff_area_threshold": 10},
        }
    )  # fmt: skip
    bundle = plugin.build_data(config)
    assert bundle.classes == ["circle", "square", "triangle", "stripes", "blotches"]
    model = plugin.build_model(config, bundle)
    assert (model.num_things, model.num_stuff) == (3, 2)
    meta = plugin.checkpoint_meta(config, bundle, {})
    assert meta["fusion"]["score_threshold"] == 0.3 and meta["task"] == "panoptic"
    task = plugin.task_from_checkpoint(meta, None)
    assert task.fusion.stuff_area_threshold == 10
    assert task.thing_category_ids == [1, 2, 3] and task.stuff_category_ids == [4, 5]
    plugin.check_checkpoint(meta, config, bundle, "ckpt")
    other = {**meta, "categories": [*meta["categories"][:-1], {"id": 5, "name": "x", "isthing": 0}]}
    with pytest.raises(CheckpointError, match="segments categories"):
        plugin.check_checkpoint(other, config, bundle, "ckpt")


def test_config_refuses_what_the_panoptic_task_cannot_read():
    with pytest.raises(ConfigError, match="has no panoptic targets"):
        parse_config({"task": "panoptic", "data": {"dataset": "pennfudan", "root": "x"}})
    with pytest.raises(ConfigError, match="read only by the task"):
        parse_config({"task": "instance", "panoptic": {"score_threshold": 0.3}})
    with pytest.raises(ConfigError, match="unknown panoptic model"):
        config = parse_config({"task": "panoptic", "model": {"name": "panoptc_fpn"}})
        plugin = TASKS["panoptic"]
        plugin.build_model(config, plugin.build_data(config))
