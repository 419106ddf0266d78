"""End to end: the models learn (a few optimiser steps on synthetic and on real images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixelseg.models import create

MEMBRANE = Path(__file__).resolve().parents[3] / "shared" / "data" / "membrane"


def _disks(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images ``[n, 1, size, size]`` of one noisy bright disk each, and its mask."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(8, size - 8, (n, 2), generator=generator)
    radii = torch.randint(4, 8, (n,), generator=generator)
    d2 = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2
    masks = (d2 <= radii[:, None, None] ** 2).long()
    noise = 0.3 * torch.randn(n, size, size, generator=generator)
    return (masks.float() + noise)[:, None], masks


def _fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(steps):
        out = model(x)
        outs = out if isinstance(out, list) else [out]
        loss = sum(F.cross_entropy(o, y) for o in outs) / len(outs)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("unet", {"base_channels": 8}),
        ("unetpp", {"base_channels": 4, "deep_supervision": True}),
    ],
)
def test_learns_synthetic_disks(name: str, options: dict) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x, y = _disks(8, 32, generator)
    model = create(name, num_classes=2, in_channels=1, **options)
    losses = _fit(model, x, y, steps=40)
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.95  # the background alone is about 0.9


@pytest.mark.slow
@pytest.mark.realdata
def test_unet_fits_a_real_em_membrane_crop() -> None:
    if not (MEMBRANE / "image" / "0.png").is_file():
        pytest.skip(f"real data not found: {MEMBRANE} (see ../shared/data/README.md)")
    image = np.asarray(Image.open(MEMBRANE / "image" / "0.png").convert("L"), dtype=np.float32)
    label = np.asarray(Image.open(MEMBRANE / "label" / "0.png").convert("L")) > 127
    x = torch.from_numpy(image[192:320, 192:320] / 255.0)[None, None]
    y = torch.from_numpy(label[192:320, 192:320].astype(np.int64))[None]
    torch.manual_seed(0)
    model = create("unet", num_classes=2, in_channels=1, base_channels=8)
    losses = _fit(model, (x - x.mean()) / x.std(), y, steps=60)
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        accuracy = (model((x - x.mean()) / x.std()).argmax(1) == y).float().mean().item()
    majority = max(y.float().mean().item(), 1 - y.float().mean().item())
    assert accuracy > majority + 0.05
