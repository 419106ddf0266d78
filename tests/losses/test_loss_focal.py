"""Focal loss: hand values and gradient, gamma = 0 equals cross-entropy, torchvision peer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from pixelseg.losses import CrossEntropyLoss, FocalLoss

LN2 = math.log(2.0)


def test_binary_hand_value_alpha_and_gradient() -> None:
    # logit 0, target 1: p_t = 1/2, ce = ln 2, (1 - p_t)^2 = 1/4 -> ln2 / 4
    # logit ln 3, target 0: p_t = 1/4, ce = 2 ln 2, (3/4)^2 = 9/16 -> 9 ln2 / 8
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]], requires_grad=True)
    target = torch.tensor([[[1, 0]]])
    loss = FocalLoss(gamma=2.0)(logits, target)
    assert loss.item() == pytest.approx(11 * LN2 / 16, rel=1e-6)
    loss.backward()
    # t = 1: dFL/dp = 2 (1 - p) ln p - (1 - p)^2 / p = -ln2 - 1/2 at p = 1/2; dp/dx = 1/4
    # t = 0: dFL/dp = -2 p ln(1 - p) + p^2 / (1 - p) = 3 ln2 + 9/4 at p = 3/4; dp/dx = 3/16
    expected = torch.tensor([[[[-(LN2 + 0.5) / 4 / 2, (3 * LN2 + 2.25) * 3 / 16 / 2]]]])
    torch.testing.assert_close(logits.grad, expected)
    # alpha 0.25: 0.25 ln2/4 + 0.75 * 9 ln2/8, mean over 2 pixels = 29 ln2 / 64
    alpha = FocalLoss(gamma=2.0, alpha=0.25)(logits, target)
    assert alpha.item() == pytest.approx(29 * LN2 / 64, rel=1e-6)


def test_binary_matches_torchvision_sigmoid_focal_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 6, 6) * 3
    target = torch.randint(0, 2, (2, 6, 6))
    peer = sigmoid_focal_loss(logits[:, 0], target.float(), alpha=0.25, gamma=2, reduction="mean")
    torch.testing.assert_close(FocalLoss(gamma=2.0, alpha=0.25)(logits, target), peer)


@pytest.mark.parametrize("channels", [1, 4])
def test_gamma_zero_equals_cross_entropy(channels: int) -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, channels, 5, 5)
    target = torch.randint(0, max(channels, 2), (2, 5, 5))
    target[1, 0] = 255
    focal = FocalLoss(gamma=0.0, ignore_index=255)(logits, target)
    torch.testing.assert_close(focal, CrossEntropyLoss(ignore_index=255)(logits, target))


def test_multiclass_against_onehot_formula_and_gradcheck() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    alpha = [0.2, 0.3, 0.5]
    loss = FocalLoss(gamma=1.5, alpha=alpha)
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).double()
    weights = torch.tensor(alpha, dtype=torch.float64).view(1, 3, 1, 1)
    formula = -(onehot * weights * (1 - probs) ** 1.5 * torch.log(probs)).sum(1).mean()
    torch.testing.assert_close(loss(logits, target), formula)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,))
    (grad,) = torch.autograd.grad(loss(logits, target), logits)
    (expected,) = torch.autograd.grad(formula, logits)
    torch.testing.assert_close(grad, expected)


def test_confident_pixels_give_finite_gradient_for_small_gamma() -> None:
    logits = torch.tensor([[[[60.0]], [[-60.0]]]], requires_grad=True)
    loss = FocalLoss(gamma=0.5)(logits, torch.tensor([[[0]]]))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-20)
    assert torch.isfinite(logits.grad).all()
