"""Every random generator a training step may draw from, captured as checkpoint data.

The states are stored as tensors and lists (no numpy arrays, no pickled objects), so the
checkpoint holding them loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state"]


def capture_rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's global generator states (CUDA's too once initialised)."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generators saved by :func:`capture_rng_state`.

    Tensors go back through the CPU: torch only accepts CPU byte tensors, and a checkpoint
    loaded with a CUDA ``map_location`` (as a resumed GPU run loads it) moved them.
    """
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    numpy_state = state["numpy"]
    key = numpy_state["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", key, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
