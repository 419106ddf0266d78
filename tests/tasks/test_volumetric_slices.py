"""2D models on slices in the volumetric task: a 2.5D U-Net trains on phantom patches,
evaluates whole held-out phantoms (metrics.json), its checkpoint alone rebuilds it for
evaluation and predict (a NIfTI mask on the input's grid); configs that cannot work on
slices fail naming the key."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint
from pixelseg.config import parse_config
from pixelseg.errors import ConfigError
from pixelseg.medical.io import read_volume
from pixelseg.medical.nifti import write_nifti
from pixelseg.medical.phantom import make_phantom
from pixelseg.models import create
from pixelseg.models.slicewise import SliceWise
from pixelseg.tasks import TASKS

PLUGIN = TASKS["volumetric"]
PHANTOM = {"num_train": 2, "num_val": 2, "shape": [40, 40, 24], "spacing": [3.0, 3.0, 4.0]}


def slice_config(tmp_path, model: dict | None = None, **sections) -> dict:
    raw = {
        "task": "volumetric",
        "output_dir": str(tmp_path / "run"),
        "data": {"in_channels": 1, "batch_size": 2,
                 "augment": [{"name": "flip", "axes": [1, 2]},
                             {"name": "rotate", "angle": 10, "axes": [0], "p": 0.5}]},
        "model": model or {"name": "unet", "options": {"base_channels": 4, "context_slices": 1}},
        "loss": {"terms": [{"name": "ce"}, {"name": "dice"}]},
        "volumetric": {"patch_size": [3, 24, 24], "samples_per_epoch": 4, "phantom": PHANTOM},
        "train": {"iterations": 2, "epochs": None, "progress": False, "tensorboard": False,
                  "threads": 1},
    }  # fmt: skip
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


@pytest.mark.slow
def test_a_2d_model_on_slices_trains_evaluates_and_predicts_from_its_checkpoint(tmp_path):
    config = parse_config(slice_config(tmp_path))
    trained, run = workflows.train(config)
    payload = load_checkpoint(run / "last.pt")
    assert payload["model_spec"] == {
        "name": "unet",
        "num_classes": 2,
        "in_channels": 1,
        "encoder": None,
        "options": {"base_channels": 4, "context_slices": 1},
    }
    # The checkpoint alone rebuilds the 2.5D U-Net: the same logits as one built by hand.
    model = PLUGIN.predictor_from_checkpoint(payload)
    assert isinstance(model, SliceWise) and model.context_slices == 1 and not model.training
    by_hand = SliceWise(create("unet", 2, in_channels=3, base_channels=4), 1, context_slices=1)
    by_hand.load_state_dict(payload["model"])
    x = torch.randn(1, 1, 4, 24, 24)
    with torch.no_grad():
        assert torch.equal(model(x), by_hand.eval()(x))

    metrics = workflows.eval_checkpoint(config, run / "last.pt", tmp_path / "eval")
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["num_cases"] == metrics["num_cases"] == trained["num_cases"] == 2
    assert report["dice"]["mean"] == pytest.approx(trained["dice"], abs=1e-6)
    assert (tmp_path / "eval" / "montages" / "phantom_val_000.png").is_file()

    image, _ = make_phantom(9, shape=(36, 40, 20), spacing=(3.0, 3.0, 4.0), orientation="LPS")
    source = tmp_path / "in" / "case.nii.gz"
    write_nifti(image.array, image.affine, source)
    workflows.predict_files(run / "last.pt", [str(source)], tmp_path / "pred")
    written = read_volume(tmp_path / "pred" / "case_seg.nii.gz")
    assert written.shape == image.shape and np.allclose(written.affine, read_volume(source).affine)
    assert set(np.unique(written.array)) <= {0, 1}


def _build_model(raw: dict):
    config = parse_config(raw)
    return PLUGIN.build_model(config, SimpleNamespace(num_classes=2))


@pytest.mark.parametrize(
    ("model", "sections", "message"),
    [
        ({"name": "unet", "options": {"depth": 3}},
         {}, r"model: option\(s\) 'depth' belong to the 3D model"),
        ({"name": "unetpp", "options": {"deep_supervision": True}},
         {}, "model: option 'deep_supervision' of 2D model 'unetpp' is not supported"),
        ({"name": "unet", "options": {"context_slices": 2}},
         {}, r"volumetric.patch_size \[3, 24, 24\] is 3 slice\(s\) deep, but model.options."
             r"context_slices 2 needs at least 5"),
        ({"name": "unet", "options": {"context_slices": 1}},
         {"eval": {"window": [1, 24, 24]}}, r"eval.window \[1, 24, 24\] is 1 slice\(s\) deep"),
        ({"name": "unet3d", "encoder": "resnet18"},
         {}, "model.name 'unet3d' is a 3D model and has no encoder"),
    ],
)  # fmt: skip
def test_what_cannot_work_on_slices_is_a_config_error_naming_the_key(
    tmp_path, model, sections, message
):
    with pytest.raises(ConfigError, match=message):
        _build_model(slice_config(tmp_path, model, **sections))


def test_a_patch_off_the_size_multiple_works_padded_with_a_warning(tmp_path, caplog):
    model = {"name": "deeplabv3plus", "encoder": "mobilenet_v3_large",
             "options": {"aspp_channels": 8}}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pixelseg.tasks.volumetric_setup"):
        built = _build_model(slice_config(tmp_path, model, volumetric={"patch_size": [1, 24, 40]}))
    assert "volumetric.patch_size [1, 24, 40]" in caplog.text
    assert "24x40 to 32x48 (multiples of 16)" in caplog.text
    with torch.no_grad():
        assert built.eval()(torch.zeros(1, 1, 1, 24, 40)).shape == (1, 2, 1, 24, 40)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pixelseg.tasks.volumetric_setup"):
        _build_model(slice_config(tmp_path, model, volumetric={"patch_size": [1, 32, 48]}))
    assert caplog.text == ""


def test_one_slice_patches_refuse_rotations_out_of_the_slice(tmp_path):
    raw = slice_config(tmp_path, {"name": "unet"}, volumetric={"patch_size": [1, 24, 24]},
                       data={"augment": [{"name": "flip", "axes": [1, 2]},
                                         {"name": "rotate", "angle": 15}]})  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.augment\[1\] \(rotate\) turns about axes 1"):
        PLUGIN.build_data(parse_config(raw))
    raw["data"]["augment"][1]["axes"] = [0]
    assert len(PLUGIN.build_data(parse_config(raw)).train) == 4
