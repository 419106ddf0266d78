"""The network size of an ``input_scale`` model: Python's round in eager mode, an integer
rule while a graph is captured for export; both must give the same size for every input."""

from __future__ import annotations

import numpy as np
import pytest

from pixelseg.errors import InvalidInputError
from pixelseg.models import base


@pytest.mark.parametrize("scale", [0.5, 0.75, 0.25, 0.375, 0.3, 1 / 3, 1.5, 2.0])
def test_integer_rule_equals_round_for_every_size(monkeypatch, scale):
    assert base.integer_scale(scale) is not None
    monkeypatch.setattr(base, "_is_tracing", lambda: True)
    lengths = range(1, 4097)
    traced = [int(base.scaled_length(length, scale)) for length in lengths]
    expected = [max(round(length * scale), 1) for length in lengths]
    assert traced == expected


def test_ties_round_half_to_even_as_python_does(monkeypatch):
    monkeypatch.setattr(base, "_is_tracing", lambda: True)
    # 45 * 0.5 = 22.5 -> 22 and 47 * 0.5 = 23.5 -> 24, as round() gives.
    assert [int(base.scaled_length(n, 0.5)) for n in (45, 47, 1)] == [22, 24, 1]
    assert np.round(22.5) == 22


def test_a_scale_without_an_exact_integer_rule_is_refused_when_exporting(monkeypatch):
    # 0.7 is stored as 0.69999999999999996: 45 * 0.7 == 31.499999999999996 rounds to 31,
    # while 45 * 7 / 10 == 31.5 rounds (half to even) to 32.
    assert base.integer_scale(0.7) is None
    assert base.scaled_length(45, 0.7) == 31  # eager mode keeps round()
    monkeypatch.setattr(base, "_is_tracing", lambda: True)
    with pytest.raises(InvalidInputError, match=r"input_scale 0\.7 cannot be exported"):
        base.scaled_length(45, 0.7)
