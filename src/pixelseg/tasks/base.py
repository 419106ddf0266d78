"""The task interface: what the engine, the evaluator and the CLI need to know about a kind
of segmentation.

The engine runs one loop for every task. A task says how samples become a batch (any
structure: variable-length targets are fine), how the model is called on a batch in
training and in evaluation (it may pass targets), the loss (or that the model returned
it), post-processing into predictions, a fresh metric accumulator with its metric names
and default best metric, the per-sample rows and worst cases of the report, and how a
prediction is written to disk. The trainer, evaluator, loggers, CLI and checkpoint code ask
the task and never name a metric or a tensor layout.

A :class:`TaskPlugin` bundles a task with the functions that build it, its data and its
model from a config or a checkpoint; ``pixelseg.tasks.TASKS`` names every plug-in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor, nn
from torch.utils.data import Dataset

__all__ = ["DataBundle", "MetricAccumulator", "Task", "TaskPlugin"]


@runtime_checkable
class MetricAccumulator(Protocol):
    """Streaming metrics: add batches, combine partial results, then compute once.

    ``sync`` makes every process hold the totals over all processes (a sum for counts, a
    gather for per-sample results); it is a no-op outside ``torch.distributed``.
    """

    def update(self, prediction: Any, batch: Any) -> None: ...
    def merge(self, other: Any) -> Any: ...
    def sync(self, group: object | None = None) -> None: ...
    def compute(self) -> dict[str, Any]: ...


@runtime_checkable
class Task(Protocol):
    """What the engine calls; every method works on CPU and CUDA tensors alike."""

    #: The registry name, stored in checkpoints.
    name: str
    #: Scalar metrics :meth:`MetricAccumulator.compute` returns (``train.best_metric`` choices).
    metric_names: Sequence[str]
    default_best_metric: str
    best_mode: Literal["max", "min"]

    def collate(self, samples: list[Any]) -> Any:
        """Training batch from dataset samples."""
        ...

    def collate_eval(self, samples: list[Any]) -> list[Any]:
        """Evaluation batches from samples (a list: e.g. one batch per image size)."""
        ...

    def batch_size(self, batch: Any) -> int: ...

    def forward_train(self, model: nn.Module, batch: Any) -> Any:
        """The model's training-mode output on a batch (targets may be passed in)."""
        ...

    def forward_eval(self, predictor: Callable[..., Any], batch: Any) -> Any:
        """The eval-mode output of a model or any predictor callable on a batch."""
        ...

    def loss(self, output: Any, batch: Any) -> Tensor:
        """Scalar training loss from :meth:`forward_train`'s output."""
        ...

    def eval_loss(self, output: Any, batch: Any) -> Tensor | None:
        """Loss of an eval-mode output, or None where the task has none (detections)."""
        ...

    def predict(self, output: Any) -> Any:
        """Predictions from an eval-mode output (labels, detections, ...)."""
        ...

    def new_metrics(self) -> MetricAccumulator: ...

    def sample_rows(self, prediction: Any, batch: Any) -> list[dict[str, Any]]:
        """One report row per sample: ``name``, ``score`` (lower is worse) and scores."""
        ...

    def gallery_item(self, prediction: Any, batch: Any, index: int) -> dict[str, Any]:
        """What the worst-cases gallery keeps of sample ``index`` of a batch."""
        ...

    def write_report(
        self,
        out_dir: Path,
        metrics: dict[str, Any],
        accumulator: MetricAccumulator,
        rows: list[dict[str, Any]],
        worst: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Write the task's report files; returns the metrics as ``metrics.json`` holds them."""
        ...

    def summary(self, metrics: dict[str, Any]) -> str:
        """One line for the CLI."""
        ...

    def list_inputs(self, inputs: Sequence[str]) -> list[Path]:
        """The files ``predict`` reads from files, folders or glob patterns."""
        ...

    def read_input(self, path: Path) -> tuple[Any, Any]:
        """``(raw input as stored, batch of one for forward_eval)`` for ``predict``."""
        ...

    def output_paths(self, out_dir: Path, name: str) -> list[Path]:
        """The files :meth:`write_prediction` writes for an input named ``name``."""
        ...

    def write_prediction(self, out_dir: Path, name: str, raw: Any, prediction: Any) -> list[Path]:
        """Write one input's prediction; returns :meth:`output_paths`."""
        ...

    def finish_predictions(self, out_dir: Path, names: Sequence[str]) -> list[Path]:
        """After every input is written (on one process): files that span all inputs, such
        as one results file; ``names`` are the output names in input order."""
        ...


@dataclass
class DataBundle:
    """Datasets plus what the model and reports need to know about the labels.

    ``ignore_index`` is the label value the loss and metrics skip (the dataset's, or one
    given to invented pixels); ``train_stored`` is the training set without its transform
    (samples as stored, for counting labels); ``mean``/``std`` the input normalisation;
    ``split`` the train/validation split when it was drawn rather than fixed by the data
    (stems and, for group splits, which groups went where), which a run saves as
    ``splits.json`` so that ``eval`` and a resumed run reuse it; ``category_ids`` the
    source's own id of each label ``1..K`` (COCO category ids), for tasks that write them;
    ``categories`` the COCO panoptic categories (``id``, ``name``, ``isthing``) for tasks
    that tell things from stuff.
    """

    train: Dataset
    val: Dataset
    classes: list[str]
    colors: list[tuple[int, int, int]] | None
    ignore_index: int | None
    mean: list[float]
    std: list[float]
    train_stored: Dataset | None = None
    split: dict[str, Any] | None = None
    category_ids: list[int] | None = None
    categories: list[dict[str, Any]] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class TaskPlugin:
    """One kind of segmentation as application wiring needs it: plain functions that build
    its data, model and task from a config, and its task and predictor from a checkpoint.

    - ``build_data(config, split=None) -> DataBundle``: ``split`` is a saved
      ``DataBundle.split`` to reuse
    - ``build_model(config, bundle) -> nn.Module``
    - ``train_extras(config, bundle, saved) -> dict``: what a run computes once from its
      data and keeps in the checkpoint (class weights), taken from ``saved`` (the
      checkpoint being resumed, or None) when it holds them
    - ``build_task(config, bundle, extras, with_loss=True) -> Task``
    - ``checkpoint_meta(config, bundle, extras) -> dict``: JSON-able metadata that makes a
      checkpoint self-describing
    - ``task_from_checkpoint(payload, config_or_none) -> Task``
    - ``predictor_from_checkpoint(payload, device=, window=, overlap=, tta=) -> callable``
    - ``check_checkpoint(payload, config, bundle, where)``: refuse a checkpoint whose
      classes, channels or normalisation differ from the config's data
    - ``summary(metrics) -> str``: the CLI's one-line result
    - ``checkpoint_keys``: the metadata keys its checkpoints must hold
    - ``model_names() -> list``: the ``model.name`` values it trains (its contract test
      runs each through the task)
    - ``export_keys``: the checkpoint metadata an exported model's JSON sidecar carries, so
      that ``task_from_checkpoint(sidecar)`` rebuilds the task without the checkpoint;
      empty when the task has no ONNX export (yet)
    """

    name: str
    build_data: Callable[..., DataBundle]
    build_model: Callable[[Any, DataBundle], nn.Module]
    train_extras: Callable[[Any, DataBundle, dict[str, Any] | None], dict[str, Any]]
    build_task: Callable[..., Task]
    checkpoint_meta: Callable[[Any, DataBundle, dict[str, Any]], dict[str, Any]]
    task_from_checkpoint: Callable[[dict[str, Any], Any], Task]
    predictor_from_checkpoint: Callable[..., Any]
    check_checkpoint: Callable[[dict[str, Any], Any, DataBundle, str], None]
    summary: Callable[[dict[str, Any]], str]
    checkpoint_keys: tuple[str, ...] = ()
    model_names: Callable[[], list[str]] = list
    export_keys: tuple[str, ...] = ()
