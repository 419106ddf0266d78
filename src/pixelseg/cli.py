"""The ``pixelseg`` command line: argument parsing and wiring only.

Every command maps to one function of :mod:`pixelseg.workflows` (``data export`` to
:func:`pixelseg.data_export.export_dataset`). Any error prints as one
line on stderr and exits with status 2; ``--debug`` shows the traceback instead. Errors we
expect users to cause (:class:`PixelsegError`, ``ValueError``, ``OSError`` such as a
permission problem) print their message alone; anything else also names its type, because
the message of an unexpected error rarely makes sense without it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixelseg.cli_serve import add_serve_command
from pixelseg.cli_tools import (
    add_data_commands,
    add_medical_commands,
    check_output_folder,
    run_data_export,
    run_medical,
)
from pixelseg.errors import InvalidInputError, PixelsegError

__all__ = ["build_parser", "main"]

EXAMPLES = {
    "train": "example: pixelseg train configs/camvid_unet.yaml train.epochs=50 data.batch_size=4",
    "eval": "example: pixelseg eval configs/camvid_unet.yaml --checkpoint runs/camvid_unet/last.pt "
    "--out runs/camvid_unet/eval",
    "predict": "example: pixelseg predict --checkpoint runs/demo/last.pt --out preds 'photos/*.png'"
    "\n         pixelseg predict --model runs/demo/model.onnx --out preds 'photos/*.png'",
    "export": "example: pixelseg export --checkpoint runs/demo/last.pt --format onnx "
    "--out runs/demo/model.onnx\n"
    "         pixelseg export --checkpoint runs/demo/last.pt --quantize int8 "
    "--calibration configs/shapes_unet.yaml --out runs/demo/model_int8.onnx",
    "serve": "example: pixelseg serve --model runs/demo/last.pt --port 8000\n"
    "         pixelseg serve --model runs/demo/model.onnx --api-key-env PIXELSEG_API_KEY",
    "models": "example: pixelseg models",
    "demo": "example: pixelseg demo --out runs/demo\n"
    "         pixelseg demo --task instance --out runs/demo_instance\n"
    "         pixelseg demo --task panoptic --out runs/demo_panoptic\n"
    "         pixelseg demo --task volumetric --out runs/demo_volumetric",
    "medical": "example: pixelseg medical prepare scans/ --labels masks/ --classes background "
    "tumour --out data/lung_msd\n         pixelseg medical phantoms --num 10 --out data/phantoms",
    "data": "example: pixelseg data export shapes --format coco --num 100 --out data/shapes_coco\n"
    "         pixelseg data export pennfudan --root ../shared/data/pennfudan --split train "
    "--format coco --out data/pennfudan_train",
}


PREDICT_NAMING = (
    "outputs: <name>_mask.png (index mask, palette-coloured) and <name>_overlay.png per "
    "image, where <name> is the file's stem (photos/cat.jpg -> cat_mask.png). Inputs sharing "
    "a stem add their extension (cat.jpg, cat.png -> cat_jpg, cat_png); inputs sharing the "
    "whole file name add their folders below the folder they have in common (a/cat.png, "
    "b/cat.png -> a_cat_png, b_cat_png). --out may be the input folder: predict stops before "
    "writing anything if an output would replace an input image or another output of the "
    "same run."
)


EXPORT_NOTES = (
    "writes the .onnx file and a .json sidecar beside it (classes, colours, normalisation or "
    "preprocessing, input-size rules, opset, pixelseg version). Semantic models and the "
    "volumetric unet3d: opset 18, dynamic batch and spatial axes; Mask R-CNN: opset 16, one "
    "image per run with dynamic height and width. onnxruntime and PyTorch run the same "
    "inputs first: if the largest absolute difference (logits; for Mask R-CNN the scores of "
    "paired detections, with boxes within 0.1 px and mask IoU >= 0.99) exceeds --tolerance, "
    "the export fails and writes nothing. YOLACT, Panoptic FPN and Soft-NMS are refused. "
    "With --quantize int8 (semantic models), the model is calibrated on --calibration's "
    "training images and both models are scored on its validation set; an INT8 model "
    "losing more than --max-miou-drop mIoU points is refused. Needs the deploy extra: "
    "pip install 'pixelseg[deploy]'."
)


class _CommandParser(argparse.ArgumentParser):
    """A command's parser whose positionals may follow its options.

    ``eval CONFIG --checkpoint CKPT data.root=x`` puts an override after an option, which
    plain argparse rejects. The subcommand action calls ``parse_known_args``; this routes that
    call through ``parse_known_intermixed_args`` (which cannot run on the top parser, as it
    has subcommands), and the intermixed parser's own two inner passes through the plain one.
    """

    _intermixing = False
    _has_commands = False

    def add_subparsers(self, **kwargs):  # type: ignore[override]
        # A command with its own subcommands (data export) cannot intermix (argparse refuses
        # a PARSER positional); its subcommands' parsers do.
        self._has_commands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing or self._has_commands:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_common(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    # On a command, --debug defaults to "unset" so that `pixelseg --debug eval ...` keeps the
    # top-level value instead of the command's default overwriting it.
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show tracebacks and debug logs",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixelseg",
        description="Train, evaluate and predict pixel-level segmentation models.",
        epilog="example: pixelseg demo",
    )
    _add_common(parser, top=True)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )

    def command(
        name: str, help_text: str, notes: str = "", under: Any = None, example: str = ""
    ) -> argparse.ArgumentParser:
        sub = (under or commands).add_parser(
            name,
            help=help_text,
            description=f"{help_text}\n\n{textwrap.fill(notes, 80)}" if notes else help_text,
            epilog=EXAMPLES[example or name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(sub)
        return sub

    train = command("train", "Train a model from a YAML experiment config.")
    train.add_argument("config", help="experiment YAML file")
    train.add_argument(
        "overrides",
        nargs="*",
        default=[],
        help="config overrides key.sub=value (before or after options)",
    )
    train.add_argument("--out", help="run directory (default: the config's output_dir)")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue from CKPT, or from <run dir>/last.pt when no path is given "
        "(a bare --resume goes last or before another option, not before an override)",
    )

    evaluate = command("eval", "Evaluate a checkpoint on the config's validation data.")
    evaluate.add_argument("config", help="experiment YAML file")
    evaluate.add_argument(
        "overrides",
        nargs="*",
        default=[],
        help="config overrides key.sub=value (before or after options)",
    )
    evaluate.add_argument(
        "--checkpoint",
        help="checkpoint file (default: <output_dir>/last.pt, the final weights; best.pt is "
        "the one that scored best on validation)",
    )
    evaluate.add_argument(
        "--out",
        help="report directory (default: <output_dir>/eval, with output_dir from the config "
        "and its overrides, not the checkpoint's folder)",
    )

    predict = command(
        "predict",
        "Segment images with a checkpoint or an exported ONNX model (files, folders or globs).",
        notes=PREDICT_NAMING,
    )
    predict.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint", help="checkpoint file (a run's last.pt or best.pt), run in PyTorch"
    )
    source.add_argument(
        "--model",
        help="a .pt checkpoint (PyTorch) or an .onnx model with its .json sidecar beside it "
        "(onnxruntime, CPU): the backend follows the file",
    )
    predict.add_argument("--out", required=True, help="output directory")
    predict.add_argument(
        "--window",
        type=int,
        nargs="+",
        metavar="SIZE",
        help="tile images larger than H x W with a blended sliding window (default: whole images)",
    )
    predict.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction")
    predict.add_argument("--tta", action="store_true", help="average with a horizontal flip")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    predict.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    predict.add_argument(
        "--score-threshold",
        type=float,
        help="instance models: draw detections scoring at least this (default 0.5); "
        "results.json keeps every detection the model returns",
    )

    export = command(
        "export",
        "Export a checkpoint to ONNX, verified against PyTorch (optionally INT8).",
        notes=EXPORT_NOTES,
    )
    export.add_argument(
        "--checkpoint", required=True, help="checkpoint file (a run's last.pt or best.pt)"
    )
    export.add_argument("--out", required=True, help="ONNX file to write (model.onnx)")
    export.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    export.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest absolute difference onnxruntime vs PyTorch allowed: logits, or the "
        "scores of paired detections (Mask R-CNN); default 1e-3",
    )
    export.add_argument(
        "--quantize", choices=["int8"], help="write an INT8 (static) model instead of fp32"
    )
    export.add_argument(
        "--calibration",
        metavar="CONFIG",
        help="experiment YAML whose training images calibrate and whose validation set "
        "measures the INT8 model (required with --quantize)",
    )
    export.add_argument(
        "--max-miou-drop",
        type=float,
        default=1.0,
        help="refuse an INT8 model losing more mIoU points than this (default 1.0)",
    )
    export.add_argument(
        "--calibration-images",
        type=int,
        default=64,
        help="training images used to calibrate INT8 (default 64)",
    )
    export.add_argument(
        "--reduce-range",
        choices=["auto", "on", "off"],
        default="auto",
        help="INT8 weights in 7 bits, onnxruntime's advice for x86 CPUs without VNNI, whose "
        "int16 sums can saturate (default auto: on exactly when this CPU is one)",
    )

    add_serve_command(command)

    command("models", "List the available models and encoders.")

    demo = command("demo", "Train, evaluate and predict on synthetic shapes (no downloads).")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--minutes", type=float, help="training time budget (default: config's)")
    demo.add_argument(
        "--task",
        choices=("semantic", "instance", "panoptic", "volumetric"),
        default="semantic",
        help="semantic: U-Net on shape classes; instance: Mask R-CNN on shape objects; "
        "panoptic: Panoptic FPN on shapes (things) and background textures (stuff); "
        "volumetric: 3D U-Net on CT phantoms (lung nodules)",
    )

    add_data_commands(command, _CommandParser)
    add_medical_commands(command, _CommandParser)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":  # before workflows: the service never loads the training engine
        from pixelseg.cli_serve import run_serve

        return run_serve(args)
    # Imported here so that `pixelseg --help` answers instantly.
    from pixelseg import workflows

    if args.command == "models":
        from pixelseg import models

        print("models:")
        for name, description in models.available().items():
            print(f"  {name:<16} {description}")
        print("encoders:")
        for name, description in models.available_encoders().items():
            print(f"  {name:<16} {description}")
        from pixelseg.models import detection

        for task, names, options in (
            ("instance", detection.available_detectors(), detection.detector_options),
            ("panoptic", detection.available_panoptic_models(), detection.panoptic_model_options),
        ):
            print(f"{task} models (task: {task}; model.options below):")
            for name, description in names.items():
                print(f"  {name:<16} {description}")
                print(textwrap.fill(", ".join(options(name)), 88, initial_indent=" " * 19,
                                    subsequent_indent=" " * 19))  # fmt: skip
        from pixelseg.models import volumetric

        print("volumetric models (task: volumetric; model.options below):")
        for name, description in volumetric.available_volumetric().items():
            if not volumetric.is_slice_model(name):
                print(f"  {name:<16} {description}")
                print(textwrap.fill(", ".join(volumetric.volumetric_options(name)), 88,
                                    initial_indent=" " * 19, subsequent_indent=" " * 19))  # fmt: skip
        print("  and the first list's models on axial slices: model.encoder and options as in")
        print("  2D, plus context_slices (2.5D: k neighbouring slices on each side as channels)")
        return 0
    if args.command == "demo":
        check_output_folder(args.out, "--out")
        metrics = workflows.demo(args.out, minutes=args.minutes, task=args.task)
        print(f"report: {args.out}/metrics.json (charts and pictures beside it)")
        print(f"predictions: {args.out}/predictions")
        print(f"validation {workflows.summary(args.task, metrics)}")
        return 0
    if args.command == "export":
        return _export(args)
    if args.command == "data":
        return run_data_export(args)
    if args.command == "medical":
        return run_medical(args)
    if args.command == "predict":
        check_output_folder(args.out, "--out")
        if args.checkpoint and Path(args.checkpoint).suffix.lower() == ".onnx":
            raise InvalidInputError(
                f"--checkpoint {args.checkpoint!r} is an ONNX model; pass it with --model"
            )
        written = workflows.predict_files(
            args.checkpoint or args.model,
            args.inputs,
            args.out,
            window=tuple(args.window) if args.window else None,
            overlap=args.overlap,
            tta=args.tta,
            device=args.device,
            alpha=args.alpha,
            score_threshold=args.score_threshold,
        )
        print(f"wrote predictions for {len(written)} inputs to {args.out}")
        return 0

    from pixelseg.config import load_config

    config = load_config(args.config, args.overrides)
    if args.command == "train":
        check_output_folder(args.out or config.output_dir, "--out" if args.out else "output_dir")
        _check_resume(args.resume)
        metrics, run_dir = workflows.train(config, out=args.out, resume=args.resume)
        print(f"run directory: {run_dir}")
        if metrics:
            print(f"last validation: {workflows.summary(config.task, metrics)}")
        return 0
    out = args.out or f"{config.output_dir}/eval"
    check_output_folder(out, "--out" if args.out else "the report folder <output_dir>/eval")
    checkpoint = args.checkpoint or f"{config.output_dir}/last.pt"
    metrics = workflows.eval_checkpoint(config, checkpoint, out)
    print(workflows.summary(config.task, metrics))
    print(f"report: {out}/metrics.json")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pixelseg import workflows

    if args.quantize and not args.calibration:
        raise InvalidInputError("--quantize int8 needs --calibration CONFIG (an experiment YAML)")
    if args.calibration and not args.quantize:
        raise InvalidInputError("--calibration is only used with --quantize int8")
    if args.reduce_range != "auto" and not args.quantize:
        raise InvalidInputError("--reduce-range is only used with --quantize int8")
    for line in workflows.export_model(
        args.checkpoint,
        args.out,
        tolerance=args.tolerance,
        quantize=args.quantize,
        calibration=args.calibration,
        max_miou_drop=args.max_miou_drop,
        calibration_images=args.calibration_images,
        reduce_range=args.reduce_range,
    ):
        print(line)
    return 0


def _check_resume(resume: Any) -> None:
    # With overrides allowed after options, `--resume train.epochs=8` takes the override as
    # the checkpoint path; say so instead of failing on a missing checkpoint.
    if isinstance(resume, str) and "=" in resume and not Path(resume).exists():
        raise InvalidInputError(
            f"--resume took {resume!r} as its checkpoint; to resume from <run dir>/last.pt "
            "with overrides, put them before --resume (or --resume before another option)"
        )


def _error_line(error: BaseException) -> str:
    """The one line printed for ``error``: expected errors as their message, others typed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = "; ".join(lines) or type(error).__name__
    if isinstance(error, PixelsegError | ValueError | OSError):
        return f"error: {message}"
    return f"error: {type(error).__name__}: {message} (run with --debug for the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Under torchrun, only rank 0 logs progress; the others report warnings and errors.
    quiet = int(os.environ.get("RANK", "0")) != 0
    # pixelseg's own progress at INFO; other libraries (the ONNX exporter's optimiser logs
    # every pass at INFO) only from WARNING, unless --debug asks for everything.
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        logging.getLogger("pixelseg").setLevel(logging.WARNING if quiet else logging.INFO)
    if args.debug:
        return _run(args)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted: the last complete checkpoint is kept", file=sys.stderr)
        return 130
    except Exception as error:  # every error becomes one line; --debug shows the traceback
        print(_error_line(error), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
