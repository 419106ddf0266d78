"""Fixtures shared by the task tests."""

from __future__ import annotations

import pytest

from pixelseg import workflows


@pytest.fixture
def demo_with_few_val_shapes(monkeypatch):
    """The shipped demo config, validating on 8 of its 96 shapes so a demo test stays short:
    it still runs that config through train, eval and predict."""
    shipped = workflows.demo_config

    def fewer_val(out, minutes=None, task="semantic"):
        config = shipped(out, minutes, task)
        synthetic = config.data.synthetic.model_copy(update={"num_val": 8})
        return config.model_copy(
            update={"data": config.data.model_copy(update={"synthetic": synthetic})}
        )

    monkeypatch.setattr(workflows, "demo_config", fewer_val)
