"""combine(): weighted sum of named losses, and its weight checks."""

from __future__ import annotations

import math

import pytest
import torch

from pixelseg.errors import InvalidInputError
from pixelseg.losses import CombinedLoss, DiceLoss, FocalLoss, combine, create


def test_equals_weighted_sum_and_terms() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 6, 6))
    loss = combine(
        [("ce", 1.0, {"ignore_index": 255}), ("dice", 0.5), ("dice", 2.0, {"smooth": 0.0})]
    )
    ce = create("ce", ignore_index=255)(logits, target)
    dice = DiceLoss()(logits, target)
    dice0 = DiceLoss(smooth=0.0)(logits, target)
    total = loss(logits, target)
    torch.testing.assert_close(total, ce + 0.5 * dice + 2.0 * dice0)
    terms = loss.terms(logits, target)
    assert list(terms) == ["ce", "dice", "dice_2"]
    torch.testing.assert_close(terms["dice_2"], dice0)
    total.backward()
    (expected,) = torch.autograd.grad(ce + 0.5 * dice + 2.0 * dice0, logits)
    torch.testing.assert_close(logits.grad, expected)


def test_zero_weight_term_is_allowed_and_contributes_nothing() -> None:
    logits = torch.randn(1, 2, 3, 3)
    target = torch.randint(0, 2, (1, 3, 3))
    loss = combine([("focal", 0.0), ("dice", 1.0)])
    torch.testing.assert_close(loss(logits, target), DiceLoss()(logits, target))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([("ce", -1.0)], "finite number >= 0"),
        ([("ce", math.nan)], "finite number >= 0"),
        ([("ce", math.inf)], "finite number >= 0"),
        ([("ce", "1")], "finite number >= 0"),
        ([("ce", 0.0), ("dice", 0)], "all zero"),
        ([], "non-empty list"),
        ("ce", "non-empty list"),
        ([("ce",)], r"\(name, weight\)"),
        ([("ce", 1.0, "smooth")], "mapping"),
        ([("dcie", 1.0)], "Did you mean 'dice'"),
        ([("dice", 1.0, {"smoth": 1.0})], "Did you mean 'smooth'"),
    ],
)
def test_bad_specs_raise(spec, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        combine(spec)


def test_module_construction_checks_labels() -> None:
    with pytest.raises(InvalidInputError, match="different terms"):
        CombinedLoss({"focal": FocalLoss()}, {"dice": 1.0})
