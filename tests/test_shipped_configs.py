"""Every shipped config trains for a step and validates (STYLE 13: test the glue). The
real-data configs skip with a reason when ../shared/data is absent; VOC has its own test
on a folder it writes (tests/engine/test_resume_and_validation.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelseg import workflows
from pixelseg.config import load_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

QUICK = ["train.iterations=1", "train.epochs=null", "train.progress=false",
         "train.tensorboard=false", "data.num_workers=0", "data.batch_size=2"]  # fmt: skip
CASES = {
    "shapes_unet.yaml": (None, ["data.synthetic.num_train=4", "data.synthetic.num_val=2"]),
    # Validate on the smallest training video (62 frames) rather than all of val/.
    "camvid_unet.yaml": ("camvid", ["data.val_groups=[0001TP]"]),
    "camvid_deeplabv3plus.yaml": ("camvid", ["data.val_groups=[0001TP]", "model.encoder=resnet18"]),
    "membrane_unet.yaml": ("membrane", []),
}


def test_every_shipped_config_is_covered():
    covered = set(CASES) | {"voc_deeplabv3plus.yaml"}
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
    assert config.train.best_metric in metrics
