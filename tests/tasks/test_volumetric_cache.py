"""``volumetric.cache_dir``: the same patches and validation cases as in memory for the same
seed, training read from memory maps, and a changed source file or setting rebuilding its
entry, for phantoms and NIfTI folders."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pixelseg.config import parse_config
from pixelseg.errors import ConfigError
from pixelseg.medical.nifti import write_nifti
from pixelseg.medical.phantom import make_phantom
from pixelseg.tasks.volumetric_data import build_volumetric_data

PHANTOM = {"num_train": 2, "num_val": 1, "shape": [28, 28, 16], "spacing": [3.0, 3.0, 4.0]}


def config(tmp_path, cache_dir=None, data=None, **volumetric):
    return parse_config({
        "task": "volumetric", "seed": 3, "output_dir": str(tmp_path / "run"),
        "data": data or {"in_channels": 1, "augment": [{"name": "flip", "axes": [1, 2]}]},
        "volumetric": {"patch_size": [8, 16, 16], "samples_per_epoch": 12,
                       "foreground_fraction": 0.5, "phantom": PHANTOM,
                       "cache_dir": None if cache_dir is None else str(cache_dir), **volumetric},
    })  # fmt: skip


def patches(train, seeds=range(12)):
    out = []
    for index in seeds:
        train.transform.set_seed(1000 + index)
        out.append(train[index])
    return out


def assert_same_data(a, b):
    for x, y in zip(patches(a.train), patches(b.train), strict=True):
        assert x["name"] == y["name"]
        assert x["image"].dtype == y["image"].dtype and x["mask"].dtype == y["mask"].dtype
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["mask"], y["mask"])
    assert a.train.sampler.pad_image == b.train.sampler.pad_image
    assert len(a.val) == len(b.val)
    for index in range(len(a.val)):
        x, y = a.val[index], b.val[index]
        assert x["name"] == y["name"] and x["spacing"] == y["spacing"]
        assert x["image"].dtype == y["image"].dtype and x["mask"].dtype == y["mask"].dtype
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["mask"], y["mask"])
        p, q = a.val.case(index), b.val.case(index)
        assert np.array_equal(p.affine, q.affine) and p.source_shape == q.source_shape
        assert np.array_equal(p.source_affine, q.source_affine)


def test_phantoms_draw_the_same_patches_and_validation_cases_from_the_cache(tmp_path, caplog):
    memory = build_volumetric_data(config(tmp_path))
    with caplog.at_level(logging.INFO, logger="pixelseg.tasks.volumetric_cache"):
        cached = build_volumetric_data(config(tmp_path, tmp_path / "cache"))
        assert "0 training cases read, 2 prepared" in caplog.text
        again = build_volumetric_data(config(tmp_path, tmp_path / "cache"))
        assert "2 training cases read, 0 prepared" in caplog.text
    assert all(isinstance(image, np.memmap) for image in cached.train.images)
    assert all(isinstance(label, np.memmap) for label in again.train.labels)
    assert not any(isinstance(image, np.memmap) for image in memory.train.images)
    foreground = [draw for draw in patches(memory.train) if draw["mask"].any()]
    assert foreground  # the comparison covers foreground-centred draws too
    assert_same_data(memory, cached)
    assert_same_data(memory, again)


def test_cached_training_data_pickles_by_file_name_for_spawned_workers(tmp_path):
    import pickle

    memory = build_volumetric_data(config(tmp_path)).train
    cached = build_volumetric_data(config(tmp_path, tmp_path / "cache")).train
    volume_bytes = sum(image.nbytes for image in memory.images)
    assert len(pickle.dumps(memory)) > volume_bytes  # by value: every voxel
    sent = pickle.dumps(cached)
    assert len(sent) < volume_bytes / 10
    received = pickle.loads(sent)
    assert all(isinstance(a, np.memmap) for a in received.images + received.labels)
    for x, y in zip(patches(received), patches(memory), strict=True):
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["mask"], y["mask"])


def write_cases(folder, seeds):
    for seed in seeds:
        image, label = make_phantom(seed, shape=(24, 28, 12), spacing=(3.0, 3.0, 4.0))
        write_nifti(image.array, image.affine, folder / "images" / f"lung_{seed}.nii.gz")
        write_nifti(label.array, label.affine, folder / "labels" / f"lung_{seed}.nii.gz")


def nifti(tmp_path, cache_dir=None, **volumetric):
    data = {"dataset": "nifti", "images": str(tmp_path / "images"), "in_channels": 1,
            "masks": str(tmp_path / "labels"), "classes": ["background", "nodule"],
            "val_fraction": 0.25, "split_seed": 1}  # fmt: skip
    return config(tmp_path, cache_dir, data, **volumetric)


def test_nifti_training_reads_memmaps_and_a_rewritten_file_is_rebuilt(tmp_path, caplog):
    write_cases(tmp_path, range(4))
    cache = tmp_path / "cache"
    memory = build_volumetric_data(nifti(tmp_path))
    cached = build_volumetric_data(nifti(tmp_path, cache))
    assert len(cached.train.images) == 3 and len(cached.val) == 1
    assert all(isinstance(a, np.memmap) for a in cached.train.images + cached.train.labels)
    assert_same_data(memory, cached)
    entries = sorted(p.name for p in cache.glob("*.json"))
    assert len(entries) == 4  # three training cases, and the validation case on first use

    # A source rewritten with other content: its entry is rebuilt, the stale one never read.
    train_name = cached.train.names[0]
    seed = int(train_name.split("_")[1])
    image, _ = make_phantom(seed + 50, shape=(24, 28, 12), spacing=(3.0, 3.0, 4.0))
    write_nifti(image.array, image.affine, tmp_path / "images" / f"{train_name}.nii.gz")
    with caplog.at_level(logging.INFO, logger="pixelseg.tasks.volumetric_cache"):
        rebuilt = build_volumetric_data(nifti(tmp_path, cache))
    assert "2 training cases read, 1 prepared" in caplog.text
    fresh = build_volumetric_data(nifti(tmp_path))
    assert_same_data(fresh, rebuilt)
    assert not np.array_equal(rebuilt.train.images[0], cached.train.images[0])

    # Other preprocessing: other entries beside the first ones.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pixelseg.tasks.volumetric_cache"):
        build_volumetric_data(nifti(tmp_path, cache, window="mediastinum"))
    assert "0 training cases read, 3 prepared" in caplog.text


def test_a_cache_dir_that_is_a_file_is_a_config_error_naming_the_key(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"volumetric\.cache_dir"):
        build_volumetric_data(config(tmp_path, tmp_path / "taken"))
    with pytest.raises(ConfigError, match=r"volumetric\.cache_dir"):
        config(tmp_path, " ")


@pytest.mark.slow
def test_training_and_evaluation_are_identical_with_the_cache(tmp_path):
    import torch

    from pixelseg import workflows
    from pixelseg.checkpoints import load_checkpoint

    def run(folder, cache_dir):
        raw = {
            "task": "volumetric", "seed": 5, "output_dir": str(folder / "run"),
            "data": {"in_channels": 1, "batch_size": 2, "num_workers": 1,
                     "augment": [{"name": "flip", "axes": [1, 2]}]},
            "model": {"name": "unet3d", "options": {"depth": 2, "width": 4}},
            "loss": {"terms": [{"name": "ce"}, {"name": "dice"}]},
            "volumetric": {"patch_size": [8, 16, 16], "samples_per_epoch": 4, "phantom": PHANTOM,
                           "cache_dir": cache_dir},
            "train": {"iterations": 3, "epochs": None, "progress": False, "tensorboard": False},
        }  # fmt: skip
        cfg = parse_config(raw)
        _, out = workflows.train(cfg)
        scores = workflows.eval_checkpoint(cfg, out / "last.pt", folder / "eval")
        return load_checkpoint(out / "last.pt")["model"], scores

    weights_a, scores_a = run(tmp_path / "a", None)
    weights_b, scores_b = run(tmp_path / "b", str(tmp_path / "cache"))
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert scores_a["num_cases"] == scores_b["num_cases"] == 1
    assert scores_a["dice"] == scores_b["dice"] and scores_a["hd95"] == scores_b["hd95"]
