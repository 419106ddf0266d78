from __future__ import annotations

import math

import pytest
import torch

from pixelseg.config import SchedulerConfig, TrainConfig
from pixelseg.engine.schedules import LRSchedule, build_optimizer, build_plateau, lr_factor


def test_poly_and_cosine_values():
    poly = SchedulerConfig(name="poly", power=0.9)
    assert lr_factor(poly, 0, 100, 10) == 1.0
    assert lr_factor(poly, 50, 100, 10) == pytest.approx(0.5**0.9)
    assert lr_factor(poly, 100, 100, 10) == 0.0
    cosine = SchedulerConfig(name="cosine")
    assert lr_factor(cosine, 25, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_is_linear_then_schedule():
    config = SchedulerConfig(name="cosine", warmup_iters=10, warmup_factor=0.1)
    assert lr_factor(config, 0, 110, 10) == pytest.approx(0.1)
    assert lr_factor(config, 5, 110, 10) == pytest.approx(0.55)
    assert lr_factor(config, 10, 110, 10) == pytest.approx(1.0)
    assert lr_factor(config, 60, 110, 10) == pytest.approx(0.5)


def test_step_schedule_counts_epochs():
    config = SchedulerConfig(name="step", step_size=2, gamma=0.1)
    assert lr_factor(config, 19, 100, 10) == 1.0
    assert lr_factor(config, 20, 100, 10) == pytest.approx(0.1)
    assert lr_factor(config, 40, 100, 10) == pytest.approx(0.01)


def test_scheduler_applies_factor_and_min_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    config = TrainConfig(
        optimizer={"name": "sgd", "lr": 0.1},
        scheduler={"name": "poly", "power": 1.0, "min_lr": 0.01},
    )
    optimizer = build_optimizer([param], config)
    schedule = LRSchedule(optimizer, config, total_steps=10, steps_per_epoch=5)
    assert build_plateau(optimizer, config) is None
    lrs = []
    for step in range(1, 11):
        optimizer.step()
        schedule.apply(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[4] == pytest.approx(0.05)
    assert lrs[-1] == pytest.approx(0.01)


def test_budget_fit_shortens_the_span_and_is_its_only_state():
    param = torch.nn.Parameter(torch.zeros(1))
    config = TrainConfig(
        optimizer={"name": "sgd", "lr": 0.1},
        scheduler={"name": "poly", "power": 1.0, "warmup_iters": 2},
        max_minutes=1.0,
    )
    schedule = LRSchedule(build_optimizer([param], config), config, 1000, steps_per_epoch=10)
    schedule.fit_to_budget(step=4, steps_timed=4, seconds=10.0)  # too few steps timed
    assert schedule.span == 1000
    # 10 steps in 20 s: 40 s left make 20 more steps, so the decay ends at step 30.
    schedule.fit_to_budget(step=10, steps_timed=10, seconds=20.0)
    assert schedule.state_dict() == {"span": 30, "fitted": True}
    assert schedule.factor(30) == 0.0
    schedule.fit_to_budget(step=10, steps_timed=10, seconds=0.001)  # never past the config
    assert schedule.span == 1000
    rebuilt = LRSchedule(build_optimizer([param], config), config, 20, steps_per_epoch=10)
    rebuilt.load_state_dict({"span": 30, "fitted": True})  # a shorter configured length
    assert rebuilt.span == 20
    longer = LRSchedule(build_optimizer([param], config), config, 2000, steps_per_epoch=10)
    longer.load_state_dict({"span": 1000, "fitted": False})  # never fitted: the config's
    assert longer.span == 2000
    longer.load_state_dict({"span": 30})  # written before "fitted" was saved: kept
    assert longer.span == 30 and longer.fitted
