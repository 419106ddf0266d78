"""Group-aware splits across datasets: the config keys, the shared drawing rule, and the
check that a saved split is the one the config draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelseg import build
from pixelseg.config import DataConfig, parse_config
from pixelseg.errors import ConfigError, DataError
from pixelseg.tasks.splits import check_saved_split, draw_split


def data_config(**data):
    """A validated data section (any dataset, whichever task reads it)."""
    return DataConfig.model_validate(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dataset": "camvid", "root": "x", "split_seed": -1}, "split_seed"),
        ({"dataset": "msd", "root": "x", "val_groups": ["lung_001"]}, "needs data.group_by"),
        (
            {"dataset": "folder", "images": "i", "masks": "m", "classes": ["a"],
             "val_images": "vi", "val_masks": "vm", "num_folds": 3},
            "num_folds has no effect beside data.val_images",
        ),
        (
            {"dataset": "coco", "root": "x", "val_annotations": "v.json", "group_by": "^(a)"},
            "group_by has no effect beside data.val_annotations",
        ),
        (
            {"dataset": "nifti", "images": "i", "val_images": "v", "val_groups": ["a"],
             "group_by": "^(a)"},
            "val_groups has no effect beside data.val_images",
        ),
    ],
)  # fmt: skip
def test_split_keys_that_cannot_act_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": data})


def test_every_dataset_with_a_drawn_split_takes_the_group_keys():
    for dataset in ("pennfudan", "coco", "coco_panoptic", "msd", "nifti"):
        extra = {"images": "i"} if dataset == "nifti" else {"root": "r"}
        data = data_config(dataset=dataset, group_by="^(p[0-9]+)_", num_folds=3, fold=2, **extra)
        assert (data.group_by, data.num_folds, data.fold) == ("^(p[0-9]+)_", 3, 2)


def test_draw_split_keeps_patients_apart_and_checks_saved_splits():
    cases = [f"p{patient}_scan{visit}" for patient in range(5) for visit in range(3)]
    grouped = draw_split(
        cases, data_config(dataset="msd", root="r", group_by="^(p[0-9])_"), "cases"
    )
    val_patients = {name.split("_")[0] for name in grouped["val"]}
    train_patients = {name.split("_")[0] for name in grouped["train"]}
    assert len(val_patients) == 1 and not val_patients & train_patients
    assert len(grouped["val"]) == 3 and len(grouped["train"]) == 12
    plain = draw_split(cases, data_config(dataset="msd", root="r", val_fraction=0.2), "cases")
    assert len(plain["val"]) == 3 and "seeded split of the cases" in plain["how"]
    check_saved_split(grouped, grouped)
    with pytest.raises(ConfigError, match=r"other validation items.*seeded split of the cases"):
        check_saved_split(grouped, plain)
    with pytest.raises(DataError, match="leaves one side empty"):
        draw_split(["only"], data_config(dataset="msd", root="r", val_fraction=0.5), "cases")
    with pytest.raises(DataError, match="no files to split"):
        draw_split([], data_config(dataset="msd", root="r", group_by="^(p)"), "cases")


def test_split_errors_name_where_the_group_pattern_came_from():
    names = ["0001TP_000010", "0006R0_f00930"]
    data = data_config(dataset="camvid", root="r", val_groups=["0016E5"])
    with pytest.raises(DataError) as raised:
        draw_split(names, data, "files", r"^([^_]+)_")
    message = str(raised.value)
    assert "the dataset's own group pattern (data.group_by is unset) '^([^_]+)_'" in message
    assert "'0016E5'" in message and "0001TP, 0006R0" in message
    written = data_config(dataset="msd", root="r", group_by="^(x)", val_groups=["x"])
    with pytest.raises(DataError, match=r"^data\.group_by '\^\(x\)' matches none"):
        draw_split(["a", "b"], written, "cases")


def write_pennfudan(root: Path, stems: list[str]) -> Path:
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for stem in stems:
        Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(root / "PNGImages" / f"{stem}.png")
        mask = np.zeros((12, 10), np.uint8)
        mask[2:6, 3:7] = 1
        Image.fromarray(mask).save(root / "PedMasks" / f"{stem}_mask.png")
    return root


def test_pennfudan_splits_by_site(tmp_path):
    stems = [f"{site}{i:05d}" for site in ("FudanPed", "PennPed") for i in range(1, 4)]
    root = write_pennfudan(tmp_path / "pf", stems)
    config = parse_config(
        {
            "task": "instance",
            "data": {"dataset": "pennfudan", "root": str(root), "group_by": "^(FudanPed|PennPed)",
                     "val_groups": ["PennPed"]},
            "model": {"name": "maskrcnn"},
        }
    )  # fmt: skip
    bundle = build.build_datasets(config)
    assert bundle.val.stems == ["PennPed00001", "PennPed00002", "PennPed00003"]
    assert bundle.train.stems == ["FudanPed00001", "FudanPed00002", "FudanPed00003"]
    assert bundle.split["val_groups"] == ["PennPed"]
    # Image ids stay those of the whole folder, whatever the split.
    assert bundle.val[0]["image_id"] == 4


def test_membrane_group_pattern_alone_splits_whole_groups(tmp_path):
    for index in range(8):
        for sub in ("image", "label"):
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(
                tmp_path / sub / f"s{index // 2}_{index}.png"
            )
    config = parse_config(
        {"data": {"dataset": "membrane", "root": str(tmp_path), "in_channels": 1,
                  "group_by": "^(s[0-9])_", "val_fraction": 0.25}}
    )  # fmt: skip
    bundle = build.build_datasets(config)
    assert len(bundle.split["val_groups"]) == 1 and len(bundle.val.stems) == 2
    assert {s[:2] for s in bundle.val.stems}.isdisjoint({s[:2] for s in bundle.train.stems})


def test_camvid_eval_split_scores_the_named_split_beside_drawn_groups(tmp_path):
    for split, names in (("train", ["0001TP_00000", "0001TP_00001", "0006R0_00000"]),
                         ("val", ["0016E5_00000", "0016E5_00001"])):  # fmt: skip
        for name in names:
            for folder in (split, f"{split}annot"):
                (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / f"{name}.png")
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(
                tmp_path / f"{split}annot" / f"{name}.png"
            )
    root = tmp_path
    config = parse_config(
        {
            "data": {
                "dataset": "camvid",
                "root": str(root),
                "val_groups": ["0006R0"],
                "eval_split": "val",
            }
        }
    )
    bundle = build.build_datasets(config)
    assert bundle.val.stems == ["0016E5_00000", "0016E5_00001"]
    assert bundle.train.stems == ["0001TP_00000", "0001TP_00001"]
