"""The jobs behind the CLI commands, callable from Python: train, evaluate, predict, demo.

Each is a plain function over the config and paths; the CLI only parses arguments and
calls one of these.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from pixelseg.build import (
    build_datasets,
    build_model,
    build_task,
    checkpoint_meta,
    count_class_weights,
)
from pixelseg.checkpoints import load_checkpoint
from pixelseg.config import ExperimentConfig, apply_overrides, dump_config, parse_config
from pixelseg.data import list_images, read_image
from pixelseg.engine.callbacks import CSVLogger, ProgressBar, TensorBoardLogger
from pixelseg.engine.device import resolve_device
from pixelseg.engine.evaluator import evaluate
from pixelseg.engine.sampling import seed_everything
from pixelseg.engine.trainer import Trainer
from pixelseg.errors import CheckpointError, InvalidInputError
from pixelseg.inference import overlay, save_index_mask
from pixelseg.inference.segmenter import Segmenter

__all__ = ["demo", "demo_config", "eval_checkpoint", "predict_files", "train"]

log = logging.getLogger(__name__)


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
    seed_everything(config.seed)
    bundle = build_datasets(config)
    model = build_model(config, bundle.num_classes)
    class_weights = _class_weights(config, bundle, resume_path)
    task = build_task(config, bundle, class_weights)
    dump_config(config, run_dir / "config.yaml")
    standard = [CSVLogger(run_dir / "log.csv")]
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
        checkpoint_meta(config, bundle, class_weights),
        callbacks=standard + list(callbacks or []),
    )
    metrics = trainer.fit(resume=resume_path)
    return metrics, run_dir


def _resume_path(run_dir: Path, resume: str | Path | bool | None) -> Path | None:
    if resume is True:
        path = run_dir / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"--resume: no checkpoint to resume at {str(path)!r}")
        return path
    return Path(resume) if resume else None


def _class_weights(config: ExperimentConfig, bundle, resume_path: Path | None):
    """The checkpoint's class weights when resuming (exact resume), else counted once."""
    if not config.loss.class_weights:
        return None
    if resume_path is not None:
        saved = load_checkpoint(resume_path, require=()).get("class_weights")
        if saved is not None:
            return list(saved)
    return count_class_weights(config, bundle)


def eval_checkpoint(
    config: ExperimentConfig, checkpoint: str | Path, out: str | Path
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the config's validation set and write the report to ``out``."""
    _configure_threads(config)
    bundle = build_datasets(config)
    task = build_task(config, bundle, with_loss=False)
    segmenter = Segmenter.from_checkpoint(
        checkpoint,
        device=resolve_device(config.train.device),
        window=config.eval.window,
        overlap=config.eval.overlap,
        tta=config.eval.tta,
    )
    _check_checkpoint_matches(checkpoint, segmenter, config, bundle)
    return evaluate(
        segmenter,
        bundle.val,
        task,
        out,
        gallery_size=config.eval.gallery_size,
        per_image=config.eval.per_image,
    )


def _check_checkpoint_matches(checkpoint, segmenter: Segmenter, config, bundle) -> None:
    """Refuse to score a checkpoint on data it does not describe, naming the mismatch."""
    where = f"checkpoint {str(checkpoint)!r}"
    if segmenter.task != config.task:
        raise CheckpointError(
            f"{where} is a {segmenter.task!r} model; the config's task is {config.task!r}"
        )
    if segmenter.classes != bundle.classes:
        raise CheckpointError(
            f"{where} predicts classes {segmenter.classes} but the config's data has "
            f"{bundle.classes} (names and order must match)"
        )
    if segmenter.in_channels != config.data.in_channels:
        raise CheckpointError(
            f"{where} takes {segmenter.in_channels}-channel images; data.in_channels is "
            f"{config.data.in_channels}"
        )
    for what, saved, wanted in (
        ("mean", segmenter.mean, bundle.mean),
        ("std", segmenter.std, bundle.std),
    ):
        if len(saved) != len(wanted) or any(
            abs(a - b) > 1e-6 for a, b in zip(saved, wanted, strict=True)
        ):
            raise CheckpointError(
                f"{where} was trained with normalisation {what} {saved}; the config gives "
                f"{wanted} (data.normalize, data.mean, data.std)"
            )


def predict_files(
    checkpoint: str | Path,
    inputs: list[str],
    out: str | Path,
    *,
    window: tuple[int, int] | None = None,
    overlap: float = 0.25,
    tta: bool = False,
    device: str = "auto",
    alpha: float = 0.5,
) -> list[Path]:
    """Write ``<name>_mask.png`` (index mask) and ``<name>_overlay.png`` per input image.

    ``<name>`` is the file's stem, made unique by :func:`_output_names`. The suffixes keep a
    mask from ever landing on its own input (``--out`` may be the input folder), and every
    name is checked before anything is written: no output replaces an input image or another
    output of this run. Returns the mask paths, in input order.
    """
    segmenter = Segmenter.from_checkpoint(
        checkpoint, device=resolve_device(device), window=window, overlap=overlap, tta=tta
    )
    images = list_images(inputs)
    names = _output_names(images)
    out = Path(out)
    _refuse_overwriting_inputs(images, names, out)
    out.mkdir(parents=True, exist_ok=True)
    log.info(
        "predicting %d images into %s as <name>_mask.png and <name>_overlay.png", len(images), out
    )
    written = []
    for path, name in zip(images, names, strict=True):
        if name != path.stem:
            log.info("%s shares its stem with another input: written as %s_*.png", path, name)
        image = read_image(path, in_channels=segmenter.in_channels)
        labels = segmenter.predict(image)
        mask_path = save_index_mask(out / f"{name}_mask.png", labels, segmenter.colors)
        rgb = image if image.ndim == 3 and image.shape[2] == 3 else _grey_to_rgb(image)
        blended = overlay(rgb, labels, segmenter.colors, alpha=alpha)
        Image.fromarray(blended).save(out / f"{name}_overlay.png")
        written.append(mask_path)
        log.info("predicted %s -> %s", path, mask_path)
    return written


def _output_names(images: list[Path]) -> list[str]:
    """One unique output name per image, in order (compared ignoring case, as some file
    systems do).

    The stem; when several inputs share a stem, ``<stem>_<ext>`` (``x.jpg`` -> ``x_jpg``);
    when they share the whole file name, ``<folders>_<stem>_<ext>`` with the folders relative
    to the one they have in common (``a/x.png``, ``b/x.png`` -> ``a_x_png``, ``b_x_png``).
    A name these rules still repeat is an error naming both inputs.
    """
    names = [path.stem for path in images]
    groups: dict[str, list[int]] = defaultdict(list)
    for index, path in enumerate(images):
        groups[path.stem.lower()].append(index)
    for group in groups.values():
        if len(group) == 1:
            continue
        paths = [images[index] for index in group]
        if len({path.name.lower() for path in paths}) == len(paths):
            for index, path in zip(group, paths, strict=True):
                names[index] = f"{path.stem}_{path.suffix[1:].lower()}"
            continue
        resolved = [path.resolve() for path in paths]
        common = Path(os.path.commonpath(resolved))
        for index, path in zip(group, resolved, strict=True):
            folders = path.parent.relative_to(common).parts
            names[index] = "_".join([*folders, path.stem, path.suffix[1:].lower()])
    seen: dict[str, Path] = {}
    for path, name in zip(images, names, strict=True):
        first = seen.setdefault(name.lower(), path)
        if first != path:
            raise InvalidInputError(
                f"inputs {str(first)!r} and {str(path)!r} would both be written as "
                f"{name}_mask.png; rename one or predict them into separate folders"
            )
    return names


def _refuse_overwriting_inputs(images: list[Path], names: list[str], out: Path) -> None:
    """Raise before writing anything if an output path is one of the input images (say, the
    mask of ``x.png`` when ``x_mask.png`` from an earlier run into the same folder is an
    input too)."""
    inputs = {path.resolve(): path for path in images}
    for name in names:
        for suffix in ("mask", "overlay"):
            target = out / f"{name}_{suffix}.png"
            if target.resolve() in inputs:
                raise InvalidInputError(
                    f"output {str(target)!r} would replace the input image "
                    f"{str(inputs[target.resolve()])!r}; write into another folder, or leave "
                    "earlier outputs out of the inputs"
                )


def _grey_to_rgb(image):
    import numpy as np

    grey = image if image.ndim == 2 else image[:, :, 0]
    return np.repeat(grey[:, :, None], 3, axis=2)


def demo_config(out: str | Path, minutes: float | None = None) -> ExperimentConfig:
    """The embedded synthetic-shapes experiment (same as ``configs/shapes_unet.yaml``)."""
    text = resources.files("pixelseg").joinpath("resources/shapes_unet.yaml").read_text()
    raw = yaml.safe_load(text)
    overrides = [f"output_dir={out}"]
    if minutes is not None:
        overrides.append(f"train.max_minutes={minutes}")
    return parse_config(apply_overrides(raw, overrides), source="<embedded shapes_unet.yaml>")


def demo(out: str | Path = "runs/demo", minutes: float | None = None) -> dict[str, Any]:
    """Generate shapes, train, evaluate, predict: the whole job on embedded data."""
    from pixelseg.data import SyntheticShapes

    started = time.perf_counter()
    config = demo_config(out, minutes)
    _, run_dir = train(config, out=out)
    metrics = eval_checkpoint(config, run_dir / "best.pt", run_dir)
    samples_dir = run_dir / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    shapes = SyntheticShapes(4, size=config.data.synthetic.size * 2, seed=config.seed + 777)
    for index in range(len(shapes)):
        image, _ = shapes.generate(index)
        Image.fromarray(image).save(samples_dir / f"sample_{index}.png")
    predict_files(run_dir / "best.pt", [str(samples_dir)], run_dir / "predictions")
    metrics["seconds"] = time.perf_counter() - started
    return metrics
