from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from pixelseg.data import SyntheticShapes, build_transforms
from pixelseg.engine.sampling import EpochBatchSampler, EpochSampler, SeededDataset, sample_seed


def test_epoch_sampler_is_seeded_by_epoch_and_resumable():
    a = list(EpochSampler(10, seed=3, epoch=1))
    b = list(EpochSampler(10, seed=3, epoch=1))
    c = list(EpochSampler(10, seed=3, epoch=2))
    assert a == b and a != c
    assert sorted(i for i, _ in a) == list(range(10))
    tail = list(EpochSampler(10, seed=3, epoch=1, start=4))
    assert tail == a[4:] and len(EpochSampler(10, seed=3, epoch=1, start=4)) == 6


def test_epoch_batch_sampler_runs_on_epoch_after_epoch_and_resumes_mid_epoch():
    stream = list(itertools.islice(EpochBatchSampler(10, 4, seed=3, epoch=1), 9))
    # 3 batches per epoch (4, 4, 2); no batch mixes two epochs.
    assert [len(b) for b in stream] == [4, 4, 2] * 3
    assert [{e for _, e in b} for b in stream] == [{1}] * 3 + [{2}] * 3 + [{3}] * 3
    for epoch, batches in zip((1, 2, 3), (stream[:3], stream[3:6], stream[6:]), strict=True):
        flat = list(itertools.chain.from_iterable(batches))
        assert flat == list(EpochSampler(10, seed=3, epoch=epoch))
    resumed = list(itertools.islice(EpochBatchSampler(10, 4, seed=3, epoch=2, start_batch=1), 5))
    assert resumed == stream[4:]
    with pytest.raises(ValueError, match="length >= 1"):
        EpochBatchSampler(0, 4, seed=3)


def _shapes(seed: int = 0) -> SyntheticShapes:
    spec = [
        {"name": "scale_crop", "size": [24, 24]},
        {"name": "hflip"},
        {"name": "color_jitter", "p": 1.0},
        {"name": "gauss_noise", "p": 1.0},
    ]
    return SyntheticShapes(6, size=32, seed=seed, transform=build_transforms(spec, seed=5))


def _global_states() -> tuple[object, ...]:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()


def test_seeded_dataset_draws_depend_only_on_seed_epoch_index():
    data = SeededDataset(_shapes(), seed=7)
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    first = data[(2, 0)]
    again = data[(2, 0)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert not torch.equal(data[(2, 1)]["image"], first["image"])  # another epoch
    # Nothing global feeds the draw: other global seeds, or a draw in between, change nothing.
    random.seed(999)
    np.random.seed(999)
    torch.manual_seed(999)
    data[(3, 0)]
    assert torch.equal(data[(2, 0)]["image"], first["image"])
    assert sample_seed(7, 0, 2) != sample_seed(7, 0, 3)


def test_drawing_samples_leaves_global_generators_untouched():
    data = SeededDataset(_shapes(), seed=7)
    before = _global_states()
    for key in [(0, 0), (1, 0), (1, 3), 4]:
        data[key]
    assert _global_states() == before


def test_seeded_dataset_warns_about_a_transform_it_cannot_seed(caplog):
    plain = SyntheticShapes(2, size=32, transform=lambda image, mask: (image, mask))
    with caplog.at_level("WARNING", logger="pixelseg.engine.sampling"):
        SeededDataset(plain, seed=0)
        SeededDataset(_shapes(), seed=0)
        SeededDataset(SyntheticShapes(2, size=32), seed=0)  # no transform: nothing random
    assert len(caplog.records) == 1 and "set_seed" in caplog.records[0].getMessage()
