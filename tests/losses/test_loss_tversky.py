"""Tversky: hand value, equality with Dice at alpha = beta = 0.5, gradient."""

from __future__ import annotations

import math

import pytest
import torch

from pixelseg.losses import DiceLoss, TverskyLoss

LN3 = math.log(3.0)


def test_binary_hand_value() -> None:
    # p = [1/2, 3/4, 1/4, 1/2], target [1, 1, 1, 0]:
    # TP = 3/2, FP = 1/2, FN = 1/2 + 1/4 + 3/4 = 3/2.
    logits = torch.tensor([[[[0.0, LN3], [-LN3, 0.0]]]])
    target = torch.tensor([[[1, 1], [1, 0]]])
    # (2 TP + 1) / (2 TP + 2 * 0.3 FP + 2 * 0.7 FN + 1) = 4 / 6.4 = 0.625
    loss = TverskyLoss(alpha=0.3, beta=0.7, smooth=1.0)(logits, target)
    assert loss.item() == pytest.approx(0.375, rel=1e-6)
    # swapping alpha and beta: 4 / (3 + 1.4 * 0.5 + 0.6 * 1.5 + 1) = 4 / 5.6
    swapped = TverskyLoss(alpha=0.7, beta=0.3, smooth=1.0)(logits, target)
    assert swapped.item() == pytest.approx(1 - 4 / 5.6, rel=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"include_background": False, "weight": [0.0, 1.0, 2.0, 0.5], "smooth": 0.0},
        {"ignore_index": 255, "per_image": True, "smooth": 2.0},
    ],
)
def test_half_half_equals_dice(options: dict) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 5, 5))
    target[0, 0] = 255 if "ignore_index" in options else 0
    dice = DiceLoss(**options)(logits, target)
    tversky = TverskyLoss(alpha=0.5, beta=0.5, **options)(logits, target)
    torch.testing.assert_close(tversky, dice, rtol=1e-12, atol=1e-12)


def test_gradient_matches_usual_tversky_form() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    loss = TverskyLoss(alpha=0.2, beta=0.8, smooth=0.6)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,))
    (grad,) = torch.autograd.grad(loss(logits, target), logits)
    # Independent form: TP / (TP + a FP + b FN) with smoothing s / 2, batch sums per class.
    probs = torch.softmax(logits, 1)
    onehot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).double()
    tp = (probs * onehot).sum((0, 2, 3))
    fp = (probs * (1 - onehot)).sum((0, 2, 3))
    fn = ((1 - probs) * onehot).sum((0, 2, 3))
    usual = 1 - ((tp + 0.3) / (tp + 0.2 * fp + 0.8 * fn + 0.3)).mean()
    (expected,) = torch.autograd.grad(usual, logits)
    torch.testing.assert_close(loss(logits, target), usual)
    torch.testing.assert_close(grad, expected)
