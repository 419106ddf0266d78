"""create()/available(): names, options, and bad option values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixelseg.errors import InvalidInputError
from pixelseg.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceLoss,
    TverskyLoss,
    available,
    create,
    options_of,
)


def test_available_names_and_classes() -> None:
    assert set(available()) == {"ce", "dice", "generalized_dice", "tversky", "focal"}
    assert all(isinstance(text, str) and text for text in available().values())
    classes = {
        "ce": CrossEntropyLoss,
        "dice": DiceLoss,
        "generalized_dice": GeneralizedDiceLoss,
        "tversky": TverskyLoss,
        "focal": FocalLoss,
    }
    for name, cls in classes.items():
        assert type(create(name)) is cls
    assert options_of("dice")["smooth"] == 1.0
    assert create("tversky", alpha=0.1, beta=0.9).beta == 0.9


def test_unknown_name_and_option() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown loss 'focall'.*'focal'.*ce, dice"):
        create("focall")
    with pytest.raises(InvalidInputError, match=r"'gama'.*'gamma'.*gamma, alpha, ignore_index"):
        create("focal", gama=2)
    with pytest.raises(InvalidInputError, match="unknown loss"):
        options_of("bce")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("ce", {"label_smoothing": 1.0}, "label_smoothing must be a number in"),
        ("ce", {"weight": [1.0, -1.0]}, r"finite, >= 0.*\[1.0, -1.0\]"),
        ("ce", {"weight": [0.0, 0.0]}, "not all zero"),
        ("ce", {"weight": "heavy"}, "list of numbers"),
        ("ce", {"ignore_index": "void"}, "ignore_index must be an int"),
        ("dice", {"smooth": -1.0}, "smooth must be a finite number >= 0"),
        ("dice", {"per_image": "yes"}, "per_image must be True or False"),
        ("dice", {"include_background": False, "weight": [1.0, 0.0]}, "weight 0"),
        ("generalized_dice", {"smooth": float("nan")}, "smooth"),
        ("tversky", {"alpha": -0.1}, "alpha must be"),
        ("tversky", {"alpha": 0, "beta": 0}, "both 0"),
        ("focal", {"gamma": -1.0}, "gamma must be"),
        ("focal", {"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
    ],
)
def test_bad_option_values(name: str, options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        create(name, **options)


def test_focal_alpha_kind_must_fit_the_number_of_classes() -> None:
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(InvalidInputError, match=r"scalar alpha.*C = 3"):
        create("focal", alpha=0.25)(torch.randn(1, 3, 2, 2), target)
    with pytest.raises(InvalidInputError, match=r"alpha has 3 values.*binary: background"):
        create("focal", alpha=[0.3, 0.7, 0.1])(torch.randn(1, 1, 2, 2), target)


@pytest.mark.parametrize("name", ["ce", "dice", "tversky", "focal"])
def test_binary_per_class_vectors_have_two_entries(name: str) -> None:
    # class_weights() over a binary mask gives [background, foreground]; every loss takes it.
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 4, 4)
    target = torch.randint(0, 2, (2, 4, 4))
    option = "alpha" if name == "focal" else "weight"
    value = create(name, **{option: [0.75, 0.25]})(logits, target)
    if name == "focal":
        expected = create("focal", alpha=0.25)(logits, target)
    elif name == "ce":
        per_pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0], target.float(), reduction="none"
        )
        pixel_weight = torch.where(target == 1, 0.25, 0.75)
        expected = (pixel_weight * per_pixel).sum() / pixel_weight.sum()
    else:  # one foreground term: the weight cannot change it, even a zero weight
        expected = create(name)(logits, target)
        torch.testing.assert_close(create(name, weight=[1.0, 0.0])(logits, target), expected)
    torch.testing.assert_close(value, expected)
    with pytest.raises(InvalidInputError, match=rf"{option} has 1 values.*C = 1.*2 classes"):
        create(name, **{option: [1.0]})(logits, target)


def test_losses_follow_the_module_to_another_dtype() -> None:
    # per-class buffers move with .to(); forward also casts them to the logits' dtype
    loss = create("ce", weight=[1.0, 2.0]).to(torch.float64)
    assert loss.weight.dtype == torch.float64
    value = loss(
        torch.zeros(1, 2, 1, 1, dtype=torch.float64), torch.zeros(1, 1, 1, dtype=torch.long)
    )
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(0.6931471805599453)
