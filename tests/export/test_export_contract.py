"""Every model of every task either exports to ONNX and passes its parity check, or is
refused with a message naming it. Semantic models (``models.available()``) export with
dynamic batch, height and width; every other task's models come from its plug-in's
``model_names()``, so a model or task added to the registry is covered here too, with its
defaults unless TINY makes it smaller (or in the test that COVERED_ELSEWHERE names)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelseg import models
from pixelseg.checkpoints import save_checkpoint
from pixelseg.config import parse_config
from pixelseg.errors import CheckpointError
from pixelseg.export import (
    GRAPH_EXPORTERS,
    ONNX_PREDICTORS,
    export_checkpoint,
    exportable_tasks,
    onnx_session,
)
from pixelseg.tasks import TASKS

from .conftest import untrained_checkpoint

#: Small semantic variants so that each export takes seconds. The FCNs keep the paper's
#: VGG-16: fewer operators to trace than ResNet-18 (an export in 15 s instead of 23 here).
TINY = {
    "fcn32s": {"encoder": "vgg16", "fc_channels": 16},
    "fcn16s": {"encoder": "vgg16", "fc_channels": 16},
    "fcn8s": {"encoder": "vgg16", "fc_channels": 16},
    "unet": {"base_channels": 4},
    "unetpp": {"base_channels": 4, "deep_supervision": True},
    "deeplabv3plus": {"encoder": "resnet18", "aspp_channels": 16, "low_level_channels": 8},
}

#: Small variants of the other tasks' models: the config sections beside the shared one.
DETECTOR = {"norm": "group", "min_size": 64, "max_size": 64, "fpn_channels": 16}
TINY_TASKS = {
    ("volumetric", "unet3d"): {
        "data": {"in_channels": 1},
        # Deep supervision (one logits output in eval) and one anisotropic level, so D has
        # its own size multiple (2) beside H and W (4).
        "model": {"options": {"depth": 3, "width": 4, "deep_supervision": True,
                              "anisotropic_levels": 1}},
        "volumetric": {"patch_size": [6, 12, 12], "samples_per_epoch": 2,
                       "phantom": {"num_train": 1, "num_val": 1, "shape": [24, 24, 12],
                                   "spacing": [6.0, 6.0, 10.0]}},
    },
    # Multi-scale training sizes: the graph resizes to the last, as evaluation does.
    ("instance", "maskrcnn"): {
        "model": {"encoder": "mobilenet_v3_large",
                  "options": {**DETECTOR, "min_size": [48, 64], "mask_head_convs": 1}},
    },
    ("instance", "yolact"): {"model": {"encoder": "resnet18", "options": DETECTOR}},
    ("panoptic", "panoptic_fpn"): {
        "model": {"encoder": "mobilenet_v3_large",
                  "options": {**DETECTOR, "returned_layers": [2, 3, 4]}},
    },
}  # fmt: skip

#: Models without an ONNX export and what their refusal says.
REFUSED = {
    ("instance", "yolact"): "instance model 'yolact', which has no ONNX export",
    ("panoptic", "panoptic_fpn"): "'panoptic' model, which has no ONNX export yet",
}

#: The volumetric task runs every 2D model slice by slice through one generic wrapper
#: (``SliceWise``): one of them stands for all here, since every 2D model's own export is
#: checked by ``test_every_model_exports_with_parity`` (each took about 10 s).
SLICE_MODEL_CHECKED = "unet"

CASES = [
    (task, model)
    for task, plugin in TASKS.items()
    if task != "semantic"
    for model in plugin.model_names()
    if task != "volumetric" or model in ("unet3d", SLICE_MODEL_CHECKED)
]


#: Semantic models whose export is checked elsewhere, on the same small variant, and
#: where: not exported twice (each export takes 15-20 s on a slow CPU).
COVERED_ELSEWHERE = {
    # The shared tiny U-Net (base_channels 4) exported through the CLI: dynamic axes,
    # parity shapes and parity at new sizes in test_onnx_export.py.
    "unet": "tests/export/test_onnx_export.py",
}


def test_every_semantic_model_is_exported_here_or_where_named():
    assert set(COVERED_ELSEWHERE) <= set(models.available())
    for path in COVERED_ELSEWHERE.values():
        assert (Path(__file__).parents[2] / path).is_file(), path


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [name for name in models.available() if name not in COVERED_ELSEWHERE]
)
def test_every_model_exports_with_parity(name, tmp_path):
    options = dict(TINY.get(name, {}))
    encoder = options.pop("encoder", None)
    checkpoint = untrained_checkpoint(tmp_path / f"{name}.pt", name, encoder=encoder, **options)
    result = export_checkpoint(checkpoint, tmp_path / f"{name}.onnx")
    assert result.max_abs_diff <= result.tolerance
    assert len(result.shapes) == 3 and {shape[0] for shape in result.shapes} == {1, 3}
    (graph_input,) = onnx_session(result.model_path).get_inputs()
    assert [isinstance(dim, str) for dim in graph_input.shape] == [True, False, True, True]


def task_checkpoint(task: str, model: str, path):
    """A seeded, untrained checkpoint of ``model`` built through ``task``'s plug-in."""
    raw = {
        "task": task,
        "seed": 0,
        "data": {"synthetic": {"num_train": 2, "num_val": 2, "size": 32}, "batch_size": 2},
        "model": {"name": model},
    }
    tiny = TINY_TASKS.get((task, model))
    if tiny is None and task == "volumetric":  # a 2D model run slice by slice
        options = {k: v for k, v in TINY.get(model, {}).items() if k != "deep_supervision"}
        encoder = options.pop("encoder", None)
        tiny = {**TINY_TASKS[("volumetric", "unet3d")],
                "model": {"encoder": encoder, "options": options}}  # fmt: skip
        tiny["volumetric"] = {**tiny["volumetric"], "patch_size": [1, 32, 32]}
    for section, values in (tiny or {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    plugin = TASKS[task]
    config = parse_config(raw)
    bundle = plugin.build_data(config)
    torch.manual_seed(0)
    net = plugin.build_model(config, bundle)
    meta = plugin.checkpoint_meta(config, bundle, plugin.train_extras(config, bundle, None))
    return save_checkpoint({"model": net.state_dict(), **meta}, path)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "model"), CASES)
def test_every_task_model_exports_or_is_refused(task, model, tmp_path):
    checkpoint = task_checkpoint(task, model, tmp_path / f"{model}.pt")
    out = tmp_path / "out" / f"{model}.onnx"
    if (task, model) in REFUSED:
        with pytest.raises(CheckpointError, match=REFUSED[(task, model)]):
            export_checkpoint(checkpoint, out)
        assert not out.parent.exists() or not list(out.parent.iterdir())
        return
    result = export_checkpoint(checkpoint, out)
    assert result.max_abs_diff <= result.tolerance
    assert result.sidecar["task"] == task and result.sidecar_path.is_file()
    if task == "instance":
        assert result.sidecar["parity"]["unexplained"] == 0
        assert result.sidecar["input_rules"]["min_size"] == 64  # the last training size


def test_exporters_runtimes_and_plugins_name_the_same_tasks():
    with_keys = [name for name, plugin in TASKS.items() if plugin.export_keys]
    assert exportable_tasks() == list(GRAPH_EXPORTERS) == list(ONNX_PREDICTORS)
    assert sorted(with_keys) == sorted(exportable_tasks())
    for name in exportable_tasks():
        # The sidecar carries what task_from_checkpoint and read_sidecar need.
        assert set(TASKS[name].checkpoint_keys) <= set(TASKS[name].export_keys), name
