"""End-to-end training on tiny synthetic data: exact resume, NaN stop, AMP on CPU."""

from __future__ import annotations

import csv

import pytest
import torch

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint, save_checkpoint
from pixelseg.config import parse_config
from pixelseg.errors import TrainingDivergedError

pytestmark = pytest.mark.slow


def tiny_config(tmp_path, workers=0, **train):
    return parse_config(
        {
            "output_dir": str(tmp_path / "run"),
            "seed": 3,
            "data": {
                "synthetic": {"num_train": 12, "num_val": 4, "size": 32},
                "batch_size": 4,
                "num_workers": workers,
                "augment": [{"name": "hflip", "p": 0.5}],
            },
            "model": {"name": "unet", "options": {"base_channels": 4}},
            "loss": {"terms": [{"name": "ce"}, {"name": "dice", "weight": 0.5}]},
            "train": {
                "epochs": 4,
                "optimizer": {"lr": 0.01},
                "scheduler": {"name": "cosine", "warmup_iters": 2},
                "progress": False,
                "tensorboard": False,
                **train,
            },
        }
    )


class StopAt:
    """Simulates a kill: raises as soon as the given epoch starts its first step."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_step(self, trainer, logs):
        if trainer.state.epoch == self.epoch:
            raise KeyboardInterrupt


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_continues_exactly(tmp_path):
    straight = tiny_config(tmp_path / "a")
    workflows.train(straight)
    interrupted = tiny_config(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        workflows.train(interrupted, callbacks=[StopAt(epoch=2)])
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt")["state"]["epoch"] == 2
    workflows.train(interrupted, resume=True)
    a = _weights(tmp_path / "a" / "run" / "last.pt")
    b = _weights(tmp_path / "b" / "run" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with open(tmp_path / "b" / "run" / "log.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert (tmp_path / "b" / "run" / "config.yaml").is_file()
    assert (tmp_path / "b" / "run" / "best.pt").is_file()


@pytest.mark.parametrize("workers", [0, 2])
def test_iteration_mode_with_mid_epoch_checkpoints_resumes_exactly(tmp_path, workers):
    """Mid-epoch resume, also with worker processes doing the (seeded) augmentation."""
    a = tiny_config(tmp_path / "a", workers, epochs=None, iterations=7, checkpoint_every=2)
    workflows.train(a)

    class StopAtIteration:
        def on_step(self, trainer, logs):
            if trainer.state.iteration == 5:
                raise KeyboardInterrupt

    b = tiny_config(tmp_path / "b", workers, epochs=None, iterations=7, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        workflows.train(b, callbacks=[StopAtIteration()])
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt")["state"]["iteration"] == 4
    workflows.train(b, resume=True)
    wa, wb = (
        _weights(tmp_path / "a" / "run" / "last.pt"),
        _weights(tmp_path / "b" / "run" / "last.pt"),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt")["state"]["iteration"] == 7


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    class Poison:
        def on_step(self, trainer, logs):
            if trainer.state.epoch == 1 and trainer.state.batch_in_epoch == 1:
                with torch.no_grad():
                    for p in trainer.model.parameters():
                        p.fill_(float("nan"))

    config = tiny_config(tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, iteration 5 \(batch 2\)"):
        workflows.train(config, callbacks=[Poison()])
    kept = load_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_paths_run_on_cpu(tmp_path, amp):
    config = tiny_config(tmp_path, epochs=1, amp=amp, channels_last="on", grad_clip=1.0)
    metrics, run_dir = workflows.train(config)
    assert 0.0 <= metrics["miou"] <= 1.0
    payload = load_checkpoint(run_dir / "last.pt")
    assert (payload["scaler"] is not None) == (amp == "fp16")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_if_native_follows_the_cpu(tmp_path, monkeypatch, native):
    """bf16 autocast only where the CPU has bf16 in hardware; fp32 (no autocast) elsewhere."""
    from pixelseg.engine import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    config = tiny_config(tmp_path, epochs=1, amp="bf16_if_native", device="cpu")
    runtime = device.resolve_runtime(config.train)
    assert runtime.amp_dtype == (torch.bfloat16 if native else None)
    seen = []
    real = torch.autocast

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(device.torch, "autocast", spy)
    metrics, _ = workflows.train(config)
    assert 0.0 <= metrics["miou"] <= 1.0
    assert seen == ([torch.bfloat16] * len(seen) if native else []) and (bool(seen) == native)


def test_early_stopping_and_accumulation(tmp_path):
    config = tiny_config(
        tmp_path,
        epochs=30,
        accumulate=2,
        early_stopping_patience=1,
        early_stopping_min_delta=1.0,  # nothing improves by a whole mIoU point: stop at once
    )
    workflows.train(config)
    state = load_checkpoint(tmp_path / "run" / "last.pt")["state"]
    assert state["epoch"] == 2 and state["finished"]
    # 3 batches per epoch: a step after batch 2 and one for the leftover batch 3.
    assert state["iteration"] == 2 * 2


class RecordLR:
    def __init__(self):
        self.lrs = []

    def on_step(self, trainer, logs):
        self.lrs.append(logs["lr"])


@pytest.mark.parametrize("fit_budget", [True, False])
def test_time_budget_ends_the_decay_when_it_ends_the_run(tmp_path, fit_budget):
    """A budget that cuts the epochs short still anneals poly to ~0 (unless told not to)."""
    config = tiny_config(
        tmp_path,
        epochs=100000,
        max_minutes=0.04,
        scheduler={"name": "poly", "warmup_iters": 2, "fit_budget": fit_budget},
    )
    recorder = RecordLR()
    workflows.train(config, callbacks=[recorder])
    assert len(recorder.lrs) > 10
    final = recorder.lrs[-1] / 0.01
    if fit_budget:
        assert final < 0.1
        assert max(recorder.lrs[5:]) <= 0.01
    else:
        assert final > 0.99


def test_one_training_loader_serves_every_epoch(tmp_path, monkeypatch):
    """Workers are not restarted each epoch: the run builds its training loader once."""
    from pixelseg.engine import trainer as trainer_module

    built = []

    class CountingLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("batch_sampler") is not None:
                built.append(self)

    monkeypatch.setattr(trainer_module, "DataLoader", CountingLoader)
    workflows.train(tiny_config(tmp_path, workers=1, epochs=3))
    assert len(built) == 1
    run = load_checkpoint(tmp_path / "run" / "last.pt")["state"]
    assert run["epoch"] == 3 and run["iteration"] == 9


def test_a_fresh_run_into_the_same_folder_starts_a_new_log(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    workflows.train(config)
    workflows.train(config)
    with open(tmp_path / "run" / "log.csv") as stream:
        assert [int(r["epoch"]) for r in csv.DictReader(stream)] == [1, 2]


def test_ema_is_validated_saved_as_the_model_and_resumed_exactly(tmp_path):
    # fp32 throughout (no bf16 autocast on a GPU), so that eval reproduces validation exactly.
    straight = tiny_config(tmp_path / "a", ema_decay=0.99, amp="off")
    metrics, run_dir = workflows.train(straight)
    payload = load_checkpoint(run_dir / "last.pt")
    assert payload["ema_updates"] == 4 * 3  # one per optimiser step: 3 a epoch
    raw, averaged = payload["train_model"], payload["model"]
    assert raw.keys() == averaged.keys()
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)
    # The validation metrics are the EMA's: eval of the saved "model" reproduces them (to
    # the last bit on the CPU; a GPU's kernels vary with the batch), and the raw weights
    # score further off.
    scores = workflows.eval_checkpoint(straight, run_dir / "last.pt", tmp_path / "eval")
    save_checkpoint({**payload, "model": raw}, tmp_path / "raw.pt")
    raw_scores = workflows.eval_checkpoint(straight, tmp_path / "raw.pt", tmp_path / "raw")
    off = abs(scores["miou"] - metrics["miou"])
    assert off < abs(raw_scores["miou"] - metrics["miou"])
    if not torch.cuda.is_available():
        assert off < 1e-6

    interrupted = tiny_config(tmp_path / "b", ema_decay=0.99, amp="off")
    with pytest.raises(KeyboardInterrupt):
        workflows.train(interrupted, callbacks=[StopAt(epoch=2)])
    workflows.train(interrupted, resume=True)
    resumed = load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert resumed["ema_updates"] == payload["ema_updates"]
    for key in ("model", "train_model"):
        for name in payload[key]:
            assert torch.equal(payload[key][name], resumed[key][name]), (key, name)


def test_resuming_a_run_without_ema_under_ema_names_the_setting(tmp_path):
    from pixelseg.errors import CheckpointError

    workflows.train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match=r"train\.ema_decay"):
        workflows.train(tiny_config(tmp_path, epochs=2, ema_decay=0.99), resume=True)
