"""Training glue end to end: mixed-size validation, safe checkpoints, resume with a changed
config, class weights kept for resume, best-metric and eval checks, 5-D memory layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint
from pixelseg.config import load_config, parse_config
from pixelseg.data import DATASET_INFO
from pixelseg.engine.device import model_layout, move_to_device
from pixelseg.errors import CheckpointError, ConfigError
from pixelseg.tasks import semantic_setup

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def tiny(tmp_path, **train):
    return parse_config(
        {
            "output_dir": str(tmp_path / "run"),
            "seed": 1,
            "data": {"synthetic": {"num_train": 8, "num_val": 4, "size": 32}, "batch_size": 4},
            "model": {"name": "unet", "options": {"base_channels": 4}},
            "train": {"epochs": 2, "progress": False, "tensorboard": False, **train},
        }
    )


def write_voc(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """A VOC2012-layout folder: JPEGImages/, palette SegmentationClass/, ImageSets lists."""
    rng = np.random.default_rng(0)
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    palette = [v for color in DATASET_INFO["voc"].colors for v in color]
    names = []
    for index, (h, w) in enumerate(sizes):
        name = f"2007_{index:06d}"
        names.append(name)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            base / "JPEGImages" / f"{name}.jpg"
        )
        mask = rng.integers(0, 21, (h, w), dtype=np.uint8)
        mask[:2] = 255  # VOC's void border
        image = Image.fromarray(mask, mode="P")
        image.putpalette(palette + [224, 224, 192] * (256 - 21))
        image.save(base / "SegmentationClass" / f"{name}.png")
    lists = base / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (lists / "val.txt").write_text("\n".join(names[2:]) + "\n")
    return root


def test_shipped_voc_config_trains_and_validates_mixed_sizes(tmp_path):
    root = write_voc(tmp_path / "data", [(60, 70), (50, 64), (40, 52), (45, 61), (52, 40)])
    config = load_config(
        ROOT / "configs" / "voc_deeplabv3plus.yaml",
        [
            f"data.root={root}",
            f"output_dir={tmp_path / 'run'}",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.augment.0.size=[48, 48]",
            "train.iterations=1",
            "train.progress=false",
            "train.tensorboard=false",
            "model.encoder=resnet18",
        ],
    )
    metrics, run_dir = workflows.train(config)
    assert 0.0 <= metrics["pixel_accuracy"] <= 1.0
    report = workflows.eval_checkpoint(config, run_dir / "last.pt", tmp_path / "eval")
    assert report["num_images"] == 3
    # Validation and eval score the same images the same way (whole, unpadded).
    assert report["pixel_accuracy"] == pytest.approx(metrics["pixel_accuracy"], abs=1e-6)


def test_every_checkpoint_file_loads_weights_only(tmp_path):
    config = tiny(tmp_path, ema_decay=0.9, scheduler={"name": "plateau"}, amp="fp16")
    config.loss.class_weights = "sqrt_inverse"
    _, run_dir = workflows.train(config)
    for name in ("last.pt", "best.pt"):
        payload = torch.load(run_dir / name, weights_only=True)
        assert payload["format_version"] == 2
        assert len(payload["class_weights"]) == 4
        assert payload["plateau"]["num_bad_epochs"] >= 0


def test_resume_follows_a_changed_schedule_and_optimizer(tmp_path, caplog):
    config = tiny(tmp_path, epochs=4, optimizer={"lr": 0.01}, scheduler={"name": "none"})
    with pytest.raises(KeyboardInterrupt):
        workflows.train(config, callbacks=[StopAt(epoch=2)])
    changed = tiny(
        tmp_path,
        epochs=4,
        optimizer={"lr": 0.02, "weight_decay": 0.5},
        scheduler={"name": "poly", "power": 1.0},
    )
    recorder = RecordLR()
    with caplog.at_level("INFO"):
        workflows.train(changed, resume=True, callbacks=[recorder])
    # 2 steps an epoch: resumed at step 4 of 8, the new poly schedule gives 0.02 * (1 - 5/8)
    # after the first resumed step (the old constant 0.01 would come back if it were kept).
    assert recorder.lrs[0] == pytest.approx(0.02 * (1 - 5 / 8))
    assert recorder.groups[0]["weight_decay"] == 0.5
    assert "train.scheduler.name changed 'none' -> 'poly'" in caplog.text


def test_resume_reuses_the_saved_class_weights(tmp_path, monkeypatch):
    config = tiny(tmp_path, epochs=2)
    config.loss.class_weights = "inverse"
    with pytest.raises(KeyboardInterrupt):
        workflows.train(config, callbacks=[StopAt(epoch=1)])
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["class_weights"]
    monkeypatch.setattr(semantic_setup, "count_class_weights", lambda *a: pytest.fail("recounted"))
    workflows.train(config, resume=True)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["class_weights"] == saved


def test_eval_counts_nothing_and_checks_the_checkpoint(tmp_path, monkeypatch):
    config = tiny(tmp_path, epochs=1)
    config.loss.class_weights = "inverse"
    _, run_dir = workflows.train(config)
    monkeypatch.setattr(
        semantic_setup.losses, "count_labels", lambda *a, **k: pytest.fail("counted")
    )
    workflows.eval_checkpoint(config, run_dir / "best.pt", tmp_path / "eval")

    payload = load_checkpoint(run_dir / "best.pt")
    cases = {
        "order": {"classes": payload["classes"][::-1]},
        "normalisation": {"normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}},
        "task": {"task": "instance"},
    }
    messages = {
        "order": "names and order must match",
        "normalisation": "normalisation mean",
        "task": "'instance' model",
    }
    for case, change in cases.items():
        torch.save({**payload, **change}, tmp_path / f"{case}.pt")
        with pytest.raises(CheckpointError, match=messages[case]):
            workflows.eval_checkpoint(config, tmp_path / f"{case}.pt", tmp_path / "eval")


def test_unknown_best_metric_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"best_metric 'iou'.*miou"):
        workflows.train(tiny(tmp_path, best_metric="iou"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_3d_model_keeps_a_valid_memory_layout():
    class Volumetric(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    class Runtime:
        memory_format = torch.channels_last

    model = Volumetric()
    layout = model_layout(model, Runtime())
    assert layout is torch.channels_last_3d
    model.to(memory_format=layout)  # channels_last itself raises for Conv3d weights
    batch = {"image": torch.zeros(1, 1, 4, 4, 4), "boxes": [torch.zeros(2, 4)]}
    moved = move_to_device(batch, torch.device("cpu"), torch.channels_last)
    assert moved["image"].is_contiguous(memory_format=torch.channels_last_3d)
    assert isinstance(moved["boxes"], list) and moved["boxes"][0].shape == (2, 4)


class StopAt:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_step(self, trainer, logs):
        if trainer.state.epoch == self.epoch:
            raise KeyboardInterrupt


class RecordLR:
    def __init__(self):
        self.lrs, self.groups = [], []

    def on_step(self, trainer, logs):
        self.lrs.append(logs["lr"])
        self.groups.append(dict(trainer.optimizer.param_groups[0]))


def test_voc_config_yaml_has_no_random_val_transform():
    raw = yaml.safe_load((ROOT / "configs" / "voc_deeplabv3plus.yaml").read_text())
    assert not raw["data"].get("val_transforms")


def test_a_drawn_split_is_saved_and_reused_by_eval_and_resume(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(8):
        for sub in ("images", "masks"):
            (tmp_path / "data" / sub).mkdir(parents=True, exist_ok=True)
        name = f"case{index % 4}_{index}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / "data" / "images" / name
        )
        Image.fromarray(rng.integers(0, 2, (16, 16), dtype=np.uint8)).save(
            tmp_path / "data" / "masks" / name
        )

    def config(**data):
        return parse_config(
            {
                "output_dir": str(tmp_path / "run"),
                "data": {
                    "dataset": "folder",
                    "images": str(tmp_path / "data" / "images"),
                    "masks": str(tmp_path / "data" / "masks"),
                    "classes": ["bg", "fg"],
                    "group_by": "^(case[0-9])_",
                    "batch_size": 2,
                    **data,
                },
                "model": {"name": "unet", "options": {"base_channels": 4}},
                "train": {"epochs": 1, "progress": False, "tensorboard": False},
            }
        )

    _, run_dir = workflows.train(config(val_fraction=0.25))
    saved = json.loads((run_dir / "splits.json").read_text())
    assert len(saved["val_groups"]) == 1 and len(saved["val"]) == 2
    report = workflows.eval_checkpoint(
        config(val_fraction=0.25), run_dir / "last.pt", tmp_path / "eval"
    )
    assert report["num_images"] == 2
    # A config that draws another split would score other images: refused, naming both.
    for changed in (config(val_fraction=0.5), config(val_fraction=0.25, split_seed=3)):
        with pytest.raises(ConfigError, match=r"splits\.json names other validation items"):
            workflows.eval_checkpoint(changed, run_dir / "last.pt", tmp_path / "eval")
    with pytest.raises(ConfigError, match=r"val_fraction 0\.5 of the groups"):
        workflows.train(config(val_fraction=0.5), resume=True)
    # Resuming into another directory reads the split beside the checkpoint.
    workflows.train(config(val_fraction=0.25), out=tmp_path / "more", resume=run_dir / "last.pt")
    assert json.loads((tmp_path / "more" / "splits.json").read_text()) == saved
    # A fresh run with a fixed validation set in the same directory leaves no stale split
    # behind for eval to pick up.
    fixed = {
        "val_images": str(tmp_path / "data" / "images"),
        "val_masks": str(tmp_path / "data" / "masks"),
    }
    workflows.train(config(**fixed))
    assert not (run_dir / "splits.json").exists()
