"""Trainer hooks: a progress bar, a CSV log and TensorBoard events.

A callback is any object with some of ``on_train_start``, ``on_step``, ``on_validation``,
``on_epoch_end`` and ``on_train_end``; the trainer calls the ones it has. Tests use the
same hooks to stop a run at a chosen moment.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CSVLogger", "Callback", "ProgressBar", "TensorBoardLogger"]


class Callback:
    """No-op base; override what you need."""

    def on_train_start(self, trainer: Any) -> None: ...
    def on_step(self, trainer: Any, logs: dict[str, float]) -> None: ...
    def on_validation(self, trainer: Any, metrics: dict[str, Any]) -> None: ...
    def on_epoch_end(self, trainer: Any) -> None: ...
    def on_train_end(self, trainer: Any) -> None: ...


class ProgressBar(Callback):
    """Training progress on stderr: loss, learning rate and images per second.

    On a terminal, a tqdm bar per epoch. Otherwise (a log file, a CI job) every carriage-return
    update of a bar would become a line of the log, so plain lines instead: one per epoch
    (epoch, steps, mean loss, lr, images/s) and at most one every ``interval_s`` seconds
    during an epoch. Writing to stderr, not logging, is this callback's job: it is the
    progress display, switched on by ``train.progress``.
    """

    def __init__(
        self, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock  # injectable so tests need not wait
        self._bar = None
        self._plain: bool | None = None  # decided on first use, from sys.stderr then
        self._steps = 0
        self._loss_sum = 0.0
        self._logs: dict[str, float] = {}
        self._last_line = 0.0

    def _is_plain(self) -> bool:
        if self._plain is None:
            isatty = getattr(sys.stderr, "isatty", None)
            self._plain = not (callable(isatty) and isatty())
        return self._plain

    def on_step(self, trainer: Any, logs: dict[str, float]) -> None:
        if self._is_plain():
            self._plain_step(trainer, logs)
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=trainer.steps_per_epoch,
                initial=trainer.state.batch_in_epoch - 1,  # this step is counted below
                desc=f"epoch {trainer.state.epoch + 1}",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
        self._bar.set_postfix(
            loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", img_s=f"{logs['images_per_s']:.1f}"
        )
        self._bar.update(1)

    def _plain_step(self, trainer: Any, logs: dict[str, float]) -> None:
        now = self._clock()
        if self._steps == 0:
            self._last_line = now
        self._steps += 1
        self._loss_sum += logs["loss"]
        self._logs = logs
        if trainer.state.batch_in_epoch >= trainer.steps_per_epoch:
            self._write_plain(trainer)
            self._steps, self._loss_sum = 0, 0.0
        elif now - self._last_line >= self.interval_s:
            self._write_plain(trainer)
            self._last_line = now

    def _write_plain(self, trainer: Any, note: str = "") -> None:
        """One line for the steps of the current epoch seen so far (it is still running)."""
        state, logs = trainer.state, self._logs
        print(
            f"epoch {state.epoch + 1}: {note}{state.batch_in_epoch}/{trainer.steps_per_epoch} "
            f"steps, mean loss {self._loss_sum / self._steps:.4f}, lr {logs['lr']:.2e}, "
            f"{logs['images_per_s']:.1f} images/s",
            file=sys.stderr,
            flush=True,
        )

    def _flush_stopped_epoch(self, trainer: Any) -> None:
        # A run that stops mid-epoch (time budget, iteration count) gets its epoch line too.
        if self._steps:
            self._write_plain(trainer, note="stopped after ")
            self._steps, self._loss_sum = 0, 0.0

    def on_epoch_end(self, trainer: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._flush_stopped_epoch(trainer)

    def on_validation(self, trainer: Any, metrics: dict[str, Any]) -> None:
        # A task with many metrics (24 COCO stats) names the few worth a progress line.
        shown = getattr(getattr(trainer, "task", None), "progress_metrics", None)
        summary = ", ".join(
            f"{key} {value:.4f}"
            for key, value in metrics.items()
            if isinstance(value, float)
            and not math.isnan(value)
            and (shown is None or key in shown or key == "val_loss")
        )
        # After a stop inside an epoch (a time or iteration budget), the weights validated
        # are those of that unfinished epoch, which is the one to name.
        state = trainer.state
        epoch = state.epoch + (1 if getattr(state, "batch_in_epoch", 0) else 0)
        line = f"epoch {epoch}: {summary}"
        if self._is_plain():
            self._flush_stopped_epoch(trainer)  # before the metrics it led to
            print(line, file=sys.stderr, flush=True)
            return
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    on_train_end = on_epoch_end


class CSVLogger(Callback):
    """Appends one row per epoch to ``log.csv``: epoch, iteration, mean loss, lr, speed, the
    task's validation metrics (``metric_names``, as the task names them) and ``val_loss``.

    Appending (not rewriting) keeps the history of a resumed run in one file; a resumed run
    first drops the rows written after its checkpoint (a kill between a row and the save),
    so that the epochs it repeats appear once. A fresh run into the same folder starts a new
    file, as it replaces the checkpoints there.
    """

    def __init__(self, path: str | Path, metric_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.metrics = (*metric_names, "val_loss")
        self.columns = (
            "epoch",
            "iteration",
            "train_loss",
            "lr",
            "images_per_s",
            *self.metrics,
            "seconds",
        )
        self._pending: dict[str, Any] = {}

    def on_train_start(self, trainer: Any) -> None:
        state = trainer.state
        fresh = state.epoch == 0 and state.iteration == 0 and state.batch_in_epoch == 0
        if fresh:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            self._drop_rows_after(state.iteration)

    def _drop_rows_after(self, iteration: int) -> None:
        with self.path.open(newline="") as stream:
            reader = csv.DictReader(stream)
            fields, rows = reader.fieldnames, list(reader)
        kept = [row for row in rows if int(row.get("iteration") or 0) <= iteration]
        if fields is None or len(kept) == len(rows):
            return
        with self.path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)

    def on_validation(self, trainer: Any, metrics: dict[str, Any]) -> None:
        self._pending.update({k: metrics.get(k) for k in self.metrics})

    def on_epoch_end(self, trainer: Any) -> None:
        row = {
            "epoch": trainer.state.epoch,
            "iteration": trainer.state.iteration,
            "train_loss": trainer.epoch_loss,
            "lr": trainer.current_lr,
            "images_per_s": trainer.epoch_images_per_s,
            "seconds": round(trainer.elapsed, 2),
            **self._pending,
        }
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        self._pending = {}


class TensorBoardLogger(Callback):
    """Scalars for TensorBoard: step loss and LR, and validation metrics per epoch."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer = None

    def _get(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def on_step(self, trainer: Any, logs: dict[str, float]) -> None:
        writer = self._get()
        writer.add_scalar("train/loss", logs["loss"], trainer.state.iteration)
        writer.add_scalar("train/lr", logs["lr"], trainer.state.iteration)

    def on_validation(self, trainer: Any, metrics: dict[str, Any]) -> None:
        writer = self._get()
        for key, value in metrics.items():
            if isinstance(value, float) and not math.isnan(value):
                writer.add_scalar(f"val/{key}", value, trainer.state.iteration)

    def on_train_end(self, trainer: Any) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
