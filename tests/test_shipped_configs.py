"""Every shipped config trains for a step and validates (STYLE 13: test the glue). The
real-data configs skip with a reason when ../shared/data is absent; VOC has its own test
on a folder it writes (tests/engine/test_resume_and_validation.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelseg import workflows
from pixelseg.config import load_config
from pixelseg.tasks import InstanceTask, PanopticTask, SemanticTask, VolumetricTask

TASK_CLASSES = {
    task.name: task for task in (SemanticTask, InstanceTask, PanopticTask, VolumetricTask)
}

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

QUICK = ["train.iterations=1", "train.epochs=null", "train.progress=false",
         "train.tensorboard=false", "data.num_workers=0", "data.batch_size=2"]  # fmt: skip
SMALL_VAL = "data.val_transforms=[{name: resize, size: [96, 128]}]"
CASES = {
    "shapes_unet.yaml": (None, ["data.synthetic.num_train=4", "data.synthetic.num_val=2"]),
    # Validate on the smallest training video (62 frames) rather than all of val/, at a
    # quarter of the size: the step is what is checked, not the score.
    "camvid_unet.yaml": ("camvid", ["data.val_groups=[0001TP]", SMALL_VAL]),
    "camvid_deeplabv3plus.yaml": (
        "camvid",
        ["data.val_groups=[0001TP]", "model.encoder=resnet18", SMALL_VAL],
    ),
    "membrane_unet.yaml": ("membrane", []),
    "shapes_maskrcnn.yaml": (None, ["data.synthetic.num_train=4", "data.synthetic.num_val=2"]),
    "shapes_yolact.yaml": (None, ["data.synthetic.num_train=4", "data.synthetic.num_val=2"]),
    # Validate on 5 of the 120 images, at a small size, to keep the step quick.
    "shapes_panoptic_fpn.yaml": (
        None,
        [
            "data.synthetic.num_train=4",
            "data.synthetic.num_val=2",
            "data.synthetic.size=64",
            "model.options.min_size=64",
            "model.options.max_size=64",
        ],
    ),
    "phantom_unet3d.yaml": (
        None,
        [
            "volumetric.phantom.num_train=2",
            "volumetric.phantom.num_val=1",
            "volumetric.phantom.shape=[40,40,24]",
            "volumetric.phantom.spacing=[3.6,3.6,5.0]",
        ],
    ),
    "phantom_unet2d.yaml": (
        None,
        [
            "volumetric.phantom.num_train=2",
            "volumetric.phantom.num_val=1",
            "volumetric.phantom.shape=[40,40,24]",
            "volumetric.phantom.spacing=[3.6,3.6,5.0]",
        ],
    ),
    "pennfudan_maskrcnn.yaml": (
        "pennfudan",
        ["data.val_fraction=0.05", "model.options.min_size=[128]", "model.options.max_size=192"],
    ),
}


def test_every_shipped_config_is_covered():
    covered = set(CASES) | {
        "voc_deeplabv3plus.yaml",
        "coco_maskrcnn.yaml",
        "msd_lung_patches_unet.yaml",
    }
    assert {p.name for p in (ROOT / "configs").glob("*.yaml")} == covered


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_config_trains_a_step(name, tmp_path):
    data, extra = CASES[name]
    overrides = [*QUICK, f"output_dir={tmp_path / 'run'}", *extra]
    if data is not None:
        if not (SHARED / data).is_dir():
            pytest.skip(f"real data {SHARED / data} not present (see ../shared/data/README.md)")
        overrides.append(f"data.root={SHARED / data}")
    config = load_config(ROOT / "configs" / name, overrides)
    metrics, run_dir = workflows.train(config)
    assert (run_dir / "last.pt").is_file()
    default = TASK_CLASSES[config.task].default_best_metric
    assert (config.train.best_metric or default) in metrics


def test_coco_config_trains_on_an_exported_folder(tmp_path):
    """configs/coco_maskrcnn.yaml on the folder `pixelseg data export` writes (small images)."""
    from pixelseg.data_export import export_dataset

    export_dataset("shapes", tmp_path / "coco", num=6, size=64, seed=1)
    overrides = [*QUICK, f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'coco'}",
                 "data.num_workers=0", "data.val_fraction=0.34", "model.encoder=resnet18",
                 "model.options.min_size=[64]", "model.options.max_size=64"]  # fmt: skip
    config = load_config(ROOT / "configs" / "coco_maskrcnn.yaml", overrides)
    metrics, run_dir = workflows.train(config)
    assert (run_dir / "last.pt").is_file() and "mask_ap" in metrics
    assert (run_dir / "splits.json").is_file()


def test_msd_lung_config_trains_on_patch_folders(tmp_path):
    """configs/msd_lung_patches_unet.yaml on grey 48x48 image/mask folders of the form
    benchmarks/msd_lung.py writes (a bright disc of tumour on noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for part in ("train", "test"):
        for sub in ("images", "masks"):
            (tmp_path / part / sub).mkdir(parents=True)
        for i in range(3):
            mask = ((yy - 24) ** 2 + (xx - 20 - i) ** 2 <= 36).astype(np.uint8)
            grey = rng.integers(0, 100, size=(48, 48)) + 120 * mask
            Image.fromarray(grey.astype(np.uint8)).save(tmp_path / part / "images" / f"p{i}.png")
            Image.fromarray(mask).save(tmp_path / part / "masks" / f"p{i}.png")
    folders = [f"data.{key}={tmp_path / part / sub}" for key, part, sub in (
        ("images", "train", "images"), ("masks", "train", "masks"),
        ("val_images", "test", "images"), ("val_masks", "test", "masks"))]  # fmt: skip
    overrides = [*QUICK, f"output_dir={tmp_path / 'run'}", *folders]
    config = load_config(ROOT / "configs" / "msd_lung_patches_unet.yaml", overrides)
    metrics, run_dir = workflows.train(config)
    assert (run_dir / "last.pt").is_file() and "mdice" in metrics
    assert config.data.in_channels == 1
