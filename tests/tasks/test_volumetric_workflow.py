"""The volumetric task end to end: train on phantom patches, evaluate whole held-out
phantoms into the case report, predict NIfTI and DICOM inputs into NIfTI labels on each
input's own grid; an MSD folder made by `pixelseg medical prepare` trains the same way;
resume is exact; the demo runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from pixelseg import workflows
from pixelseg.checkpoints import load_checkpoint
from pixelseg.cli import main
from pixelseg.config import parse_config
from pixelseg.medical.dicom_writer import write_dicom_series
from pixelseg.medical.io import read_volume
from pixelseg.medical.nifti import write_nifti
from pixelseg.medical.phantom import make_phantom

pytestmark = pytest.mark.slow

PHANTOM = {"num_train": 2, "num_val": 2, "shape": [40, 40, 24], "spacing": [3.0, 3.0, 4.0]}


def tiny(tmp_path, data: dict | None = None, **train) -> dict:
    return {
        "task": "volumetric",
        "output_dir": str(tmp_path / "run"),
        "data": data or {"in_channels": 1, "batch_size": 2,
                         "augment": [{"name": "flip", "axes": [1, 2]},
                                     {"name": "rotate", "angle": 10, "axes": [0], "p": 0.5}]},
        "model": {"name": "unet3d", "options": {"depth": 3, "width": 4}},
        "loss": {"terms": [{"name": "ce"}, {"name": "dice"}]},
        "volumetric": {"patch_size": [16, 24, 24], "samples_per_epoch": 4, "phantom": PHANTOM},
        "train": {"iterations": 2, "epochs": None, "progress": False, "tensorboard": False,
                  **train},
    }  # fmt: skip


def test_train_eval_predict_through_the_cli(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path)))
    assert main(["train", str(path)]) == 0
    assert "last validation: Dice" in capsys.readouterr().out
    run = tmp_path / "run"
    payload = load_checkpoint(run / "last.pt")
    assert payload["task"] == "volumetric" and payload["classes"] == ["background", "nodule"]
    assert payload["preprocessing"]["window"] == "lung"

    assert main(["eval", str(path), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for metric in ("dice", "iou", "precision", "recall", "hd95", "assd", "nsd"):
        assert {"mean", "std", "median", "min", "max"} <= set(report[metric]), metric
    assert report["num_cases"] == 2
    for name in ("per_case.csv", "dice_iou_histograms.png", "grades.png", "metric_cdfs.png",
                 "montages/phantom_val_000.png"):  # fmt: skip
        assert (tmp_path / "eval" / name).is_file(), name

    image, _ = make_phantom(9, shape=(36, 40, 20), spacing=(3.0, 3.0, 4.0), orientation="LPS")
    inputs = tmp_path / "in"
    write_nifti(image.array, image.affine, inputs / "case_a.nii.gz")
    write_dicom_series(image, inputs / "case_b")
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--out", str(out),
                 str(inputs / "case_a.nii.gz"), str(inputs / "case_b")]) == 0  # fmt: skip
    for name in ("case_a", "case_b"):
        written, source = read_volume(out / f"{name}_seg.nii.gz"), read_volume(inputs / (
            "case_a.nii.gz" if name == "case_a" else "case_b"))  # fmt: skip
        assert written.shape == source.shape and np.allclose(written.affine, source.affine)
        assert set(np.unique(written.array)) <= {0, 1}
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "p2"),
                 "--tta", str(inputs / "case_a.nii.gz")]) == 2  # fmt: skip
    assert "volumetric model" in capsys.readouterr().err


def test_resume_is_exact_with_augmentation(tmp_path):
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
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_msd_folder_from_medical_prepare_trains(tmp_path, capsys):
    scans, labels = tmp_path / "scans", tmp_path / "labels"
    for seed in range(3):
        image, label = make_phantom(seed, shape=(36, 36, 20), spacing=(3.0, 3.0, 4.0))
        write_nifti(image.array, image.affine, scans / f"lung_{seed}.nii.gz")
        write_nifti(label.array, label.affine, labels / f"lung_{seed}.nii.gz")
    msd = tmp_path / "msd"
    assert main(["medical", "prepare", str(scans), "--labels", str(labels), "--classes",
                 "background", "nodule", "--out", str(msd)]) == 0  # fmt: skip
    assert json.loads((msd / "dataset.json").read_text())["numTraining"] == 3
    data = {"dataset": "msd", "root": str(msd), "in_channels": 1, "batch_size": 2,
            "val_fraction": 0.34}  # fmt: skip
    config = parse_config(tiny(tmp_path, data))
    _, run = workflows.train(config)
    split = json.loads((run / "splits.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 2
    assert workflows.eval_checkpoint(config, run / "last.pt", tmp_path / "eval")["num_cases"] == 1


def test_the_volumetric_demo_trains_evaluates_and_predicts(tmp_path, capsys, monkeypatch):
    # The shipped demo config, with fewer and smaller phantoms so the test stays short.
    shipped = workflows.demo_config

    def smaller(out, minutes=None, task="semantic"):
        config = shipped(out, minutes, task)
        phantom = config.volumetric.phantom
        # Validated (model_copy does not validate: a list spacing would then warn on dump).
        fewer = type(phantom).model_validate({**phantom.model_dump(), **PHANTOM})
        return config.model_copy(
            update={"volumetric": config.volumetric.model_copy(update={"phantom": fewer})}
        )

    monkeypatch.setattr(workflows, "demo_config", smaller)
    out = tmp_path / "demo"
    assert main(["demo", "--task", "volumetric", "--minutes", "0.03", "--out", str(out)]) == 0
    assert "validation Dice" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_cases"] == 2 and "mean" in report["dice"]
    assert len(list((out / "predictions").glob("*_seg.nii.gz"))) == 2


def test_medical_phantoms_writes_an_msd_dataset_that_reads_back(tmp_path, capsys):
    from pixelseg.medical.datasets import MSDDataset

    out = tmp_path / "phantoms"
    assert main(["medical", "phantoms", "--num", "2", "--test", "1", "--out", str(out)]) == 0
    assert f"wrote {out / 'dataset.json'}" in capsys.readouterr().out
    cases = MSDDataset(out, "train")
    assert len(cases) == 2 and cases.classes == ("background", "nodule")
    assert cases[0].label is not None and cases[0].label.array.max() == 1
    assert len(MSDDataset(out, "test")) == 1
    capsys.readouterr()
    assert main(["medical", "phantoms", "--num", "1", "--out", str(out)]) == 2  # not empty
    assert "error" in capsys.readouterr().err
