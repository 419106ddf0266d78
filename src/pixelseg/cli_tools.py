"""The CLI's dataset and medical tools: ``pixelseg data export`` and ``pixelseg medical
prepare|phantoms`` (their arguments and the calls behind them), apart from the training
and prediction commands in :mod:`pixelseg.cli`. Like the rest of the CLI, this only wires:
the work is in :mod:`pixelseg.data_export` and :mod:`pixelseg.medical`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pixelseg.errors import InvalidInputError

__all__ = [
    "add_data_commands",
    "add_medical_commands",
    "check_output_folder",
    "run_data_export",
    "run_medical",
]

DATA_EXPORT_NOTES = (
    "writes OUT/instances.json and OUT/images/<name>.png: masks as compressed RLE (lossless), "
    "images as PNG, categories with ids 1..K in label order. Sources: shapes (the synthetic "
    "circles, squares and triangles; --num, --size, --seed) and pennfudan (--root, --split). "
    "Reload with pixelseg.data.CocoInstances(OUT/images, OUT/instances.json). "
    "--format coco_panoptic (shapes, textures as stuff) writes OUT/panoptic.json, "
    "OUT/panoptic/<name>.png and OUT/images; reload with "
    "pixelseg.data.CocoPanoptic(OUT/images, OUT/panoptic.json)."
)


def add_data_commands(command: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """``pixelseg data ACTION``: dataset tools, each action a subcommand of ``data``."""
    from pixelseg.data_export import EXPORT_FORMATS, EXPORT_SOURCES

    data = command("data", "Dataset tools: export an instance source (COCO).")
    actions = data.add_subparsers(
        dest="data_command", required=True, metavar="ACTION", parser_class=parser_class
    )
    export = command(
        "export",
        "Write an instance source as a COCO dataset.",
        notes=DATA_EXPORT_NOTES,
        under=actions,
        example="data",
    )
    export.add_argument(
        "source", metavar="SOURCE", help=f"instance source: {', '.join(EXPORT_SOURCES)}"
    )
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument(
        "--format",
        default="coco",
        help=f"output format: {', '.join(EXPORT_FORMATS)} (default coco)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing export")
    export.add_argument("--root", help="pennfudan: the folder holding PNGImages and PedMasks")
    export.add_argument("--split", help="pennfudan: all, train or val (default all)")
    export.add_argument("--num", type=int, help="shapes: number of images (default 100)")
    export.add_argument("--size", type=int, help="shapes: image side in pixels (default 128)")
    export.add_argument("--seed", type=int, help="shapes: scenes seed (default 0)")


def add_medical_commands(command: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """``pixelseg medical ACTION``: turn DICOM/NIfTI folders into an MSD-layout dataset, or
    write phantom CT datasets."""
    medical = command("medical", "Medical volumes: prepare an MSD dataset, write phantoms.")
    actions = medical.add_subparsers(
        dest="medical_command", required=True, metavar="ACTION", parser_class=parser_class
    )
    prepare = command(
        "prepare",
        "DICOM series and NIfTI volumes (+ label NIfTIs) into an MSD-layout dataset.",
        under=actions,
        example="medical",
    )
    prepare.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a folder whose NIfTI files and subfolders (one DICOM series each) are the "
        "cases, or the case paths themselves",
    )
    prepare.add_argument("--out", required=True, help="the new dataset folder (must be empty)")
    prepare.add_argument("--labels", help="folder of label NIfTIs named like the cases")
    prepare.add_argument(
        "--classes", nargs="+", default=["background", "foreground"], help="label names, 0 first"
    )
    prepare.add_argument("--name", default="Dataset", help="dataset name in dataset.json")
    prepare.add_argument("--modality", default="CT", help="modality in dataset.json (CT, MR)")
    phantoms = command(
        "phantoms",
        "Write synthetic CT phantoms (lungs, vessels, nodules) as an MSD dataset.",
        under=actions,
        example="medical",
    )
    phantoms.add_argument("--out", required=True, help="the new dataset folder (must be empty)")
    phantoms.add_argument("--num", type=int, default=10, help="training cases (default 10)")
    phantoms.add_argument("--test", type=int, default=0, help="unlabelled test cases")
    phantoms.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")


def _case_inputs(inputs: list[str]) -> str | list[str]:
    """One folder of cases (NIfTI files, series subfolders) is passed as a folder; one folder
    of DICOM files alone is one series; several inputs are the cases themselves."""
    from pixelseg.medical.nifti import is_nifti

    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        entries = [p for p in Path(inputs[0]).iterdir() if not p.name.startswith(".")]
        if any(p.is_dir() or is_nifti(p) for p in entries):
            return inputs[0]
    return inputs


def run_medical(args: argparse.Namespace) -> int:
    if args.medical_command == "prepare":
        from pixelseg.medical.prepare import prepare_msd

        path = prepare_msd(
            _case_inputs(args.inputs),
            args.out,
            labels=args.labels,
            classes=args.classes,
            name=args.name,
            modality=args.modality,
        )
    else:
        from pixelseg.medical.phantom_dataset import make_phantom_dataset

        path = make_phantom_dataset(args.out, args.num, args.seed, num_test=args.test)
    print(f"wrote {path / 'dataset.json'}")
    return 0


def run_data_export(args: argparse.Namespace) -> int:
    from pixelseg.data_export import export_dataset

    check_output_folder(args.out, "--out")
    given = {k: getattr(args, k) for k in ("root", "split", "num", "size", "seed")}
    # Only the options given reach the source, so one it does not take is an error, not ignored.
    options = {k: v for k, v in given.items() if v is not None}
    path = export_dataset(
        args.source, args.out, fmt=args.format, overwrite=args.overwrite, **options
    )
    print(f"wrote {path} (images in {path.parent / 'images'})")
    return 0


def check_output_folder(path: str | Path, what: str) -> None:
    """Refuse an output folder that is an existing file before any work starts."""
    if Path(path).is_file():
        raise InvalidInputError(f"{what} {str(path)!r} is a file, not a folder")
