"""Every task in the registry, with every model it trains, through the task's own hooks:
a batch, a training forward and loss with gradients, an eval forward, predictions, metric
updates that merge, rows for the report. Adding a task or a model tests it here."""

from __future__ import annotations

import pytest
import torch

from pixelseg.config import parse_config
from pixelseg.tasks import TASKS

CASES = [(task, model) for task, plugin in TASKS.items() for model in plugin.model_names()]


# What a task needs beyond the shared tiny config (volumes: one channel, small phantoms).
TASK_EXTRAS = {
    "volumetric": {
        "data": {"in_channels": 1},
        "volumetric": {
            "patch_size": [8, 16, 16],
            "samples_per_epoch": 2,
            "phantom": {"num_train": 2, "num_val": 2, "shape": [24, 24, 12],
                        "spacing": [6.0, 6.0, 10.0]},
        },
    },
}  # fmt: skip

# Small models where a task's defaults would be slow (the volumetric task runs the 2D
# models on every slice of its patches).
MODEL_EXTRAS = {
    ("volumetric", "unet3d"): {"options": {"depth": 2, "width": 4}},
    ("volumetric", "unet"): {"options": {"base_channels": 4}},
    ("volumetric", "unetpp"): {"options": {"base_channels": 4}},
    ("volumetric", "deeplabv3plus"): {"encoder": "mobilenet_v3_large",
                                      "options": {"aspp_channels": 8}},
    **{("volumetric", f"fcn{n}s"): {"encoder": "resnet18", "options": {"fc_channels": 8}}
       for n in (8, 16, 32)},
}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on one thread: on the shared 2-core machine two threads measured several
    times slower for these small convolutions, with the same results."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(task: str, model: str):
    raw = {
        "task": task,
        "seed": 0,
        "data": {"synthetic": {"num_train": 2, "num_val": 2, "size": 32}, "batch_size": 2},
        "model": {"name": model, **MODEL_EXTRAS.get((task, model), {})},
    }
    for section, values in TASK_EXTRAS.get(task, {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_config(raw)


def test_every_task_offers_models():
    assert all(TASKS[name].model_names() for name in TASKS)


@pytest.mark.parametrize(("task_name", "model_name"), CASES)
def test_model_through_its_task(task_name, model_name):
    torch.manual_seed(0)
    plugin = TASKS[task_name]
    config = tiny_config(task_name, model_name)
    bundle = plugin.build_data(config)
    model = plugin.build_model(config, bundle)
    task = plugin.build_task(config, bundle, plugin.train_extras(config, bundle, None))
    batch = task.collate([bundle.train[0], bundle.train[1]])
    assert task.batch_size(batch) == 2

    model.train()
    loss = task.loss(task.forward_train(model, batch), batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    model.eval()
    with torch.no_grad():
        (eval_batch,) = task.collate_eval([bundle.val[0], bundle.val[1]])
        prediction = task.predict(task.forward_eval(model, eval_batch))
        halves = [task.collate_eval([bundle.val[i]])[0] for i in (0, 1)]
        half_predictions = [task.predict(task.forward_eval(model, b)) for b in halves]
    whole, first, second = task.new_metrics(), task.new_metrics(), task.new_metrics()
    whole.update(prediction, eval_batch)
    first.update(half_predictions[0], halves[0])
    second.update(half_predictions[1], halves[1])
    once = whole.compute()
    merged = first.merge(second).compute()
    for name in task.metric_names:
        assert name in once and name in merged
        # Shards merged score like the whole set (what sync does across processes).
        assert merged[name] == pytest.approx(once[name], nan_ok=True, abs=1e-6)
    assert task.default_best_metric in task.metric_names
    rows = task.sample_rows(prediction, eval_batch)
    assert len(rows) == 2 and all({"name", "score"} <= set(row) for row in rows)
