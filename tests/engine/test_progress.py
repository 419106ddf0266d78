"""ProgressBar: a tqdm bar on a terminal, a few plain lines per epoch in a log."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

from pixelseg.engine.callbacks import ProgressBar


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_trainer(steps: int) -> SimpleNamespace:
    return SimpleNamespace(steps_per_epoch=steps, state=SimpleNamespace(epoch=0, batch_in_epoch=0))


def run_epoch(bar, trainer, clock, steps, seconds_per_step=1.0, loss=lambda i: 1.0) -> None:
    """Drive the hooks as Trainer does: on_step per batch, then validation and epoch end."""
    for i in range(steps):
        clock.now += seconds_per_step
        trainer.state.batch_in_epoch += 1
        bar.on_step(trainer, {"loss": loss(i), "lr": 1e-3, "images_per_s": 32.0})
    if trainer.state.batch_in_epoch >= trainer.steps_per_epoch:
        trainer.state.epoch += 1
        trainer.state.batch_in_epoch = 0
    bar.on_validation(trainer, {"miou": 0.5, "iou": [0.4, 0.6], "val_loss": float("nan")})
    bar.on_epoch_end(trainer)


def test_log_gets_few_plain_lines(monkeypatch):
    stderr = io.StringIO()  # not a terminal, as when stderr is redirected to a file
    monkeypatch.setattr(sys, "stderr", stderr)
    clock, trainer = FakeClock(), fake_trainer(100)
    bar = ProgressBar(interval_s=30.0, clock=clock)
    run_epoch(bar, trainer, clock, 100, loss=lambda i: float(i))  # 100 s of steps
    text = stderr.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # Progress every 30 s, the epoch's line, its validation line.
    assert len(lines) == 5, lines
    assert lines[0].startswith("epoch 1: 31/100 steps, mean loss 15.0000")  # 30 s after step 1
    assert lines[3] == "epoch 1: 100/100 steps, mean loss 49.5000, lr 1.00e-03, 32.0 images/s"
    assert lines[4] == "epoch 1: miou 0.5000"


def test_fast_epochs_write_one_line_each_plus_validation(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    clock, trainer = FakeClock(), fake_trainer(100)
    bar = ProgressBar(interval_s=30.0, clock=clock)
    for _ in range(3):
        run_epoch(bar, trainer, clock, 100, seconds_per_step=0.01)
    bar.on_train_end(trainer)
    lines = sys.stderr.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "epoch 1: 100/100 steps",
        "epoch 1: miou 0.5000",
        "epoch 2: 100/100 steps",
        "epoch 2: miou 0.5000",
        "epoch 3: 100/100 steps",
        "epoch 3: miou 0.5000",
    ]


def test_a_run_stopped_mid_epoch_says_where(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    clock, trainer = FakeClock(), fake_trainer(100)
    bar = ProgressBar(interval_s=30.0, clock=clock)
    run_epoch(bar, trainer, clock, 40, seconds_per_step=0.1, loss=lambda i: 2.0)
    bar.on_train_end(trainer)
    lines = sys.stderr.getvalue().splitlines()
    assert lines[0].startswith("epoch 1: stopped after 40/100 steps, mean loss 2.0000")
    # The validation after the stop scored epoch 1's weights, and says so.
    assert lines[1] == "epoch 1: miou 0.5000" and len(lines) == 2


def test_terminal_keeps_the_tqdm_bar(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    clock, trainer = FakeClock(), fake_trainer(10)
    run_epoch(ProgressBar(clock=clock), trainer, clock, 10)
    text = terminal.getvalue()
    assert "\r" in text and "epoch 1" in text and "loss=" in text


def test_default_bar_writes_no_carriage_returns_into_a_log(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    trainer = fake_trainer(100)
    run_epoch(ProgressBar(), trainer, FakeClock(), 100, seconds_per_step=0.0)
    text = sys.stderr.getvalue()
    assert "\r" not in text and len(text.splitlines()) == 2
