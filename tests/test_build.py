"""The config-to-data wiring (build.py): what a config turns into, checked directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelseg import build, losses
from pixelseg.config import parse_config
from pixelseg.errors import ConfigError
from pixelseg.tasks import semantic_setup

ROOT = Path(__file__).resolve().parents[1]


def synthetic(**data):
    return parse_config({"data": {"synthetic": {"num_train": 6, "num_val": 2, "size": 32}, **data}})


def write_folder(root: Path, sizes: list[tuple[int, int]], classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for index, (h, w) in enumerate(sizes):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{index}.png")
        mask = rng.integers(0, classes, (h, w), dtype=np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"im{index}.png")
    return root


def test_padding_gets_an_ignore_value_when_the_dataset_has_none():
    """scale_crop below the crop size pads; those pixels must not be trained as class 0."""
    config = synthetic(augment=[{"name": "scale_crop", "size": [48, 48], "scale": [0.5, 0.5]}])
    bundle = build.build_datasets(config)
    assert bundle.ignore_index == build.PAD_IGNORE
    mask = bundle.train[0]["mask"]
    assert mask.shape == (48, 48)
    # A 32-pixel image at half scale is 16x16: the rest of the 48x48 crop is padding.
    assert int((mask == build.PAD_IGNORE).sum()) == 48 * 48 - 16 * 16
    task = build.build_task(config, bundle)
    assert task.ignore_index == build.PAD_IGNORE
    assert task.new_metrics().matrix.ignore_index == build.PAD_IGNORE


def test_padding_uses_the_datasets_own_ignore_value(tmp_path):
    root = write_folder(tmp_path, [(20, 24)] * 3)
    config = parse_config(
        {
            "data": {
                "dataset": "folder",
                "images": str(root / "images"),
                "masks": str(root / "masks"),
                "classes": ["a", "b", "c"],
                "ignore_index": 7,
                "val_fraction": 0.34,
                "augment": [{"name": "pad", "size": [32, 32]}],
            }
        }
    )
    bundle = build.build_datasets(config)
    assert bundle.ignore_index == 7
    mask = bundle.train[0]["mask"]
    assert (
        mask.shape == (32, 32) and bool((mask[20:] == 7).all()) and bool((mask[:, 24:] == 7).all())
    )


def test_no_ignore_value_is_invented_without_a_padding_transform():
    assert build.build_datasets(synthetic(augment=[{"name": "hflip"}])).ignore_index is None


def test_random_validation_transforms_are_refused_not_dropped():
    with pytest.raises(ConfigError, match=r"val_transforms\[0\] 'pad_crop' is random"):
        build.build_datasets(synthetic(val_transforms=[{"name": "pad_crop", "size": 32}]))


def test_class_weights_are_counted_on_the_stored_masks_and_repeat(monkeypatch):
    config = synthetic(augment=[{"name": "scale_crop", "size": [32, 32]}])
    config.loss.class_weights = "inverse"
    bundle = build.build_datasets(config)
    first = build.count_class_weights(config, bundle)
    # Counting never runs the (random) training augmentation.
    transform = bundle.train.transform
    monkeypatch.setattr(bundle.train, "transform", lambda *a: pytest.fail("augmented"))
    assert build.count_class_weights(config, bundle) == first
    bundle.train.transform = transform
    stored = [bundle.train.generate(i)[1] for i in range(len(bundle.train))]
    expected = losses.class_weights(losses.count_labels(stored, 4), "inverse").tolist()
    assert first == pytest.approx(expected)
    config.loss.class_weights = None
    assert build.count_class_weights(config, bundle) is None


def test_loss_gets_the_ignore_value_and_the_weights():
    config = synthetic(augment=[{"name": "pad", "size": [40, 40]}])
    bundle = build.build_datasets(config)
    loss = semantic_setup.build_loss(config, bundle, class_weights=[1.0, 2.0, 3.0, 4.0])
    logits = torch.randn(1, 4, 2, 2)
    target = torch.tensor([[[0, 1], [255, 3]]])
    reference = torch.nn.functional.cross_entropy(
        logits, target, weight=torch.tensor([1.0, 2.0, 3.0, 4.0]), ignore_index=255
    )
    assert float(loss(logits, target)) == pytest.approx(float(reference), rel=1e-5)


def test_membrane_preset_uses_val_fraction_and_split_seed(tmp_path):
    for index in range(10):
        for sub in ("image", "label"):
            (tmp_path / sub).mkdir(exist_ok=True)
            array = np.full((8, 8), 255 * (index % 2), np.uint8)
            Image.fromarray(array).save(tmp_path / sub / f"{index}.png")

    def split(**data):
        config = parse_config(
            {"data": {"dataset": "membrane", "root": str(tmp_path), "in_channels": 1, **data}}
        )
        bundle = build.build_datasets(config)
        return bundle.train.stems, bundle.val.stems

    train, val = split(val_fraction=0.3)
    assert len(val) == 3 and len(train) == 7
    assert split(val_fraction=0.3, split_seed=5) != (train, val)


def test_camvid_eval_split_reads_the_named_split(tmp_path):
    for split in ("train", "val", "test"):
        for index in range(2):
            for folder in (split, f"{split}annot"):
                (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
                tmp_path / split / f"{split}{index}.png"
            )
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(
                tmp_path / f"{split}annot" / f"{split}{index}.png"
            )
    base = {"dataset": "camvid", "root": str(tmp_path)}
    assert build.build_datasets(parse_config({"data": base})).val.stems == ["val0", "val1"]
    bundle = build.build_datasets(parse_config({"data": {**base, "eval_split": "test"}}))
    assert bundle.val.stems == ["test0", "test1"]
    assert bundle.train.stems == ["train0", "train1"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"dataset": "camvid", "root": "x", "val_split": "test"}, "data.eval_split: test"),
        ({"dataset": "membrane", "root": "x", "eval_split": "test"}, "eval_split has no effect"),
        ({"dataset": "synthetic", "images": "x"}, "images has no effect"),
        ({"dataset": "camvid", "root": "x", "val_fraction": 0.5}, "val_fraction has no effect"),
    ],
)
def test_keys_without_effect_for_the_dataset_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": data})


def test_a_dumped_config_with_every_default_still_validates(tmp_path):
    from pixelseg.config import dump_config, load_config

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        dumped = dump_config(load_config(path), tmp_path / path.name)
        assert load_config(dumped) == load_config(path)


def test_checkpoint_meta_is_json_data():
    import json

    config = synthetic()
    bundle = build.build_datasets(config)
    meta = build.checkpoint_meta(config, bundle, {"class_weights": [1.0, 2.0, 3.0, 4.0]})
    assert json.loads(json.dumps(meta)) == meta
    assert meta["class_weights"] == [1.0, 2.0, 3.0, 4.0]
    assert meta["classes"] == bundle.classes and meta["task"] == "semantic"
    assert meta["input_size"] == [32, 32]


def write_camvid(root: Path, videos: dict[str, int]) -> Path:
    for split, names in (("train", videos), ("val", {"0016E5": 2})):
        for video, count in names.items():
            for index in range(count):
                for folder in (split, f"{split}annot"):
                    (root / folder).mkdir(parents=True, exist_ok=True)
                name = f"{video}_{index:05d}.png"
                Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / split / name)
                Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / f"{split}annot" / name)
    return root


def test_camvid_val_groups_resplit_train_and_shared_groups_warn(tmp_path, caplog):
    root = write_camvid(tmp_path, {"0001TP": 3, "0006R0": 2, "0016E5": 4})
    base = {"dataset": "camvid", "root": str(root)}
    with caplog.at_level("WARNING"):
        plain = build.build_datasets(parse_config({"data": base}))
    assert plain.val.stems == ["0016E5_00000", "0016E5_00001"] and plain.split is None
    assert "share groups 0016E5" in caplog.text
    bundle = build.build_datasets(parse_config({"data": {**base, "val_groups": ["0006R0"]}}))
    assert bundle.val.stems == ["0006R0_00000", "0006R0_00001"]
    assert {s[:6] for s in bundle.train.stems} == {"0001TP", "0016E5"}
    assert bundle.split["val_groups"] == ["0006R0"]
    reused = build.build_datasets(parse_config({"data": base}), split=bundle.split)
    assert reused.val.stems == bundle.val.stems


def test_folder_folds_over_groups(tmp_path):
    root = write_folder(tmp_path, [(8, 8)] * 6)
    for index, path in enumerate(sorted((root / "images").iterdir())):
        for sub in ("images", "masks"):
            (root / sub / path.name).rename(root / sub / f"p{index % 3}_{path.name}")
    data = {
        "dataset": "folder",
        "images": str(root / "images"),
        "masks": str(root / "masks"),
        "classes": ["a", "b", "c"],
        "group_by": "^(p[0-9])_",
        "num_folds": 3,
    }
    vals = [
        build.build_datasets(parse_config({"data": {**data, "fold": f}})).split["val_groups"]
        for f in range(3)
    ]
    assert sorted(g for v in vals for g in v) == ["p0", "p1", "p2"]
