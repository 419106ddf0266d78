"""The weight EMA: its warmed-up decay and the averages it keeps, against hand computations."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from pixelseg.engine.ema import ema_decay_at, make_ema


def test_decay_warms_up_then_holds():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema_decay_at(0.999, 90) == pytest.approx(0.91)  # 91 / 100
    assert ema_decay_at(0.99, 890) == pytest.approx(0.99)  # 891 / 900 = 0.99: equal
    assert ema_decay_at(0.99, 10_000) == 0.99


def test_average_matches_a_hand_computed_sequence():
    model = nn.Linear(1, 1, bias=False)
    ema = make_ema(model, decay=0.5)
    expected = None
    for step, value in enumerate([4.0, 2.0, 8.0, 0.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        if expected is None:
            expected = value  # the first update copies
        else:
            d = min(0.5, (1 + step - 1) / (10 + step - 1))
            expected = d * expected + (1 - d) * value
        assert ema.module.weight.item() == pytest.approx(expected)
    # by hand: copy 4; d=0.1 -> 0.4 + 1.8 = 2.2; d=2/11 -> 0.4 + 6.545 = 6.945; d=0.25 -> 1.736
    assert ema.module.weight.item() == pytest.approx(0.25 * (2 / 11 * 2.2 + 9 / 11 * 8.0))
    assert model.weight.item() == 0.0  # the trained model is left alone


def test_batchnorm_statistics_are_averaged_and_counters_copied():
    model = nn.BatchNorm1d(2)
    ema = make_ema(model, decay=0.9)
    ema.update_parameters(model)  # copy: mean 0
    model.train()
    model(torch.tensor([[1.0, 3.0], [3.0, 5.0]]))  # running mean 0.1 * (2, 4) = (0.2, 0.4)
    ema.update_parameters(model)  # first average: decay 0.1
    assert torch.allclose(ema.module.running_mean, torch.tensor([0.18, 0.36]))
    assert int(ema.module.num_batches_tracked) == 1


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match=re.escape(str(decay))):
        make_ema(nn.Linear(1, 1), decay)
