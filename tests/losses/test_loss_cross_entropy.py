"""Cross-entropy: hand-computed values and gradients, equality with torch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pixelseg.losses import CrossEntropyLoss, create

LN2 = math.log(2.0)


def test_multiclass_hand_value_and_gradient() -> None:
    # Two pixels, C = 2: pixel a logits (0, 0) target 0 -> p = 1/2, loss ln 2;
    # pixel b logits (ln 3, 0) target 0 -> p = 3/4, loss ln(4/3). Mean = ln(8/3) / 2.
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]], requires_grad=True)
    target = torch.tensor([[[0, 0]]])
    loss = CrossEntropyLoss()(logits, target)
    assert loss.item() == pytest.approx(math.log(8 / 3) / 2, rel=1e-6)
    loss.backward()
    # d/dx = (softmax - onehot) / N: a -> (-1/4, 1/4), b -> (-1/8, 1/8).
    expected = torch.tensor([[[[-0.25, -0.125]], [[0.25, 0.125]]]])
    torch.testing.assert_close(logits.grad, expected)


def test_binary_hand_value_and_weight() -> None:
    # logit 0 target 1 -> ln 2; logit ln 3 (p = 3/4) target 0 -> -ln(1/4) = 2 ln 2.
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]], requires_grad=True)
    target = torch.tensor([[[1.0, 0.0]]])
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(1.5 * LN2, rel=1e-6)
    # weight [1, 3]: (3 ln 2 + 1 * 2 ln 2) / (3 + 1) = 5 ln 2 / 4.
    weighted = CrossEntropyLoss(weight=[1.0, 3.0])(logits, target)
    assert weighted.item() == pytest.approx(1.25 * LN2, rel=1e-6)
    weighted.backward()
    # d/dx of BCE = p - y, scaled by w[y] / sum w: (1/2 - 1) * 3/4, (3/4 - 0) * 1/4.
    torch.testing.assert_close(logits.grad, torch.tensor([[[[-0.375, 0.1875]]]]))


def test_binary_label_smoothing_matches_two_class_formula() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 5, 6)
    target = torch.randint(0, 2, (2, 5, 6))
    smooth = 0.2
    soft = target.float() * (1 - smooth) + smooth / 2
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], soft)
    actual = CrossEntropyLoss(label_smoothing=smooth)(logits, target)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_equals_torch_cross_entropy_with_ignore(use_weight: bool, smoothing: float) -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 6, 7, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 6, 7))
    target[0, :2] = 255
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64) if use_weight else None
    expected = F.cross_entropy(
        logits, target, weight=weight, ignore_index=255, label_smoothing=smoothing
    )
    loss = create(
        "ce",
        ignore_index=255,
        weight=None if weight is None else weight.tolist(),
        label_smoothing=smoothing,
    )
    torch.testing.assert_close(loss(logits, target), expected)


def test_binary_equals_torch_bce() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 1, 4, 4)
    target = torch.randint(0, 2, (2, 4, 4))
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    torch.testing.assert_close(CrossEntropyLoss()(logits, target), expected)


def test_all_pixels_ignored_gives_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    loss = CrossEntropyLoss(ignore_index=255)(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_gradcheck_float64() -> None:
    torch.manual_seed(3)
    logits = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0, 1, 2], [2, 255, 1]]])
    loss = CrossEntropyLoss(ignore_index=255, weight=[1.0, 2.0, 0.5], label_smoothing=0.1)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,))
