"""Resuming with a changed config, time budgets across a resume, and steps that must not
be taken (non-finite gradients), on tiny synthetic runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint
from pixelseg.config import parse_config
from pixelseg.engine.trainer import Trainer
from pixelseg.errors import CheckpointError, TrainingDivergedError

pytestmark = pytest.mark.slow


def tiny(tmp_path, batch_size=2, **train):
    """6 images in batches of 2: 3 steps an epoch."""
    return parse_config(
        {
            "output_dir": str(tmp_path / "run"),
            "seed": 1,
            "data": {
                "synthetic": {"num_train": 6, "num_val": 2, "size": 32},
                "batch_size": batch_size,
            },
            "model": {"name": "unet", "options": {"base_channels": 4}},
            "train": {
                "epochs": 1,
                "optimizer": {"lr": 0.01},
                "scheduler": {"name": "cosine", "warmup_iters": 1},
                "progress": False,
                "tensorboard": False,
                **train,
            },
        }
    )


def state_of(tmp_path, name="last.pt"):
    return load_checkpoint(tmp_path / "run" / name)


def test_a_finished_run_continues_when_given_more_epochs_and_decays_over_them(tmp_path):
    workflows.train(tiny(tmp_path, epochs=1))
    assert state_of(tmp_path)["state"]["stopped_by"] == "length"
    workflows.train(tiny(tmp_path, epochs=3, best_metric="val_loss"), resume=True)
    saved = state_of(tmp_path)
    assert saved["state"]["epoch"] == 3 and saved["state"]["finished"]
    # The cosine spans the 9 steps of 3 epochs now, not the first run's 3.
    assert saved["schedule"] == {"span": 9, "fitted": False}
    # best.pt is chosen by val_loss from the resume on: miou's best value was dropped.
    assert saved["state"]["best_metric"] == "val_loss:min"
    assert saved["state"]["best_epoch"] in (2, 3)


def test_a_budget_run_keeps_its_time_spent_across_a_resume(tmp_path):
    budget = tiny(tmp_path, epochs=50, max_minutes=0.0005)  # 0.03 s: one step spends it
    workflows.train(budget)
    first = state_of(tmp_path)["state"]
    assert first["stopped_by"] == "budget" and first["elapsed_seconds"] > 0
    workflows.train(budget, resume=True)  # the same budget is spent: nothing more to do
    assert state_of(tmp_path)["state"]["iteration"] == first["iteration"]
    workflows.train(tiny(tmp_path, epochs=2, max_minutes=10.0), resume=True)
    after = state_of(tmp_path)["state"]
    assert after["epoch"] == 2 and after["elapsed_seconds"] > first["elapsed_seconds"]


def test_resume_refuses_another_optimizer_or_batch_size_mid_epoch(tmp_path):
    workflows.train(tiny(tmp_path, epochs=None, iterations=2))  # 2 batches into epoch 1
    assert state_of(tmp_path)["state"]["batch_in_epoch"] == 2
    sgd = tiny(tmp_path, epochs=None, iterations=4, optimizer={"name": "sgd", "lr": 0.01})
    with pytest.raises(CheckpointError, match=r"train\.optimizer\.name 'adamw'"):
        workflows.train(sgd, resume=True)
    wider = tiny(tmp_path, batch_size=3, epochs=None, iterations=4)
    with pytest.raises(CheckpointError, match=r"data\.batch_size 2; resuming there with 3"):
        workflows.train(wider, resume=True)
    workflows.train(tiny(tmp_path, epochs=None, iterations=4), resume=True)
    assert state_of(tmp_path)["state"]["iteration"] == 4


def test_infinite_gradients_stop_before_the_weights_change(tmp_path):
    class Blow:
        def on_train_start(self, trainer):
            weight = next(trainer.model.parameters())
            weight.register_hook(
                lambda grad: grad * math.inf if trainer.state.iteration == 4 else grad
            )

    with pytest.raises(TrainingDivergedError, match=r"gradients became non-finite.*last\.pt"):
        workflows.train(tiny(tmp_path, epochs=3), callbacks=[Blow()])
    kept = state_of(tmp_path)
    assert kept["state"]["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_a_nan_loss_on_another_process_stops_this_one_before_its_step(tmp_path, monkeypatch):
    """In DDP every process raises at the same batch: one that raised alone would leave the
    others waiting in the gradient all-reduce. Here one process is told by the collective
    (``any_process``) that another's loss became NaN at the fifth step."""
    from pixelseg.engine.distributed import DistContext

    seen = {}

    class Watch:
        def on_train_start(self, trainer):
            seen["trainer"] = trainer

    def any_process(self, value):
        return value or seen["trainer"].state.iteration == 4

    monkeypatch.setattr(DistContext, "any_process", any_process)
    with pytest.raises(
        TrainingDivergedError,
        match=r"another process's loss became non-finite at epoch 2, iteration 5 \(batch 2\)",
    ):
        workflows.train(tiny(tmp_path, epochs=3), callbacks=[Watch()])
    assert state_of(tmp_path)["state"]["iteration"] == 3


def test_a_nan_validation_never_becomes_the_best(tmp_path, monkeypatch):
    values = iter([float("nan"), 0.25, 0.1])
    validate = Trainer.validate

    def scripted(self):
        return {**validate(self), "miou": next(values)}

    monkeypatch.setattr(Trainer, "validate", scripted)
    workflows.train(tiny(tmp_path, epochs=3))
    state = state_of(tmp_path)["state"]
    assert state["best_epoch"] == 2 and state["best_value"] == 0.25


def test_the_last_short_accumulation_window_is_averaged_over_its_own_batches():
    trainer = SimpleNamespace(train_cfg=SimpleNamespace(accumulate=2), steps_per_epoch=5)
    windows = [Trainer._window(trainer, position) for position in range(1, 6)]
    assert windows == [2, 2, 2, 2, 1]


def test_a_kill_between_the_log_row_and_the_checkpoint_leaves_no_duplicate_row(tmp_path):
    import csv

    class KillAfterTheRow:  # runs after the CSV logger's row, before last.pt is saved
        def on_epoch_end(self, trainer):
            if trainer.state.epoch == 2:
                raise KeyboardInterrupt

    config = tiny(tmp_path, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        workflows.train(config, callbacks=[KillAfterTheRow()])
    assert state_of(tmp_path)["state"]["epoch"] == 1
    workflows.train(config, resume=True)
    with open(tmp_path / "run" / "log.csv") as stream:
        assert [int(row["epoch"]) for row in csv.DictReader(stream)] == [1, 2, 3]
