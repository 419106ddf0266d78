"""F-score over thresholds and the ISBI 2012 pixel error (1 - maximal F-score)."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import f1_score

from pixelseg.errors import InvalidInputError
from pixelseg.metrics import ISBI_THRESHOLDS, ThresholdSweep, isbi_pixel_error


def test_hand_computed_sweep() -> None:
    probs = torch.tensor([[0.05, 0.35], [0.65, 0.95]])
    target = torch.tensor([[0, 1], [0, 1]])
    sweep = ThresholdSweep()
    sweep.update(probs, target)
    scores = sweep.compute()
    # t=0.0: all positive (tp 2, fp 2) -> 4/6; t=0.1-0.3: tp 2, fp 1 -> 4/5;
    # t=0.4-0.6: tp 1, fp 1, fn 1 -> 1/2; t=0.7-0.9: tp 1, fn 1 -> 2/3; t=1.0: none -> 0.
    expected = [4 / 6] + [0.8] * 3 + [0.5] * 3 + [2 / 3] * 3 + [0.0]
    assert scores["thresholds"] == list(ISBI_THRESHOLDS)
    assert scores["fscore"] == pytest.approx(expected)
    assert scores["threshold"] == 0.1
    assert scores["max_fscore"] == pytest.approx(0.8)
    assert scores["pixel_error"] == pytest.approx(0.2)
    assert isbi_pixel_error(probs, target) == pytest.approx(0.2)
    assert scores["precision"][1] == pytest.approx(2 / 3) and scores["recall"][1] == 1.0


def test_threshold_is_strict_like_fiji() -> None:
    # Fiji binarises the proposal with value > threshold: 0.5 is negative at t = 0.5.
    sweep = ThresholdSweep(thresholds=[0.5])
    sweep.update(torch.tensor([0.5, 0.6]), torch.tensor([1, 1]))
    assert sweep.compute()["recall"] == [0.5]


def test_sweep_equals_sklearn_f1_at_every_threshold() -> None:
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(3, 17, 19, generator=gen) < 0.7).long()
    probs = (0.6 * target + 0.7 * torch.rand(3, 17, 19, generator=gen)).clamp(0, 1)
    sweep = ThresholdSweep()
    sweep.update(probs, target)
    scores = sweep.compute()
    reference = [
        f1_score(target.flatten().numpy(), (probs > t).long().flatten().numpy(), zero_division=0)
        for t in ISBI_THRESHOLDS
    ]
    assert scores["fscore"] == pytest.approx(reference)
    assert scores["pixel_error"] == pytest.approx(1 - max(reference))


def test_streaming_pools_counts_and_skips_ignored_pixels() -> None:
    gen = torch.Generator().manual_seed(1)
    target = (torch.rand(4, 8, 8, generator=gen) < 0.5).long()
    probs = torch.rand(4, 8, 8, generator=gen)
    whole, parts = ThresholdSweep(), ThresholdSweep()
    whole.update(probs, target)
    for i in range(4):
        parts.update(probs[i], target[i])
    assert parts.compute() == whole.compute()

    ignored = target.clone()
    ignored[0] = 255
    with_ignore = ThresholdSweep(ignore_index=255)
    with_ignore.update(probs, ignored)
    rest = ThresholdSweep()
    rest.update(probs[1:], target[1:])
    assert with_ignore.compute() == rest.compute()


@pytest.mark.parametrize(
    ("probs", "target", "message"),
    [
        (torch.tensor([0.2, float("nan")]), torch.tensor([0, 1]), "NaN"),
        (torch.tensor([0.2, 1.5]), torch.tensor([0, 1]), "[0, 1]"),
        (torch.tensor([0.2, 0.3]), torch.tensor([0, 1, 1]), "same shape"),
        (torch.tensor([0.2, 0.3]), torch.tensor([0, 2]), "values [2]"),
        (torch.tensor([0.2, 0.3]), torch.tensor([0.0, 1.0]), "integer labels"),
        (torch.tensor([0, 1]), torch.tensor([0, 1]), "floating point"),
    ],
)
def test_bad_input_is_named_and_counts_nothing(probs, target, message) -> None:
    sweep = ThresholdSweep()
    sweep.update(torch.tensor([0.9]), torch.tensor([1]))
    before = sweep.compute()
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sweep.update(probs, target)
    assert sweep.compute() == before


def test_bad_thresholds() -> None:
    with pytest.raises(InvalidInputError, match="thresholds"):
        ThresholdSweep(thresholds=[])
    with pytest.raises(InvalidInputError, match="thresholds"):
        ThresholdSweep(thresholds=["high"])
