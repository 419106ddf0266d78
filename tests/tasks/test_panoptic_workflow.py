"""The panoptic task end to end through the CLI: train, eval and predict need nothing but
the config, the checkpoint and the inputs; predictions are COCO panoptic files that PQ reads
back; resume is exact with augmentation on; COCO panoptic folders train like the shapes."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint
from pixelseg.cli import main
from pixelseg.config import parse_config
from pixelseg.data import SyntheticShapes
from pixelseg.data.coco_panoptic import load_panoptic_json, read_panoptic_png
from pixelseg.metrics import panoptic_quality

pytestmark = pytest.mark.slow

MODEL = {
    "name": "panoptic_fpn",
    "encoder": "mobilenet_v3_large",
    "options": {"norm": "group", "returned_layers": [2, 3, 4], "min_size": 64, "max_size": 64,
                "fpn_channels": 32, "semantic_channels": 32, "box_detections_per_img": 10},
}  # fmt: skip


def tiny(tmp_path, data: dict | None = None, **train) -> dict:
    return {
        "task": "panoptic",
        "output_dir": str(tmp_path / "run"),
        "data": data
        or {
            "synthetic": {"num_train": 4, "num_val": 2, "size": 64},
            "batch_size": 2,
            "augment": [{"name": "hflip", "p": 0.5}, {"name": "scale", "sizes": [56, 64, 72]}],
        },
        "model": MODEL,
        "train": {"iterations": 2, "epochs": None, "progress": False, "tensorboard": False,
                  **train},
        "panoptic": {"score_threshold": 0.0, "stuff_area_threshold": 4},
    }  # fmt: skip


def test_train_eval_predict_through_the_cli(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path)))
    assert main(["train", str(path)]) == 0
    assert "last validation: PQ" in capsys.readouterr().out
    run = tmp_path / "run"
    payload = load_checkpoint(run / "last.pt")
    assert payload["task"] == "panoptic" and payload["fusion"]["stuff_area_threshold"] == 4

    assert main(["eval", str(path), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"pq", "sq", "rq", "pq_things", "pq_stuff", "n", "per_class", "num_images"} <= set(
        report
    )
    for name in ("per_image.csv", "pq_per_class.png", "worst_cases.png"):
        assert (tmp_path / "eval" / name).is_file(), name

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(SyntheticShapes(2, size=(48, 72), seed=5).generate(i)[0]).save(
            images / f"im{i}.png"
        )
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--out", str(out),
                 str(images)]) == 0  # fmt: skip
    for name in ("im0_overlay.png", "im1_segments.json", "panoptic.json", "panoptic/im0.png"):
        assert (out / name).is_file(), name
    assert Image.open(out / "im1_overlay.png").size == (72, 48)  # the input's own size
    doc = load_panoptic_json(out / "panoptic.json", require_categories=True)
    assert [a["file_name"] for a in doc["annotations"]] == ["im0.png", "im1.png"]
    for ann in doc["annotations"]:  # every segment is in its PNG and the reverse
        ids = read_panoptic_png(out / "panoptic" / ann["file_name"])
        assert set(ids[ids > 0].ravel().tolist()) == {s["id"] for s in ann["segments_info"]}
    # PQ of the predictions against themselves, through the COCO files: all matched.
    scores = panoptic_quality(out / "panoptic.json", out / "panoptic.json")
    assert scores["All"]["n"] == 0 or scores["All"]["pq"] == pytest.approx(1.0)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "p2"),
                 "--tta", str(images)]) == 2  # fmt: skip
    assert "semantic models only" in capsys.readouterr().err


def test_resume_is_exact_with_augmentation(tmp_path):
    """Killed after iteration 2 of 4 (checkpoint every 2), resumed: the same weights as a run
    never stopped."""
    settings = {"iterations": 4, "checkpoint_every": 2}
    workflows.train(parse_config(tiny(tmp_path / "a", **settings)))

    class KillAfterTwo:
        def on_step(self, trainer, logs):
            if trainer.state.iteration == 3:
                raise KeyboardInterrupt

    config = parse_config(tiny(tmp_path / "b", **settings))
    with pytest.raises(KeyboardInterrupt):
        workflows.train(config, callbacks=[KillAfterTwo()])
    workflows.train(config, resume=True)
    a = load_checkpoint(tmp_path / "a" / "run" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "run" / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_coco_panoptic_folder_trains_and_evaluates(tmp_path, capsys):
    folder = tmp_path / "shapes_panoptic"
    assert main(["data", "export", "shapes", "--format", "coco_panoptic", "--num", "6",
                 "--size", "64", "--out", str(folder)]) == 0  # fmt: skip
    data = {"dataset": "coco_panoptic", "root": str(folder), "val_fraction": 0.34,
            "batch_size": 2}  # fmt: skip
    config = parse_config(tiny(tmp_path, data))
    _, run = workflows.train(config)
    split = json.loads((run / "splits.json").read_text())
    assert len(split["val"]) == 2 and len(split["train"]) == 4
    report = workflows.eval_checkpoint(config, run / "last.pt", tmp_path / "eval")
    assert report["num_images"] == 2


def test_the_panoptic_demo_trains_evaluates_and_predicts(
    tmp_path, capsys, demo_with_few_val_shapes
):
    out = tmp_path / "demo"
    assert main(["demo", "--task", "panoptic", "--minutes", "0.03", "--out", str(out)]) == 0
    assert "validation PQ" in capsys.readouterr().out
    assert (out / "metrics.json").is_file() and (out / "pq_per_class.png").is_file()
    assert (out / "predictions" / "panoptic.json").is_file()
    assert len(list((out / "predictions").glob("*_overlay.png"))) == 4
