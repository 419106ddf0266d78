"""The benchmarks' training clock: intermediate marks are scored once, the end once."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def budget_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("budget")  # as the benchmark scripts import it
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_a_mark_on_the_budget_is_left_to_the_final_score(monkeypatch):
    budget = budget_module()
    now = [0.0]
    monkeypatch.setattr(budget.time, "perf_counter", lambda: now[0])
    clock = budget.BudgetClock()
    now[0] = 4.9 * 60
    assert not clock.mark_due(5.0, 10.0)
    now[0] = 5.1 * 60
    assert clock.mark_due(5.0, 10.0)
    now[0] = 10.2 * 60  # past the budget: the loop's final score covers mark 10
    assert not clock.mark_due(10.0, 10.0)
    with clock.pause():
        now[0] += 60.0  # scoring time is not training time
    assert round(clock.training_minutes(), 6) == 10.2
