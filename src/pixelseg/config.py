"""Experiment configuration: pydantic models that mirror the YAML file one to one.

One YAML file describes one experiment. It validates into :class:`ExperimentConfig`; an
unknown key is an error that names the key and the closest valid one, and ``key.sub=value``
overrides from the command line are applied to the raw mapping before validation, so they
are checked exactly like the file (the loading functions live in :mod:`pixelseg.config_io`,
the ``data`` section in :mod:`pixelseg.config_data`; both are re-exported here). Plain functions elsewhere build objects from these models
(``build_model(cfg.model)``); nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pixelseg.config_data import DataConfig, SyntheticConfig, _Section
from pixelseg.errors import closest_match

__all__ = [
    "TASK_DATASETS",
    "TASK_NAMES",
    "TASK_SECTIONS",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LossConfig",
    "LossTerm",
    "ModelConfig",
    "OptimizerConfig",
    "PanopticConfig",
    "PhantomConfig",
    "PredictConfig",
    "SchedulerConfig",
    "SyntheticConfig",
    "TrainConfig",
    "VolumetricConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "parse_config",
]


class ModelConfig(_Section):
    """Arguments of :func:`pixelseg.models.create` (num_classes comes from the data); for
    task volumetric, of :func:`pixelseg.models.volumetric.create_volumetric` (``unet3d``,
    or a 2D model run on slices)."""

    name: str = "unet"
    encoder: str | None = None
    encoder_weights: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class LossTerm(_Section):
    """One term of the weighted loss sum: ``(name, weight, options)``."""

    name: str = "ce"
    weight: float = Field(1.0, ge=0.0)
    options: dict[str, Any] = Field(default_factory=dict)


class LossConfig(_Section):
    """Loss terms plus optional class weights computed from the training label counts."""

    terms: list[LossTerm] = Field(default_factory=lambda: [LossTerm()])
    class_weights: Literal["inverse", "sqrt_inverse", "enet", "median_frequency"] | None = None
    deep_supervision_weights: list[float] | None = None


class OptimizerConfig(_Section):
    name: Literal["adamw", "sgd", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    betas: tuple[float, float] = (0.9, 0.999)


class SchedulerConfig(_Section):
    name: Literal["none", "poly", "cosine", "step", "plateau"] = "poly"
    warmup_iters: int = Field(0, ge=0)
    warmup_factor: float = Field(0.001, gt=0.0, le=1.0)
    power: float = Field(0.9, gt=0.0)
    min_lr: float = Field(0.0, ge=0.0)
    step_size: int = Field(30, ge=1)
    gamma: float = Field(0.1, gt=0.0)
    patience: int = Field(5, ge=0)
    # With train.max_minutes, poly and cosine decay over the time budget (estimated from the
    # measured step time) when it ends before the epochs/iterations would.
    fit_budget: bool = True


class TrainConfig(_Section):
    """The training loop: length, optimisation, precision, validation and stopping."""

    epochs: int | None = Field(20, ge=1)
    iterations: int | None = Field(None, ge=1)
    # Budget of training time; validation time is not counted.
    max_minutes: float | None = Field(None, gt=0.0)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    grad_clip: float | None = Field(None, gt=0.0)
    accumulate: int = Field(1, ge=1)
    # Validate, select and save an exponential moving average of the weights (e.g. 0.999;
    # warmed up, so it suits short runs too); None trains and saves the raw weights only.
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    # auto: bf16/fp16 autocast on CUDA, fp32 on CPU; bf16_if_native: bf16 autocast where the
    # device computes bf16 in hardware (CUDA, or a CPU with AVX512-BF16/AMX), else fp32.
    amp: Literal["auto", "off", "bf16", "fp16", "bf16_if_native"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    val_every: int = Field(1, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    # None: the task's own (semantic: miou; instance: mask_ap); best_mode None: the task's
    # direction for its metrics, "min" for val_loss.
    best_metric: str | None = None
    best_mode: Literal["max", "min"] | None = None
    early_stopping_patience: int | None = Field(None, ge=1)
    early_stopping_min_delta: float = Field(0.0, ge=0.0)
    deterministic: bool = True
    progress: bool = True
    tensorboard: bool = True
    # Several processes (torchrun): data.batch_size is per process. The learning rate is
    # multiplied by the number of processes (linear) or its square root (sqrt), or left as
    # configured (none). sync_batchnorm shares BatchNorm statistics across GPUs (CUDA
    # only); find_unused_parameters lets DDP skip parameters a forward pass did not use.
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False
    dist_timeout_minutes: float = Field(10.0, gt=0.0)

    @model_validator(mode="after")
    def _check_length(self) -> TrainConfig:
        if self.epochs is None and self.iterations is None:
            raise ValueError("train needs train.epochs or train.iterations")
        return self


#: The task plug-ins (``pixelseg.tasks.TASKS`` has the same names; a test keeps them equal).
#: Spelled out here so that the config validates without importing torch.
TASK_NAMES: tuple[str, ...] = ("semantic", "instance", "panoptic", "volumetric")

#: The ``data.dataset`` sources each task reads (synthetic shapes serve every task).
TASK_DATASETS: dict[str, tuple[str, ...]] = {
    "semantic": ("synthetic", "folder", "camvid", "voc", "membrane"),
    "instance": ("synthetic", "pennfudan", "coco"),
    "panoptic": ("synthetic", "coco_panoptic"),
    "volumetric": ("synthetic", "msd", "nifti"),
}

#: Sections that only some tasks read (the rest serve every task). Setting one for a task
#: that ignores it is an error naming the task, not a silent no-op.
TASK_SECTIONS: dict[str, tuple[str, ...]] = {
    "loss": ("semantic", "volumetric"),
    "panoptic": ("panoptic",),
    "volumetric": ("volumetric",),
}


def _window(value: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if value is not None and (not value or any(v < 1 for v in value)):
        raise ValueError(f"a window needs one positive size per spatial dimension, got {value}")
    return value


class EvalConfig(_Section):
    gallery_size: int = Field(8, ge=0)
    per_image: bool = True
    # Tile size, one per spatial dimension (e.g. [512, 512], or [96, 96, 96] for volumes);
    # None scores whole images.
    window: tuple[int, ...] | None = None
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    tta: bool = False

    _check_window = field_validator("window")(_window)


class PredictConfig(_Section):
    window: tuple[int, ...] | None = None
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    tta: bool = False
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0)

    _check_window = field_validator("window")(_window)


class PanopticConfig(_Section):
    """How a panoptic model's instances and semantic map are fused (detectron2's rules and
    defaults; see :func:`pixelseg.inference.fuse_panoptic`)."""

    # Instances scoring below this are dropped.
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    # An instance whose pixels are already taken by more than this fraction is dropped.
    overlap_threshold: float = Field(0.5, ge=0.0, le=1.0)
    # Stuff regions smaller than this many pixels are dropped (detectron2's 4096 suits
    # 800-pixel images; scale it with the image area).
    stuff_area_threshold: int = Field(4096, ge=0)
    # Instance mask probabilities at or above this are the instance's pixels.
    mask_threshold: float = Field(0.5, ge=0.0, le=1.0)


class PhantomConfig(_Section):
    """Synthetic CT phantoms, the volumetric task's embedded data (see
    :func:`pixelseg.medical.phantom.make_phantom`); shapes in voxels (i, j, k)."""

    num_train: int = Field(12, ge=1)
    num_val: int = Field(4, ge=1)
    shape: tuple[int, int, int] = (72, 72, 48)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.5)
    noise_hu: float = Field(25.0, ge=0.0)
    num_nodules: tuple[int, int] = (1, 4)
    nodule_mm: tuple[float, float] = (4.0, 20.0)


class VolumetricConfig(_Section):
    """3D training and inference: preprocessing, patches and sliding windows."""

    # Patch (and sliding window) size in model axis order (k, j, i) = (D, H, W).
    patch_size: tuple[int, int, int] = (48, 48, 48)
    # Patches drawn per epoch, and the share centred on a foreground voxel (nnU-Net: 1/3).
    samples_per_epoch: int = Field(64, ge=1)
    foreground_fraction: float = Field(0.33, ge=0.0, le=1.0)
    # Intensities: a CT window (preset name or [center, width] in HU), z-score, percentile
    # (0.5-99.5) scaling, or none.
    intensity: Literal["window", "zscore", "percentile", "none"] = "window"
    window: str | tuple[float, float] = "lung"
    # Resample every volume to this spacing (mm along i, j, k) before anything else.
    spacing: tuple[float, float, float] | None = None
    # Sliding-window inference: overlap, windows per forward pass, Gaussian blending, flip
    # TTA and an output memory budget (None: no limit).
    overlap: float = Field(0.5, ge=0.0, lt=1.0)
    sw_batch_size: int = Field(2, ge=1)
    tta: bool = False
    memory_budget_mb: float | None = Field(None, gt=0.0)
    # Predictions: keep only the largest connected component per class, and/or only what
    # lies inside the lungs (lung extraction from the CT).
    largest_component: bool = False
    restrict_to_lung: bool = False
    # The normalised surface Dice tolerance in mm.
    nsd_tolerance_mm: float = Field(1.0, ge=0.0)
    # A folder of preprocessed cases (pixelseg.medical.case_cache), read memory-mapped so
    # that CT datasets need not fit in memory; shared by runs with the same preprocessing,
    # like MONAI's PersistentDataset(cache_dir=...). None: every case in memory.
    cache_dir: str | None = None
    phantom: PhantomConfig = PhantomConfig()

    @field_validator("cache_dir")
    @classmethod
    def _cache_dir_named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("volumetric.cache_dir must name a folder (or be null: no cache)")
        return value


class ExperimentConfig(_Section):
    """One experiment: the root of the YAML file."""

    name: str = "experiment"
    output_dir: str = "runs/experiment"
    seed: int = 0
    task: str = "semantic"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    predict: PredictConfig = PredictConfig()
    panoptic: PanopticConfig = PanopticConfig()
    volumetric: VolumetricConfig = VolumetricConfig()

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASK_NAMES:
            hint = closest_match(value, TASK_NAMES)
            did_you_mean = f"; did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"unknown task {value!r}{did_you_mean} (tasks: {', '.join(TASK_NAMES)})"
            )
        return value

    @model_validator(mode="after")
    def _dataset_of_the_task(self) -> ExperimentConfig:
        datasets = TASK_DATASETS.get(self.task)  # a task not listed decides in its plug-in
        if datasets is not None and self.data.dataset not in datasets:
            raise ValueError(
                f"data.dataset {self.data.dataset!r} has no {self.task} targets; task "
                f"{self.task!r} reads {', '.join(datasets)}"
            )
        return self

    @model_validator(mode="after")
    def _sections_of_the_task(self) -> ExperimentConfig:
        for section, tasks in TASK_SECTIONS.items():
            default = type(self).model_fields[section].get_default(call_default_factory=True)
            if self.task not in tasks and getattr(self, section) != default:
                raise ValueError(
                    f"section {section!r} is read only by the task(s) {', '.join(tasks)}; "
                    f"task {self.task!r} would ignore it"
                )
        return self


# Loading lives in its own module; imported last, since it builds on the schema above.
from pixelseg.config_io import (  # noqa: E402
    apply_overrides,
    dump_config,
    load_config,
    parse_config,
)
