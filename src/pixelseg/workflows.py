"""The jobs behind the CLI commands, callable from Python: train, evaluate, predict, demo.

Each is a plain function over the config and paths; the CLI only parses arguments and
calls one of these.
"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from pixelseg.build import build_datasets, build_model, build_task, checkpoint_meta, train_extras
from pixelseg.checkpoints import load_checkpoint, require_keys
from pixelseg.config import ExperimentConfig, apply_overrides, dump_config, parse_config
from pixelseg.engine.callbacks import CSVLogger, ProgressBar, TensorBoardLogger
from pixelseg.engine.device import move_to_device, resolve_device
from pixelseg.engine.distributed import from_environment, shutdown
from pixelseg.engine.evaluator import evaluate
from pixelseg.engine.sampling import seed_everything
from pixelseg.engine.trainer import Trainer
from pixelseg.errors import CheckpointError, InvalidInputError
from pixelseg.output_names import output_names, refuse_overwriting_inputs
from pixelseg.tasks import get_plugin

__all__ = [
    "demo",
    "demo_config",
    "eval_checkpoint",
    "export_model",
    "predict_files",
    "summary",
    "train",
]

log = logging.getLogger(__name__)


def summary(task: str, metrics: dict[str, Any]) -> str:
    """The task's one-line summary of ``metrics`` (empty when there are none)."""
    return get_plugin(task).summary(metrics) if metrics else ""


def _configure_threads(config: ExperimentConfig) -> None:
    import torch

    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def train(
    config: ExperimentConfig,
    out: str | Path | None = None,
    resume: str | Path | bool | None = None,
    callbacks: list[Any] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Train as configured; returns the last validation metrics and the run directory.

    ``resume=True`` continues from ``<run dir>/last.pt``; a path resumes from that file.
    """
    run_dir = Path(out) if out else Path(config.output_dir)
    resume_path = _resume_path(run_dir, resume)
    _configure_threads(config)
    dist = from_environment(
        resolve_device(config.train.device).type, config.train.dist_timeout_minutes
    )
    try:
        return _train(config, run_dir, resume_path, callbacks, dist)
    finally:
        shutdown(dist)


def _train(config, run_dir: Path, resume_path: Path | None, callbacks, dist) -> tuple[dict, Path]:
    seed_everything(config.seed)
    bundle = build_datasets(config, _resumed_split(run_dir, resume_path))
    model = build_model(config, bundle)
    saved = load_checkpoint(resume_path, require=()) if resume_path is not None else None
    extras = train_extras(config, bundle, saved)
    del saved
    task = build_task(config, bundle, extras)
    if dist.is_main:
        dump_config(config, run_dir / "config.yaml")
        if bundle.split is not None:
            write_split(bundle.split, run_dir)
        elif (run_dir / SPLIT_FILE).is_file():
            # Left by an earlier run in this directory: eval would score its split.
            log.info("removing %s: this run validates on a fixed set", run_dir / SPLIT_FILE)
            (run_dir / SPLIT_FILE).unlink()
    standard = [CSVLogger(run_dir / "log.csv", task.metric_names)]
    if config.train.tensorboard:
        standard.append(TensorBoardLogger(run_dir / "tensorboard"))
    if config.train.progress:
        standard.append(ProgressBar())
    trainer = Trainer(
        model,
        task,
        bundle.train,
        bundle.val,
        config,
        run_dir,
        checkpoint_meta(config, bundle, extras),
        callbacks=standard + list(callbacks or []),
        dist=dist,
    )
    metrics = trainer.fit(resume=resume_path)
    return metrics, run_dir


SPLIT_FILE = "splits.json"


def write_split(split: dict[str, Any], run_dir: Path) -> Path:
    """Save a drawn train/validation split in the run directory (``splits.json``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SPLIT_FILE
    path.write_text(json.dumps(split, indent=1) + "\n")
    return path


def read_split(run_dir: Path) -> dict[str, Any] | None:
    """The split a run saved, which ``eval`` and ``--resume`` reuse; None when there is none."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"split file {str(path)!r} is unreadable: {error}") from None
    if not isinstance(split, dict) or not {"train", "val"} <= set(split):
        raise InvalidInputError(f"split file {str(path)!r} lacks its 'train' and 'val' lists")
    log.info("using the split saved in %s (%s)", path, split.get("how", "saved"))
    return split


def _resumed_split(run_dir: Path, resume_path: Path | None) -> dict[str, Any] | None:
    """The split a resumed run continues with: saved beside its checkpoint, else in the
    output directory; None for a fresh run (which draws its own)."""
    if resume_path is None:
        return None
    return read_split(resume_path.parent) or read_split(run_dir)


def _resume_path(run_dir: Path, resume: str | Path | bool | None) -> Path | None:
    if resume is True:
        path = run_dir / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"--resume: no checkpoint to resume at {str(path)!r}")
        return path
    return Path(resume) if resume else None


def eval_checkpoint(
    config: ExperimentConfig, checkpoint: str | Path, out: str | Path
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the config's validation set and write the report to ``out``.

    The checkpoint must be of the config's task and describe its data (classes and their
    order, channels, normalisation); anything else is refused, naming the mismatch.
    """
    _configure_threads(config)
    device = resolve_device(config.train.device)
    dist = from_environment(device.type, config.train.dist_timeout_minutes)
    try:
        return _eval_checkpoint(config, checkpoint, out, device, dist)
    finally:
        shutdown(dist)


def _eval_checkpoint(config, checkpoint, out, device, dist) -> dict[str, Any]:
    payload = load_checkpoint(checkpoint)
    where = f"checkpoint {str(checkpoint)!r}"
    if payload["task"] != config.task:
        raise CheckpointError(
            f"{where} is a {payload['task']!r} model; the config's task is {config.task!r}"
        )
    plugin = get_plugin(config.task)
    require_keys(payload, plugin.checkpoint_keys, checkpoint)
    bundle = build_datasets(config, read_split(Path(checkpoint).parent))
    plugin.check_checkpoint(payload, config, bundle, where)
    task = build_task(config, bundle, with_loss=False)
    if dist.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    predictor = plugin.predictor_from_checkpoint(
        payload,
        device=device,
        window=config.eval.window,
        overlap=config.eval.overlap,
        tta=config.eval.tta,
        where=where,
    )
    return evaluate(
        predictor,
        bundle.val,
        task,
        out,
        device=device,
        gallery_size=config.eval.gallery_size,
        per_image=config.eval.per_image,
        dist=dist,
    )


def predict_files(
    model: str | Path,
    inputs: list[str],
    out: str | Path,
    *,
    window: tuple[int, ...] | None = None,
    overlap: float = 0.25,
    tta: bool = False,
    device: str = "auto",
    alpha: float = 0.5,
    score_threshold: float | None = None,
) -> list[Path]:
    """Write ``<name>_mask.png`` (index mask) and ``<name>_overlay.png`` per input image
    (an instance model: ``<name>_overlay.png``, ``<name>_results.json``, then
    ``results.json``; ``score_threshold`` sets which detections its overlays draw).

    ``model`` is a ``.pt`` checkpoint (run in PyTorch on ``device``) or an ``.onnx`` model
    with its JSON sidecar beside it (run in onnxruntime on the CPU): the backend follows
    the file. ``<name>`` is the file's stem, made unique by :func:`pixelseg.output_names.output_names`. The
    suffixes keep a mask from ever landing on its own input (``--out`` may be the input
    folder), and every name is checked before anything is written: no output replaces an
    input image or another output of this run. Returns the first output of each input, in
    input order. Under torchrun each process writes every ``world_size``-th input (names are
    drawn from the whole list first, so they do not depend on the number of processes) and
    returns its own.
    """
    if Path(model).suffix.lower() == ".onnx":
        torch_device, task, predictor = _onnx_backend(model, device, window, overlap, tta)
    else:
        torch_device = resolve_device(device)
        task, predictor = None, None
    dist = from_environment(torch_device.type)
    if dist.world_size > 1 and torch_device.type == "cuda":
        torch_device = torch.device("cuda", dist.local_rank)
    try:
        if task is None:
            task, predictor = _torch_backend(model, torch_device, window, overlap, tta)
        task.overlay_alpha = alpha
        if score_threshold is not None:
            if not hasattr(task, "score_threshold"):
                raise InvalidInputError(
                    f"--score-threshold applies to instance models; {str(model)!r} is a "
                    f"{task.name!r} model"
                )
            task.score_threshold = float(score_threshold)
        return _predict_files(task, predictor, inputs, Path(out), torch_device, dist)
    finally:
        shutdown(dist)


def _torch_backend(model, device, window, overlap, tta) -> tuple[Any, Any]:
    """``(task, predictor)`` of a ``.pt`` checkpoint, on ``device``."""
    payload = load_checkpoint(model)
    where = f"checkpoint {str(model)!r}"
    plugin = get_plugin(str(payload["task"]))
    require_keys(payload, plugin.checkpoint_keys, model)
    task = plugin.task_from_checkpoint(payload, None)
    predictor = plugin.predictor_from_checkpoint(
        payload, device=device, window=window, overlap=overlap, tta=tta, where=where
    )
    return task, predictor


def _predict_files(task, predictor, inputs, out: Path, device, dist) -> list[Path]:
    inputs_found = task.list_inputs(inputs)
    names = output_names(inputs_found)
    outputs = [task.output_paths(out, name) for name in names]
    refuse_overwriting_inputs(inputs_found, outputs)
    out.mkdir(parents=True, exist_ok=True)
    log.info("predicting %d inputs into %s", len(inputs_found), out)
    written = []
    mine = range(dist.rank, len(inputs_found), dist.world_size)
    with torch.inference_mode():
        for index in mine:
            path, name = inputs_found[index], names[index]
            if name != path.stem:
                log.info("%s shares its stem with another input: written as %s_*", path, name)
            raw, batch = task.read_input(path)
            output = task.forward_eval(predictor, move_to_device(batch, device))
            files = task.write_prediction(out, name, raw, task.predict(output))
            written.append(files[0])
            log.info("predicted %s -> %s", path, ", ".join(str(f) for f in files))
    dist.barrier()
    if dist.is_main:
        for path in task.finish_predictions(out, names):
            log.info("wrote %s", path)
    return written


def _onnx_backend(
    model: str | Path,
    device: str,
    window: tuple[int, ...] | None,
    overlap: float,
    tta: bool,
) -> tuple[torch.device, Any, Any]:
    """``(device, task, predictor)`` for an exported model: onnxruntime runs on the CPU."""
    from pixelseg.export.runtime import load_onnx_model

    if device not in ("auto", "cpu"):
        raise InvalidInputError(
            f"--device {device!r}: an .onnx model runs in onnxruntime on the CPU; leave "
            "--device out, or predict with the .pt checkpoint on that device"
        )
    _, task, predictor = load_onnx_model(model, window=window, overlap=overlap, tta=tta)
    return torch.device("cpu"), task, predictor


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    *,
    tolerance: float = 1e-3,
    quantize: str | None = None,
    calibration: str | Path | None = None,
    max_miou_drop: float = 1.0,
    calibration_images: int = 64,
    reduce_range: str = "auto",
) -> list[str]:
    """Export ``checkpoint`` to ``out`` (ONNX + JSON sidecar); returns lines for the CLI.

    fp32 exports pass the parity check against PyTorch; ``quantize="int8"`` calibrates on
    the ``calibration`` config's training images and refuses a model losing more than
    ``max_miou_drop`` mIoU points on its validation set. Nothing is written on failure.
    """
    if quantize is None:
        from pixelseg.export.onnx import export_checkpoint

        return export_checkpoint(checkpoint, out, tolerance=tolerance).lines()
    from pixelseg.config import load_config
    from pixelseg.export.quantize import quantize_checkpoint

    if quantize != "int8":
        raise InvalidInputError(f"unknown quantization {quantize!r}; valid: int8")
    if calibration is None:
        raise InvalidInputError("INT8 quantization needs a calibration config")
    config = load_config(calibration, [])
    _configure_threads(config)
    report = quantize_checkpoint(
        checkpoint,
        out,
        config,
        tolerance=tolerance,
        max_miou_drop=max_miou_drop,
        calibration_images=calibration_images,
        split=read_split(Path(checkpoint).parent),
        reduce_range=reduce_range,
    )
    return report.lines()


#: The embedded experiment each task's demo runs (``configs/`` holds the same files).
DEMO_CONFIGS = {
    "semantic": "shapes_unet.yaml",
    "instance": "shapes_maskrcnn.yaml",
    "panoptic": "shapes_panoptic_fpn.yaml",
    "volumetric": "phantom_unet3d.yaml",
}


def demo_config(
    out: str | Path, minutes: float | None = None, task: str = "semantic"
) -> ExperimentConfig:
    """The embedded synthetic-shapes experiment of ``task`` (same as ``configs/<file>``)."""
    if task not in DEMO_CONFIGS:
        raise InvalidInputError(f"no demo for task {task!r}; demos: {', '.join(DEMO_CONFIGS)}")
    name = DEMO_CONFIGS[task]
    text = resources.files("pixelseg").joinpath(f"resources/{name}").read_text()
    raw = yaml.safe_load(text)
    overrides = [f"output_dir={out}"]
    if minutes is not None:
        overrides.append(f"train.max_minutes={minutes}")
    return parse_config(apply_overrides(raw, overrides), source=f"<embedded {name}>")


def _demo_inputs(config: ExperimentConfig, folder: Path) -> None:
    """Inputs the demo's ``predict`` reads: new shapes images, or new phantom volumes."""
    if config.task == "volumetric":
        from pixelseg.medical.nifti import write_nifti
        from pixelseg.medical.phantom import make_phantom

        syn = config.volumetric.phantom
        for index in range(2):
            image, _ = make_phantom(
                config.seed + 777 + index, shape=syn.shape, spacing=syn.spacing,
                noise_hu=syn.noise_hu, num_nodules=syn.num_nodules, nodule_mm=syn.nodule_mm,
            )  # fmt: skip
            write_nifti(image.array, image.affine, folder / f"phantom_{index}.nii.gz")
        return
    from pixelseg.data import SyntheticShapes

    shapes = SyntheticShapes(4, size=config.data.synthetic.size * 2, seed=config.seed + 777)
    for index in range(len(shapes)):
        image, _ = shapes.generate(index)
        Image.fromarray(image).save(folder / f"sample_{index}.png")


def demo(
    out: str | Path = "runs/demo", minutes: float | None = None, task: str = "semantic"
) -> dict[str, Any]:
    """Generate data, train, evaluate, predict: the whole job on embedded data."""
    started = time.perf_counter()
    config = demo_config(out, minutes, task)
    _, run_dir = train(config, out=out)
    # The final weights: the demo's schedule decays to zero, so the run ends at rest.
    metrics = eval_checkpoint(config, run_dir / "last.pt", run_dir)
    samples_dir = run_dir / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    _demo_inputs(config, samples_dir)
    predict_files(run_dir / "last.pt", [str(samples_dir)], run_dir / "predictions")
    metrics["seconds"] = time.perf_counter() - started
    return metrics
