"""The volumetric task's own pieces: post-processing, per-case metrics and their means,
preprocessing settings that travel in checkpoints, and predictions mapped back onto the
input's grid."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pixelseg.medical.volume import Volume
from pixelseg.tasks.volumetric import (
    InferenceSettings,
    VolumetricMetrics,
    VolumetricTask,
    largest_components,
)
from pixelseg.tasks.volumetric_data import Preprocessing, prepare_case
from pixelseg.tasks.volumetric_outputs import _to_source_grid


def test_largest_component_keeps_one_blob_per_class():
    labels = np.zeros((10, 10, 10), dtype=np.int64)
    labels[1:4, 1:4, 1:4] = 1  # 27 voxels
    labels[7:9, 7:9, 7:9] = 1  # 8 voxels: dropped
    labels[6, 1, 1] = 2  # the only class-2 blob: kept
    kept = largest_components(labels, 3)
    assert (kept[1:4, 1:4, 1:4] == 1).all() and (kept[7:9, 7:9, 7:9] == 0).all()
    assert kept[6, 1, 1] == 2


def test_metrics_average_cases_and_leave_infinite_distances_out():
    metrics = VolumetricMetrics(["background", "nodule"], tolerance=1.0)
    target = np.zeros((8, 8, 8), dtype=np.int64)
    target[2:6, 2:6, 2:6] = 1
    batch = {"name": ["a", "b"], "mask": torch.from_numpy(np.stack([target, target])),
             "spacing": [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)]}  # fmt: skip
    prediction = torch.from_numpy(np.stack([target, np.zeros_like(target)]))
    metrics.update(prediction, batch)
    result = metrics.compute()
    assert result["dice"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert result["hd95"] == 0.0  # the missed case's infinite distance is left out...
    assert result["missed_or_invented"] == 1  # ...and counted
    assert result["num_cases"] == 2 and set(result["per_class"]) == {"nodule"}
    other = VolumetricMetrics(["background", "nodule"])
    other.rows = list(metrics.rows)
    assert metrics.merge(other).compute()["dice"] == pytest.approx(0.5)


def test_preprocessing_travels_as_a_dict_and_orders_axes_for_the_model():
    settings = Preprocessing("window", (-600.0, 1500.0), (2.0, 2.0, 3.0))
    assert Preprocessing.from_dict(settings.to_dict()) == settings
    hu = np.full((6, 5, 4), -1350.0, dtype=np.float32)  # (i, j, k), all below the window
    hu[5, 0, 0] = 150.0  # top of the lung window
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    case = prepare_case("x", Volume(hu, affine), None, Preprocessing("window", "lung", None))
    assert case.image.shape == (1, 4, 5, 6)  # [C, k, j, i]
    assert case.image[0, 0, 0, 5] == pytest.approx(1.0) and case.image.min() == 0.0
    assert case.spacing == (1.5, 1.0, 1.0)  # mm along D, H, W


def test_predictions_return_to_the_input_grid_after_resampling():
    from pixelseg.medical.patches import model_to_volume

    label = np.zeros((20, 16, 12), dtype=np.uint8)
    label[5:15, 4:12, 3:9] = 1
    affine = np.array([[1.0, 0, 0, -10], [0, 1.0, 0, 5], [0, 0, 2.0, 30], [0, 0, 0, 1]])
    image = Volume(label.astype(np.float32) * 100.0, affine)
    case = prepare_case(
        "x", image, Volume(label, affine), Preprocessing("none", "lung", (2.0, 2.0, 2.0))
    )
    assert case.label is not None and case.label.shape == (12, 8, 10)  # resampled grid
    back = _to_source_grid(model_to_volume(case.label), case)
    assert back.shape == label.shape
    # Nearest neighbour at half resolution: the only differences lie on the object's edge.
    from scipy import ndimage

    edge = ndimage.binary_dilation(label) & ~ndimage.binary_erosion(label)
    assert (back != label).any() and not ((back != label) & ~edge).any()


def test_predictions_reach_the_input_grid_edges_after_downsampling():
    from pixelseg.medical.patches import model_to_volume

    # 9 voxels at 1 mm become 4 at 2.5 mm (centres 0, 2.5, 5, 7.5 mm): the last input voxel
    # (8 mm) lies 0.2 model voxels past the last centre and takes its label, not 0.
    label = np.ones((9, 9, 9), dtype=np.uint8)
    image = Volume(label.astype(np.float32), np.eye(4))
    case = prepare_case(
        "x", image, Volume(label, np.eye(4)), Preprocessing("none", "lung", (2.5,) * 3)
    )
    assert case.label is not None and case.label.shape == (4, 4, 4)
    assert _to_source_grid(model_to_volume(case.label), case).all()


def test_task_refuses_a_single_class():
    with pytest.raises(Exception, match="background and at least one class"):
        VolumetricTask(["background"], None, inference=InferenceSettings(),
                       preprocessing=Preprocessing())  # fmt: skip


def test_summary_reads_validation_metrics_and_report_means():
    plain = {"dice": 0.8, "iou": 0.7, "hd95": 3.0, "nsd": 0.9}
    report = {k: {"mean": v} for k, v in plain.items()}
    assert VolumetricTask.summary(plain) == VolumetricTask.summary(report)
    assert "Dice 0.8000" in VolumetricTask.summary(plain)
    assert "HD95 3.00 mm" in VolumetricTask.summary(report)


def test_restrict_to_lung_keeps_labels_inside_the_lungs_only(tmp_path):
    from types import SimpleNamespace

    from pixelseg.medical.io import read_volume
    from pixelseg.medical.patches import volume_to_model
    from pixelseg.medical.phantom import make_phantom
    from pixelseg.medical.preprocess import lung_mask
    from pixelseg.tasks.volumetric_outputs import write_volume_prediction

    image, _ = make_phantom(3, shape=(48, 48, 24), spacing=(3.0, 3.0, 5.0))
    case = prepare_case("p", image, None, Preprocessing())
    case.source_volume = image
    everywhere = torch.ones(volume_to_model(image.array).shape, dtype=torch.int64)
    for restrict, name in ((False, "all"), (True, "lungs")):
        task = SimpleNamespace(restrict_to_lung=restrict)
        (path,) = write_volume_prediction(task, tmp_path, name, case, everywhere)
        written = read_volume(path).array
        if restrict:
            lungs = lung_mask(image.array, image.spacing)
            assert lungs.any() and np.array_equal(written.astype(bool), lungs)
        else:
            assert written.all()


def test_a_case_is_scored_once_for_the_metrics_and_its_report_row(monkeypatch):
    # Surface distances of whole volumes are costly: the report's row reuses the
    # accumulator's rows for the same prediction instead of scoring the case again.
    import pixelseg.tasks.volumetric as volumetric

    calls = []
    real = volumetric.surface_metrics
    monkeypatch.setattr(
        volumetric, "surface_metrics", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    monkeypatch.setattr("pixelseg.tasks.volumetric_outputs.montage_png", lambda *a: b"png")
    task = VolumetricTask(["background", "nodule", "vessel"], None,
                          inference=InferenceSettings(), preprocessing=Preprocessing())  # fmt: skip
    target = np.zeros((2, 6, 6, 6), dtype=np.int64)
    target[:, 1:3, 1:3, 1:3], target[:, 4, 4, 4] = 1, 2
    batch = {"name": ["a", "b"], "mask": torch.from_numpy(target),
             "image": torch.zeros(2, 1, 6, 6, 6), "spacing": [(1.0, 1.0, 1.0)] * 2}  # fmt: skip
    prediction = torch.from_numpy(target.copy())
    metrics = task.new_metrics()
    metrics.update(prediction, batch)
    rows = task.sample_rows(prediction, batch)
    assert len(calls) == 4  # 2 cases x 2 foreground classes, once each
    assert [row["dice"] for row in rows] == [1.0, 1.0]
    task.sample_rows(torch.zeros_like(prediction), batch)  # another prediction: scored anew
    assert len(calls) == 8


def test_deep_supervision_weights_from_the_config_weigh_the_outputs():
    """loss.deep_supervision_weights reaches the loss (it used to be ignored): with weights
    [0, 1] only the half-resolution output counts; without, nnU-Net's [1, 0]."""
    from pixelseg.config import parse_config
    from pixelseg.tasks.volumetric_setup import build_task

    mask = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    full = torch.zeros(1, 2, 4, 4, 4)
    half = torch.zeros(1, 2, 2, 2, 2)
    half[:, 1] = 3.0  # wrong everywhere: a large loss
    ce = torch.nn.CrossEntropyLoss()

    def task(weights):
        return VolumetricTask(["background", "nodule"], ce, inference=InferenceSettings(),
                              preprocessing=Preprocessing(),
                              deep_supervision_weights=weights)  # fmt: skip

    expected_half = ce(half, torch.zeros(1, 2, 2, 2, dtype=torch.long))
    assert torch.isclose(task([0.0, 1.0]).loss([full, half], {"mask": mask}), expected_half)
    assert torch.isclose(task(None).loss([full, half], {"mask": mask}), ce(full, mask))
    config = parse_config({
        "task": "volumetric", "data": {"dataset": "synthetic"},
        "model": {"name": "unet3d"}, "loss": {"deep_supervision_weights": [0.0, 1.0]},
    })  # fmt: skip
    bundle = SimpleNamespace(classes=["background", "nodule"], ignore_index=None)
    built = build_task(config, bundle)
    assert built.deep_supervision_weights == [0.0, 1.0]
    assert torch.isclose(
        built.loss([full, half], {"mask": mask}), built.loss_fn(half, mask[:, ::2, ::2, ::2])
    )
