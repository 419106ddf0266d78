"""Surface metrics: hand-computed cases, empty masks, and MONAI on random anisotropic shapes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from pixelseg.errors import InvalidInputError
from pixelseg.metrics import surface_metrics, surface_metrics_per_class

pytest.importorskip("scipy")


def test_one_dimensional_case_by_hand() -> None:
    # pred voxels 1..3 (surface 1, 3), target 2..4 (surface 2, 4); 2 mm per voxel: every
    # surface voxel is one voxel (2 mm) from the other surface.
    pred = np.array([0, 1, 1, 1, 0, 0])
    target = np.array([0, 0, 1, 1, 1, 0])
    m = surface_metrics(pred, target, spacing=(2.0,), tolerance=1.0)
    assert m["dice"] == pytest.approx(2 / 3) and m["iou"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["volume_difference"] == 0.0
    assert m["hd95"] == pytest.approx(2.0) and m["assd"] == pytest.approx(2.0)
    assert m["nsd"] == 0.0
    assert surface_metrics(pred, target, spacing=(2.0,), tolerance=2.0)["nsd"] == 1.0


def test_shifted_square_with_anisotropic_spacing_by_hand() -> None:
    # 3x3 squares, the prediction one column to the right; rows 1 mm apart, columns 2 mm.
    # Prediction ring (8 pixels) to the target ring: its left column's top and bottom and its
    # middle column's top and bottom lie on the target ring (0 mm); its left column's middle
    # is the target's centre, 1 mm (one row) from the ring; its right column is one column
    # (2 mm) beyond the ring. So [0, 0, 0, 0, 1, 2, 2, 2] mm, the same back by symmetry.
    target = np.zeros((7, 8), dtype=bool)
    target[2:5, 2:5] = True
    pred = np.roll(target, 1, axis=1)
    m = surface_metrics(pred, target, spacing=(1.0, 2.0), tolerance=1.0)
    assert m["dice"] == pytest.approx(12 / 18) and m["iou"] == pytest.approx(6 / 12)
    assert m["hd95"] == pytest.approx(2.0)
    assert m["assd"] == pytest.approx(14 / 16)
    assert m["nsd"] == pytest.approx(10 / 16)
    # with rows and columns swapped the 1-pixel shift is 1 mm: every distance is 0 or 1
    swapped = surface_metrics(pred, target, spacing=(2.0, 1.0), tolerance=1.0)
    assert swapped["nsd"] == 1.0 and swapped["hd95"] == pytest.approx(1.0)


def test_a_distance_equal_to_the_tolerance_counts_wherever_it_lies() -> None:
    # Every surface voxel lies 0, 0.8 or 1 mm from the other surface; one step of 0.8 mm
    # must measure exactly 0.8 at any position (12*0.8 - 11*0.8 does not).
    pred, target = np.zeros((20, 3), bool), np.zeros((20, 3), bool)
    pred[0:12], target[1:13] = True, True
    assert surface_metrics(pred, target, (0.8, 1.0), tolerance=0.8)["nsd"] == 1.0
    long_pred, long_target = np.zeros((600, 1), bool), np.zeros((600, 1), bool)
    long_pred[:-1], long_target[1:] = True, True
    result = surface_metrics(long_pred, long_target, (0.8, 1.0), tolerance=0.8)
    assert result["nsd"] == 1.0


def test_volume_difference_is_signed_mm3() -> None:
    target = np.zeros((4, 4, 4), dtype=np.uint8)
    target[1:3, 1:3, 1:3] = 1  # 8 voxels
    pred = target.copy()
    pred[0, 0, 0] = 1  # 9 voxels
    m = surface_metrics(pred, target, spacing=(0.5, 1.0, 3.0))
    assert m["volume_difference"] == pytest.approx(1.5)
    assert surface_metrics(target, pred, spacing=(0.5, 1.0, 3.0))["volume_difference"] == -1.5


def test_empty_masks_give_the_documented_values() -> None:
    empty = np.zeros((3, 4, 5), dtype=bool)
    full = empty.copy()
    full[1, 1:3, 2] = True
    both = surface_metrics(empty, empty, (1.0, 1.0, 1.0))
    assert both == {
        "dice": 1.0,
        "iou": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "volume_difference": 0.0,
        "hd95": 0.0,
        "assd": 0.0,
        "nsd": 1.0,
    }
    for pred, target, vd in ((empty, full, -2.0), (full, empty, 2.0)):
        m = surface_metrics(pred, target, (1.0, 1.0, 1.0))
        assert m["dice"] == m["iou"] == m["precision"] == m["recall"] == m["nsd"] == 0.0
        assert math.isinf(m["hd95"]) and math.isinf(m["assd"])
        assert m["volume_difference"] == vd
        assert not any(math.isnan(v) for v in m.values())


def test_bad_inputs_name_the_value() -> None:
    a = np.zeros((3, 3), dtype=bool)
    with pytest.raises(InvalidInputError, match=r"shapes differ: \(3, 3\) vs \(3, 4\)"):
        surface_metrics(a, np.zeros((3, 4), dtype=bool), (1, 1))
    with pytest.raises(InvalidInputError, match="threshold probabilities"):
        surface_metrics(a.astype(np.float32), a, (1, 1))
    with pytest.raises(InvalidInputError, match=r"prediction holds values \[2\]"):
        surface_metrics(np.full((3, 3), 2), a, (1, 1))
    with pytest.raises(InvalidInputError, match="spacing must be 2 positive"):
        surface_metrics(a, a, (1, 1, 1))
    with pytest.raises(InvalidInputError, match="spacing must be 2 positive"):
        surface_metrics(a, a, (1, -1))
    with pytest.raises(InvalidInputError, match="tolerance must be"):
        surface_metrics(a, a, (1, 1), tolerance=-1)


def _random_shape(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, 0.7)


def _monai(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...], tol: float) -> dict:
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    p = torch.from_numpy(pred)[None, None].float()
    t = torch.from_numpy(target)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hd95": compute_hausdorff_distance(
                p, t, include_background=True, percentile=95, spacing=spacing
            ).item(),
            "assd": compute_average_surface_distance(
                p, t, include_background=True, symmetric=True, spacing=spacing
            ).item(),
            "nsd": compute_surface_dice(
                p, t, [tol], include_background=True, spacing=spacing
            ).item(),
            "dice": compute_dice(p, t, include_background=True).item(),
            "iou": compute_iou(p, t, include_background=True).item(),
        }


def _edt_reference(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> dict:
    """HD95/ASSD/NSD from full-volume distance transforms: a second, independent method."""
    from scipy.ndimage import binary_erosion, distance_transform_edt

    ps, ts = pred & ~binary_erosion(pred), target & ~binary_erosion(target)
    forward = distance_transform_edt(~ts, sampling=spacing)[ps]
    backward = distance_transform_edt(~ps, sampling=spacing)[ts]
    both = np.concatenate([forward, backward])
    return {
        "hd95": max(np.percentile(forward, 95), np.percentile(backward, 95)),
        "assd": both.mean(),
        "nsd": np.mean(both <= 1.7),
    }


@pytest.mark.parametrize("seed", range(4))
def test_equal_to_monai_on_random_anisotropic_shapes(seed: int) -> None:
    pytest.importorskip("monai")
    from sklearn.metrics import precision_score, recall_score

    rng = np.random.default_rng(seed)
    shape = (22, 19, 13) if seed % 2 == 0 else (40, 33)
    spacing = tuple(rng.uniform(0.4, 3.0, size=len(shape)).round(3))
    target = _random_shape(rng, shape, sigma=2.5)
    # a prediction that overlaps: the target with part of it redrawn
    pred = np.where(_random_shape(rng, shape, sigma=4.0), _random_shape(rng, shape, 2.5), target)
    tol = 1.7
    ours = surface_metrics(pred, target, spacing, tolerance=tol)
    ref = _monai(pred, target, spacing, tol)
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, rel=1e-5, abs=1e-5), name
    for name, value in _edt_reference(pred, target, spacing).items():
        assert ours[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    assert 0.0 < ours["nsd"] < 1.0 and ours["hd95"] > 0  # a case that exercises the distances
    t, p = target.ravel(), pred.ravel()
    assert ours["precision"] == pytest.approx(precision_score(t, p))
    assert ours["recall"] == pytest.approx(recall_score(t, p))


def test_per_class_values_equal_binary_calls_and_torch_inputs_work() -> None:
    rng = np.random.default_rng(3)
    target = np.zeros((12, 10, 8), dtype=np.int64)
    target[2:8, 2:7, 1:6] = 1
    target[8:11, 3:9, 2:7] = 2
    pred = target.copy()
    pred[rng.random(target.shape) < 0.1] = 1
    spacing = (0.8, 1.2, 2.5)
    per_class = surface_metrics_per_class(
        torch.from_numpy(pred), torch.from_numpy(target), spacing, num_classes=4
    )
    assert sorted(per_class) == [1, 2, 3]
    for c in (1, 2):
        assert per_class[c] == surface_metrics(pred == c, target == c, spacing)
    assert per_class[3]["dice"] == 1.0 and per_class[3]["hd95"] == 0.0  # absent from both
    with_bg = surface_metrics_per_class(pred, target, spacing, 3, include_background=True)
    assert sorted(with_bg) == [0, 1, 2]
    with pytest.raises(
        InvalidInputError, match=r"target holds labels \[2\] outside the classes 0..1"
    ):
        surface_metrics_per_class(pred.clip(0, 1), target, spacing, num_classes=2)
    with pytest.raises(InvalidInputError, match="integer labels"):
        surface_metrics_per_class(pred.astype(float), target, spacing, num_classes=3)
