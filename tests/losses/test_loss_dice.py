"""Soft Dice and generalised Dice: hand values, gradients, references, absent classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from pixelseg.losses import DiceLoss, GeneralizedDiceLoss

LN3 = math.log(3.0)


def binary_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Four pixels: p = sigmoid(x) = [1/2, 3/4, 1/4, 1/2], target [1, 1, 0, 0]."""
    logits = torch.tensor([[[[0.0, LN3], [-LN3, 0.0]]]], requires_grad=True)
    target = torch.tensor([[[1, 1], [0, 0]]])
    return logits, target


def test_binary_hand_value_and_gradient() -> None:
    logits, target = binary_case()
    # I = 1/2 + 3/4 = 5/4, P = 2, T = 2, smooth 1: dice = (5/2 + 1) / (4 + 1) = 0.7.
    loss = DiceLoss(smooth=1.0)(logits, target)
    assert loss.item() == pytest.approx(0.3, rel=1e-6)
    loss.backward()
    # d(1 - dice)/dp_i = -(2 t_i (P + T + s) - (2 I + s)) / (P + T + s)^2
    #   t = 1: -(10 - 3.5) / 25 = -0.26 ; t = 0: 3.5 / 25 = 0.14; dp/dx = p (1 - p).
    expected = torch.tensor([[[[-0.26 / 4, -0.26 * 3 / 16], [0.14 * 3 / 16, 0.14 / 4]]]])
    torch.testing.assert_close(logits.grad, expected)


def test_multiclass_hand_value() -> None:
    # C = 2 with logits (ln 3, 0) -> p = (3/4, 1/4) and (0, 0) -> (1/2, 1/2).
    # class-1 probabilities [1/4, 1/2, 1/2, 3/4], target [0, 1, 1, 1].
    class1 = torch.tensor([[0.0, 0.0], [0.0, LN3]])
    class0 = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    logits = torch.stack([class0, class1]).unsqueeze(0)
    target = torch.tensor([[[0, 1], [1, 1]]])
    # class 1: I = 7/4, P = 2, T = 3 -> (3.5 + 1) / 6 = 0.75
    # class 0: I = 3/4, P = 2, T = 1 -> (1.5 + 1) / 4 = 0.625 ; loss = 1 - 0.6875
    assert DiceLoss()(logits, target).item() == pytest.approx(0.3125, rel=1e-6)
    assert DiceLoss(include_background=False)(logits, target).item() == pytest.approx(0.25)
    # weights [1, 3]: (1 * 0.375 + 3 * 0.25) / 4
    weighted = DiceLoss(weight=[1.0, 3.0])(logits, target)
    assert weighted.item() == pytest.approx((0.375 + 0.75) / 4, rel=1e-6)


def reference_dice(logits, target, smooth, per_image, ignore_index=None, weight=None, first=0):
    """Loop-based numpy Dice: per image (or batch), per class from ``first``, then means."""
    x = logits.detach().double().numpy()
    t = target.numpy()
    probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    valid = np.ones_like(t, dtype=bool) if ignore_index is None else t != ignore_index
    groups = [[b] for b in range(x.shape[0])] if per_image else [list(range(x.shape[0]))]
    scores = []
    for group in groups:
        per_class = []
        for c in range(first, x.shape[1]):
            p = np.concatenate([probs[b, c][valid[b]] for b in group])
            y = np.concatenate([(t[b] == c)[valid[b]] for b in group]).astype(float)
            per_class.append(1 - (2 * (p * y).sum() + smooth) / (p.sum() + y.sum() + smooth))
        w = np.ones(len(per_class)) if weight is None else np.array(weight[first:])
        scores.append((w * np.array(per_class)).sum() / w.sum())
    return float(np.mean(scores))


@pytest.mark.parametrize("per_image", [False, True])
def test_multiclass_matches_numpy_reference_with_ignore(per_image: bool) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 5, 6))
    target[1, 2:] = 255
    loss = DiceLoss(smooth=0.5, ignore_index=255, per_image=per_image)(logits, target)
    expected = reference_dice(logits, target, 0.5, per_image, ignore_index=255)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("include_background", [True, False])
def test_class_weights_and_background_match_numpy_reference(include_background: bool) -> None:
    torch.manual_seed(6)
    logits = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 5, 5))
    weight = [0.5, 1.0, 3.0, 2.0]
    loss = DiceLoss(weight=weight, include_background=include_background)(logits, target)
    first = 0 if include_background else 1
    expected = reference_dice(logits, target, 1.0, False, weight=weight, first=first)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_matches_segmentation_models_pytorch_when_every_class_present() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    # smp 0.6 smooths as (I + s) / ((P + T) / 2 + s), which is ours with smooth = 2 s.
    peer = smp.losses.DiceLoss("multiclass", from_logits=True, smooth=1.0)(logits, target)
    torch.testing.assert_close(DiceLoss(smooth=2.0)(logits, target), peer)
    peer0 = smp.losses.DiceLoss("multiclass", from_logits=True, smooth=0.0)(logits, target)
    torch.testing.assert_close(DiceLoss(smooth=0.0)(logits, target), peer0)


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_class_absent_from_prediction_and_target_scores_one(smooth: float) -> None:
    # class 2 is absent from the target and predicted with probability exp(-1e4) == 0.
    torch.manual_seed(2)
    two = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    logits = torch.cat([two, torch.full((1, 1, 4, 4), -1e4, dtype=torch.float64)], dim=1)
    logits.requires_grad_(True)
    target = torch.randint(0, 2, (1, 4, 4))
    loss = DiceLoss(smooth=smooth)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # the absent class adds dice 1 (loss 0) to the mean over 3 classes
    two_class = DiceLoss(smooth=smooth)(two, target)
    assert loss.item() == pytest.approx(two_class.item() * 2 / 3, rel=1e-9)


def test_gradcheck_multiclass_float64() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 3, 3))
    target[0, 0] = 7
    loss = DiceLoss(weight=[0.5, 1.0, 2.0], ignore_index=7, per_image=True)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,))
    gdl = GeneralizedDiceLoss(ignore_index=7)
    assert torch.autograd.gradcheck(lambda x: gdl(x, target), (logits,))


def reference_generalized_dice(logits, target, smooth, per_image, binary=False):
    """Numpy Sudre et al. 2017 with MONAI's rule for absent classes and unit-sum weights."""
    x = logits.detach().double().numpy()
    t = target.numpy()
    if binary:
        p1 = 1 / (1 + np.exp(-x[:, 0]))
        probs = np.stack([1 - p1, p1], axis=1)
    else:
        probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    groups = [[b] for b in range(x.shape[0])] if per_image else [list(range(x.shape[0]))]
    losses = []
    for group in groups:
        inter, vol, true = [], [], []
        for c in range(probs.shape[1]):
            p = np.concatenate([probs[b, c].ravel() for b in group])
            y = np.concatenate([(t[b] == c).ravel() for b in group]).astype(float)
            inter.append((p * y).sum())
            vol.append(p.sum() + y.sum())
            true.append(y.sum())
        true = np.array(true)
        with np.errstate(divide="ignore"):
            w = 1 / true**2
        w[np.isinf(w)] = w[np.isfinite(w)].max() if np.isfinite(w).any() else 0.0
        w = w / w.sum()
        losses.append(1 - (2 * (w * inter).sum() + smooth) / ((w * np.array(vol)).sum() + smooth))
    return float(np.mean(losses))


@pytest.mark.parametrize("per_image", [False, True])
def test_generalized_dice_matches_numpy_reference(per_image: bool) -> None:
    torch.manual_seed(4)
    logits = torch.randn(3, 4, 6, 5, dtype=torch.float64)
    target = torch.randint(0, 3, (3, 6, 5))  # class 3 absent -> weight of the largest
    target[0] = 0  # image 0 holds only class 0
    loss = GeneralizedDiceLoss(smooth=1e-5, per_image=per_image)(logits, target)
    expected = reference_generalized_dice(logits, target, 1e-5, per_image)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_generalized_dice_scale_free_weights_match_sudre_without_smooth() -> None:
    # With smooth 0 the unit-sum normalisation changes nothing: raw w = 1 / T^2 as in MONAI.
    torch.manual_seed(5)
    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (1, 4, 4))
    probs = torch.softmax(logits, 1)
    onehot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).double()
    true = onehot.sum((0, 2, 3))
    w = 1 / true**2
    sudre = (
        1
        - 2
        * (w * (probs * onehot).sum((0, 2, 3))).sum()
        / (w * (probs.sum((0, 2, 3)) + true)).sum()
    )
    torch.testing.assert_close(GeneralizedDiceLoss(smooth=0.0)(logits, target), sudre)


def test_generalized_dice_binary_hand_value() -> None:
    logits, _ = binary_case()
    target = torch.tensor([[[1, 1], [1, 0]]])
    # p = [1/2, 3/4, 1/4, 1/2], t = [1, 1, 1, 0]. Two classes:
    # foreground: I = 3/2, P + T = 2 + 3 = 5, T = 3 -> w = 1/9
    # background (1 - p = [1/2, 1/4, 3/4, 1/2], t = [0, 0, 0, 1]): I = 1/2, P + T = 3, w = 1
    # unit-sum weights (0.1, 0.9): 1 - 2 (0.15 + 0.45) / (0.5 + 2.7) = 1 - 1.2 / 3.2 = 0.625
    loss = GeneralizedDiceLoss(smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(0.625, rel=1e-6)
    expected = reference_generalized_dice(logits, target, 0.0, False, binary=True)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # without the background only the foreground is left: 1 - 3 / 5
    foreground = GeneralizedDiceLoss(smooth=0.0, include_background=False)(logits, target)
    assert foreground.item() == pytest.approx(0.4, rel=1e-6)


def test_generalized_dice_no_class_present_is_zero() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    loss = GeneralizedDiceLoss(ignore_index=255)(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
