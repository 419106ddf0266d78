"""Flip TTA: identity for flip-equivariant predictors, hand-computed means otherwise."""

from __future__ import annotations

import pytest
import torch

from pixelseg.errors import InvalidInputError
from pixelseg.inference import flip_tta, sliding_window_predict


def pointwise(x: torch.Tensor) -> torch.Tensor:
    """Flip-equivariant: a per-pixel function of the input, 3 classes from 1 channel."""
    return torch.cat([x, 2.0 * x - 1.0, -(x**2)], dim=1)


def ramp_w(x: torch.Tensor) -> torch.Tensor:
    """Not flip-equivariant: multiplies pixel (i, j) by j + 1."""
    ramp = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    return x * ramp


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def test_equivariant_predictor_unchanged():
    x = torch.randn(2, 1, 7, 9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flip_tta(pointwise, average="logits")(x), pointwise(x))
    # Softmax averaging returns log-probabilities: same probabilities as the plain model.
    out = flip_tta(pointwise)(x)
    torch.testing.assert_close(out, pointwise(x).log_softmax(dim=1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.softmax(1), pointwise(x).softmax(1), atol=1e-6, rtol=1e-5)


def test_non_equivariant_logit_mean_by_hand():
    # identity weights j + 1, the w-flip weights W - j: the mean is x * (W + 1) / 2 everywhere.
    x = torch.randn(1, 1, 4, 5, generator=torch.Generator().manual_seed(1))
    for kwargs in ({"flips": [("w",)]}, {"dims": ("h", "w")}, {"dims": ("w",)}):
        out = flip_tta(ramp_w, average="logits", **kwargs)(x)
        torch.testing.assert_close(out, x * 3.0)
    # Flipping only h leaves a w-ramp untouched.
    torch.testing.assert_close(flip_tta(ramp_w, ("h",), average="logits")(x), ramp_w(x))


def test_non_equivariant_softmax_and_sigmoid_mean_by_hand():
    x = torch.tensor([[[[0.5, -1.0, 2.0]]]])  # [1, 1, 1, 3], W = 3

    def two_class(t):
        return torch.cat([ramp_w(t), torch.zeros_like(t)], dim=1)

    probs = flip_tta(two_class, flips=[("w",)])(x).softmax(dim=1)[0, 0, 0]
    for j, value in enumerate([0.5, -1.0, 2.0]):
        expected = (
            torch.sigmoid(torch.tensor(value * (j + 1)))
            + torch.sigmoid(torch.tensor(value * (3 - j)))
        ) / 2
        assert probs[j].item() == pytest.approx(expected.item(), rel=1e-6)

    binary = flip_tta(ramp_w, flips=[("w",)], average="sigmoid")(x).sigmoid()[0, 0, 0]
    for j, value in enumerate([0.5, -1.0, 2.0]):
        expected = (
            torch.sigmoid(torch.tensor(value * (j + 1)))
            + torch.sigmoid(torch.tensor(value * (3 - j)))
        ) / 2
        assert binary[j].item() == pytest.approx(expected.item(), rel=1e-5)


def test_number_of_passes_and_3d():
    counting = Counting(pointwise)
    x = torch.randn(1, 1, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    out = flip_tta(counting, ("d", "h", "w"), average="logits")(x)
    assert counting.calls == 8
    torch.testing.assert_close(out, pointwise(x))
    counting.calls = 0
    flip_tta(counting, flips=[("w",), ("w",), (-1,)])(x[..., 0, :, :])
    assert counting.calls == 2  # duplicates dropped, identity always included

    # A depth-ramp predictor averaged over the d-flip gives x * (D + 1) / 2.
    def ramp_d(t):
        return t * torch.arange(1, t.shape[2] + 1, dtype=t.dtype).reshape(-1, 1, 1)

    torch.testing.assert_close(flip_tta(ramp_d, ("d",), average="logits")(x), x * 2.0)


def test_composes_with_sliding_window():
    x = torch.randn(1, 1, 21, 30, generator=torch.Generator().manual_seed(3))
    out = sliding_window_predict(flip_tta(pointwise, average="logits"), x, (8, 8), overlap=0.5)
    torch.testing.assert_close(out, pointwise(x), atol=1e-5, rtol=0)


def test_outputs_stay_finite_for_extreme_logits():
    def confident(t):
        return torch.cat([t * 1e4, -t * 1e4], dim=1)

    x = torch.ones(1, 1, 2, 2)
    out = flip_tta(confident)(x)
    assert torch.isfinite(out).all()
    assert (out.argmax(1) == 0).all()
    assert torch.isfinite(flip_tta(lambda t: t * 1e4, average="sigmoid")(x)).all()


def test_bad_arguments():
    with pytest.raises(InvalidInputError, match=r"'x'.*d, h, w"):
        flip_tta(pointwise, ("x",))
    with pytest.raises(InvalidInputError, match="softmax"):
        flip_tta(pointwise, average="mean")
    with pytest.raises(InvalidInputError, match="'d'"):
        flip_tta(pointwise, ("d",))(torch.zeros(1, 1, 4, 4))  # no depth axis in 2D
    with pytest.raises(InvalidInputError, match="Tensor"):
        flip_tta(lambda t: {"out": t})(torch.zeros(1, 1, 4, 4))
