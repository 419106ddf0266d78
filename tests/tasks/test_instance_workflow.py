"""The instance task end to end through the CLI: train, eval and predict need nothing but
the config, the checkpoint and the inputs; resume is exact with augmentation on."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint
from pixelseg.cli import main
from pixelseg.config import parse_config

pytestmark = pytest.mark.slow

SMALL = {
    "maskrcnn": {
        "encoder": "mobilenet_v3_large",
        "options": {"norm": "group", "min_size": 64, "max_size": 64, "fpn_channels": 32,
                    "box_detections_per_img": 10},
    },
    "yolact": {
        "encoder": "resnet18",
        "options": {"norm": "group", "min_size": 64, "max_size": 64, "fpn_channels": 32,
                    "anchor_sizes": [8, 16, 32, 64, 128], "detections_per_img": 10},
    },
}  # fmt: skip


def tiny(tmp_path, model: str = "maskrcnn", **train) -> dict:
    return {
        "task": "instance",
        "output_dir": str(tmp_path / "run"),
        "data": {
            "synthetic": {"num_train": 4, "num_val": 2, "size": 64},
            "batch_size": 2,
            "augment": [{"name": "hflip", "p": 0.5}, {"name": "color", "brightness": 0.2}],
        },
        "model": {"name": model, **SMALL[model]},
        "train": {"iterations": 2, "epochs": None, "progress": False, "tensorboard": False,
                  **train},
    }  # fmt: skip


@pytest.mark.parametrize("model", ["maskrcnn", "yolact"])
def test_train_eval_predict_through_the_cli(model, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path, model)))
    assert main(["train", str(path)]) == 0
    assert "last validation: mask AP" in capsys.readouterr().out
    run = tmp_path / "run"
    payload = load_checkpoint(run / "last.pt")
    assert payload["task"] == "instance" and payload["classes"] == ["circle", "square", "triangle"]

    assert main(["eval", str(path), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"mask_ap", "mask_ap50", "box_ap", "box_ar100", "per_class", "num_images"} <= set(report)
    for name in ("per_image.csv", "pr_curves.png", "worst_cases.png"):
        assert (tmp_path / "eval" / name).is_file(), name

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    from pixelseg.data import SyntheticShapes

    for i in range(2):
        Image.fromarray(SyntheticShapes(2, size=(48, 72), seed=5).generate(i)[0]).save(
            images / f"im{i}.png"
        )
    out = tmp_path / "pred"
    assert (
        main(["predict", "--checkpoint", str(run / "last.pt"), "--out", str(out), str(images)]) == 0
    )
    for name in ("im0_overlay.png", "im1_results.json", "results.json", "images.json"):
        assert (out / name).is_file(), name
    assert Image.open(out / "im1_overlay.png").size == (72, 48)  # the input's own size
    assert [im["file_name"] for im in json.loads((out / "images.json").read_text())] == [
        "im0",
        "im1",
    ]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--out", str(out),
                 "--tta", str(images)]) == 2  # fmt: skip
    assert "semantic models only" in capsys.readouterr().err
    # Threshold 0: every detection is drawn; results.json keeps them all either way.
    drawn = tmp_path / "pred_all"
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--out", str(drawn),
                 "--score-threshold", "0", str(images)]) == 0  # fmt: skip
    assert (drawn / "results.json").read_text() == (out / "results.json").read_text()


def test_resume_is_exact_with_augmentation(tmp_path):
    """Killed after iteration 2 of 4 (checkpoint every 2), resumed: the same weights as a run
    never stopped (augmentation, RPN/RoI sampling and the schedule all continue exactly)."""
    settings = {"iterations": 4, "checkpoint_every": 2}
    workflows.train(parse_config(tiny(tmp_path / "a", **settings)))

    class KillAfterTwo:
        def on_step(self, trainer, logs):
            if trainer.state.iteration == 3:
                raise KeyboardInterrupt

    config = parse_config(tiny(tmp_path / "b", **settings))
    with pytest.raises(KeyboardInterrupt):
        workflows.train(config, callbacks=[KillAfterTwo()])
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt")["state"]["iteration"] == 2
    workflows.train(config, resume=True)
    a = load_checkpoint(tmp_path / "a" / "run" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "run" / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_semantic_checkpoint_is_refused_by_an_instance_eval(tmp_path):
    semantic = parse_config(
        {
            "output_dir": str(tmp_path / "sem"),
            "data": {"synthetic": {"num_train": 2, "num_val": 2, "size": 32}, "batch_size": 2},
            "model": {"name": "unet", "options": {"base_channels": 4}},
            "train": {"iterations": 1, "epochs": None, "progress": False, "tensorboard": False},
        }
    )
    _, run = workflows.train(semantic)
    config = parse_config(tiny(tmp_path))
    with pytest.raises(Exception, match="is a 'semantic' model; the config's task is 'instance'"):
        workflows.eval_checkpoint(config, run / "last.pt", tmp_path / "eval")


def test_the_instance_demo_trains_evaluates_and_predicts(
    tmp_path, capsys, demo_with_few_val_shapes
):
    out = tmp_path / "demo"
    assert main(["demo", "--task", "instance", "--minutes", "0.03", "--out", str(out)]) == 0
    assert "validation mask AP" in capsys.readouterr().out
    assert (out / "metrics.json").is_file() and (out / "worst_cases.png").is_file()
    assert (out / "predictions" / "results.json").is_file()
    assert len(list((out / "predictions").glob("*_overlay.png"))) == 4
