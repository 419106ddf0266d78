"""class_weights and count_labels against hand-computed numbers and sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from pixelseg.errors import DataError, InvalidInputError
from pixelseg.losses import class_weights, count_labels

COUNTS = [10, 0, 30, 60]  # N = 100 pixels, K = 3 classes present


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32))


def test_inverse_by_hand_and_sklearn() -> None:
    weights = class_weights(COUNTS, "inverse")
    close(weights, [100 / 30, 0.0, 100 / 90, 100 / 180])
    labels = np.repeat([0, 2, 3], [10, 30, 60])
    balanced = compute_class_weight("balanced", classes=np.array([0, 2, 3]), y=labels)
    np.testing.assert_allclose(weights[[0, 2, 3]].numpy(), balanced, rtol=1e-6)


def test_sqrt_inverse_by_hand() -> None:
    close(
        class_weights(COUNTS, "sqrt_inverse"),
        [math.sqrt(100 / 30), 0.0, math.sqrt(100 / 90), math.sqrt(100 / 180)],
    )


def test_enet_by_hand() -> None:
    expected = [1 / math.log(1.02 + 0.1), 0.0, 1 / math.log(1.32), 1 / math.log(1.62)]
    close(class_weights(COUNTS, "enet"), expected)
    close(class_weights([50, 50], "enet", enet_c=1.5), [1 / math.log(2.0)] * 2)


def test_median_frequency_from_totals() -> None:
    # freq = [0.1, -, 0.3, 0.6]; median of the present classes 0.3
    close(class_weights(COUNTS, "median_frequency"), [3.0, 0.0, 1.0, 0.5])
    # even number of classes: median = (0.2 + 0.3) / 2 = 0.25
    close(class_weights([10, 20, 30, 40], "median_frequency"), [2.5, 1.25, 0.25 / 0.3, 0.625])


def test_median_frequency_eigen_fergus_per_image() -> None:
    # image 1: [10, 0, 0, 10] (20 px); image 2: [0, 0, 30, 50] (80 px)
    # freq_0 = 10/20, freq_2 = 30/80, freq_3 = 60/100; median 0.5
    per_image = torch.tensor([[10, 0, 0, 10], [0, 0, 30, 50]])
    close(class_weights(per_image, "median_frequency"), [1.0, 0.0, 0.5 / 0.375, 0.5 / 0.6])
    # other methods use the totals of a per-image table
    close(class_weights(per_image, "inverse"), class_weights(COUNTS, "inverse").tolist())


def test_count_labels_matches_bincount_with_ignore_and_per_image() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 4, size=(5, 7)).astype(np.uint8) for _ in range(3)]
    masks[1][0] = 255
    counts = count_labels(masks, 4, ignore_index=255)
    flat = np.concatenate([m.ravel() for m in masks])
    np.testing.assert_array_equal(counts.numpy(), np.bincount(flat[flat != 255], minlength=4))
    per_image = count_labels(torch.as_tensor(np.stack(masks)), 4, 255, per_image=True)
    assert per_image.shape == (3, 4)
    assert per_image.dtype == torch.int64
    np.testing.assert_array_equal(per_image.sum(0).numpy(), counts.numpy())
    np.testing.assert_array_equal(
        per_image[1].numpy(), np.bincount(masks[1][1:].ravel(), minlength=4)
    )


@pytest.mark.parametrize(
    ("counts", "method", "error", "message"),
    [
        (COUNTS, "inverse_freq", InvalidInputError, "Valid choices: enet, inverse"),
        ([1, -2, 3], "inverse", InvalidInputError, "finite and >= 0"),
        ([1, math.nan], "inverse", InvalidInputError, "finite and >= 0"),
        ([0, 0], "enet", InvalidInputError, "every count is zero"),
        ([[[1]]], "enet", InvalidInputError, r"\[C\] or \[N, C\]"),
    ],
)
def test_bad_class_weight_inputs(counts, method, error, message) -> None:
    with pytest.raises(error, match=message):
        class_weights(counts, method)
    with pytest.raises(InvalidInputError, match="enet_c must be > 1"):
        class_weights(COUNTS, "enet", enet_c=0.5)


def test_bad_masks() -> None:
    with pytest.raises(DataError, match=r"mask 1 holds values \[5\] outside the classes \[0, 3\]"):
        count_labels([np.zeros((2, 2), int), np.array([[5, 1]])], 4)
    with pytest.raises(DataError, match="non-integer"):
        count_labels([np.array([[0.5]])], 2)
    with pytest.raises(InvalidInputError, match="empty"):
        count_labels([], 2)
    with pytest.raises(InvalidInputError, match="num_classes"):
        count_labels([np.zeros((2, 2), int)], 0)
