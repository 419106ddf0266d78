"""Normalisation chosen in the config: one set of named stats, shared with the transforms."""

from __future__ import annotations

import numpy as np
import pytest

from pixelseg.build import normalization
from pixelseg.config import DataConfig
from pixelseg.data import NORMALIZATIONS, build_transforms, channel_stats
from pixelseg.errors import ConfigError, InvalidInputError


def test_named_stats_follow_the_channel_count():
    mean, std = normalization(DataConfig(in_channels=3))
    assert mean == pytest.approx(NORMALIZATIONS["imagenet"][0])
    assert std == pytest.approx(NORMALIZATIONS["imagenet"][1])
    # Grey input: the ImageNet stats averaged over RGB (0.449, 0.226), as the transforms do.
    assert normalization(DataConfig(in_channels=1)) == (
        pytest.approx([0.449]),
        pytest.approx([0.226]),
    )
    assert normalization(DataConfig(in_channels=2, normalize="none")) == ([0.0, 0.0], [1.0, 1.0])


def test_config_stats_normalise_like_the_transform_built_from_them():
    data = DataConfig(in_channels=1)
    mean, std = normalization(data)
    image = np.full((4, 4, 1), 200, np.uint8)
    out, _ = build_transforms(None, mean=mean, std=std, train=False)(image, np.zeros((4, 4)))
    np.testing.assert_allclose(out.numpy(), (200 / 255 - 0.449) / 0.226, rtol=1e-5)


def test_custom_stats_are_checked():
    assert normalization(
        DataConfig(in_channels=2, normalize="custom", mean=[0.1, 0.2], std=[0.3, 0.4])
    ) == ([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ConfigError, match="need 2 values"):
        normalization(DataConfig(in_channels=2, normalize="custom", mean=[0.1], std=[0.3]))
    with pytest.raises(ConfigError, match="positive"):
        normalization(DataConfig(in_channels=1, normalize="custom", mean=[0.1], std=[0.0]))


def test_channel_stats_rejects_a_mismatch_naming_the_stat():
    assert channel_stats([0.5], 3) == [0.5, 0.5, 0.5]
    with pytest.raises(InvalidInputError, match="mean has 2 values but the image has 3"):
        channel_stats([0.1, 0.2], 3, "mean")
