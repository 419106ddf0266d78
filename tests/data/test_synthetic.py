from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.ops import masks_to_boxes

from pixelseg.data import PANOPTIC_CATEGORIES, SHAPE_CLASSES, SyntheticShapes, build_transforms
from pixelseg.data.synthetic import SHAPE_MEAN, SHAPE_STD, _shape_inside
from pixelseg.errors import InvalidInputError


def test_same_seed_and_index_give_identical_samples_in_any_order():
    a = SyntheticShapes(10, size=64, seed=3)
    b = SyntheticShapes(10, size=64, seed=3)
    forward = [a.generate(i) for i in range(5)]
    backward = [b.generate(i) for i in reversed(range(5))][::-1]
    for (ia, ma), (ib, mb) in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
    assert forward[0][0].shape == (64, 64, 3) and forward[0][0].dtype == np.uint8
    assert forward[0][1].shape == (64, 64) and forward[0][1].dtype == np.uint8
    # Another index or another seed gives another image.
    assert not np.array_equal(a.generate(0)[0], a.generate(1)[0])
    assert not np.array_equal(a.generate(0)[0], SyntheticShapes(10, 64, seed=4).generate(0)[0])


def test_samples_draw_from_their_own_generator_not_the_global_ones():
    ds = SyntheticShapes(4, size=32, seed=3)
    samples = []
    for global_seed in (0, 1):
        np.random.seed(global_seed)
        random.seed(global_seed)
        before = np.random.get_state()[1].tolist(), random.getstate()
        samples.append(ds.generate(2))
        assert (np.random.get_state()[1].tolist(), random.getstate()) == before
    for a, b in zip(*samples, strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_square_size_and_class_frequencies():
    ds = SyntheticShapes(40, size=(48, 80), seed=0)
    masks = np.stack([ds.generate(i)[1] for i in range(len(ds))])
    assert masks.shape == (40, 48, 80)
    freq = np.bincount(masks.ravel(), minlength=4) / masks.size
    assert len(freq) == 4  # no label beyond triangle
    assert 0.6 < freq[0] < 0.95  # background dominates but shapes are visible
    assert (freq[1:] > 0.02).all()  # every shape class appears
    # Roughly balanced shapes (equal areas, uniform classes): no class below half another's.
    assert freq[1:].min() > 0.5 * freq[1:].max()
    per_image = [(m > 0).any() for m in masks]
    assert all(per_image)  # at least one shape everywhere


def test_shapes_have_the_requested_area_and_geometry():
    ys = np.arange(200, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(200, dtype=np.float64)[None, :] + 0.5
    r = 40.0
    for kind in (1, 2, 3):
        inside = _shape_inside(kind, 100.0, 100.0, r, 0.3, ys, xs)
        assert inside.sum() == pytest.approx(math.pi * r * r, rel=0.01)
    # Axis-aligned square of area pi r^2: side sqrt(pi) r.
    square = _shape_inside(2, 100.0, 100.0, r, 0.0, ys, xs)
    rows = np.flatnonzero(square.any(axis=1))
    assert rows[-1] - rows[0] + 1 == pytest.approx(math.sqrt(math.pi) * r, abs=1.0)
    # Triangle with a vertex pointing right (angle 0): widest at its left edge.
    tri = _shape_inside(3, 100.0, 100.0, r, 0.0, ys, xs)
    widths = tri.sum(axis=0)
    cols = np.flatnonzero(widths)
    assert widths[cols[0] + 1] > widths[cols[-1] - 1]


def test_shapes_are_flat_colours_that_contrast_with_the_background():
    ds = SyntheticShapes(20, size=64, seed=1, noise_std=0.0)
    for i in range(len(ds)):
        image, mask = ds.generate(i)
        target = ds.instance_target(i)
        background = image[mask == 0].astype(float)
        for m in target["masks"].numpy():
            colours = np.unique(image[m], axis=0)
            assert len(colours) == 1  # one flat colour per shape without noise
            # Every background pixel is far from it (>= 96 in RGB by construction).
            dist = np.linalg.norm(background - colours[0].astype(float), axis=1)
            assert dist.min() > 90


def test_getitem_dict_collates_and_applies_transform():
    tf = build_transforms([{"name": "hflip", "p": 1.0}], mean="none")
    ds = SyntheticShapes(6, size=32, seed=0, transform=tf)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (3, 32, 32) and batch["mask"].dtype == torch.int64
    assert batch["name"] == ["shape_00000", "shape_00001", "shape_00002"]
    assert batch["image_path"] == ["", "", ""]
    image, mask = ds.generate(1)
    np.testing.assert_array_equal(batch["mask"][1].numpy(), mask[:, ::-1])
    np.testing.assert_allclose(
        batch["image"][1].permute(1, 2, 0).numpy(), image[:, ::-1] / 255.0, atol=1e-6
    )
    plain = SyntheticShapes(6, size=32, seed=0)[1]
    np.testing.assert_allclose(plain["image"].permute(1, 2, 0).numpy(), image / 255.0, atol=1e-6)
    assert ds.classes == SHAPE_CLASSES and len(ds.colors) == 4 and ds.num_classes == 4


@pytest.mark.parametrize("index", range(8))
def test_instance_and_panoptic_targets_are_consistent(index):
    ds = SyntheticShapes(8, size=(64, 72), seed=5, max_shapes=6)
    target = ds.instance_target(index)
    _, mask = ds.generate(index)
    masks, boxes, labels = target["masks"], target["boxes"], target["labels"]
    n = len(labels)
    assert masks.dtype == torch.bool and masks.shape == (n, 64, 72)
    assert boxes.shape == (n, 4) and labels.dtype == torch.int64 and n >= 1
    np.testing.assert_array_equal(target["semantic"].numpy(), mask)
    # Instances are disjoint, their union is the foreground, each carries its pixels' class.
    assert (masks.sum(0) <= 1).all()
    np.testing.assert_array_equal(masks.any(0).numpy(), mask > 0)
    for m, label in zip(masks, labels, strict=True):
        assert m.any() and (target["semantic"][m] == label).all()
    # Boxes are tight: torchvision's inclusive max + 1 (pixel-edge coordinates).
    expected = masks_to_boxes(masks)
    expected[:, 2:] += 1
    torch.testing.assert_close(boxes, expected)
    # Panoptic: every pixel in exactly one segment; segments match instances and stuff.
    pan = target["panoptic"].numpy()
    infos = target["segments_info"]
    assert sorted(np.unique(pan).tolist()) == [s["id"] for s in infos]
    categories = {c["id"]: c for c in PANOPTIC_CATEGORIES}
    for s in infos:
        region = pan == s["id"]
        assert s["area"] == region.sum() and categories[s["category_id"]]["isthing"] == s["isthing"]
        if s["isthing"]:
            np.testing.assert_array_equal(region, masks[s["id"] - 1].numpy())
            assert s["category_id"] == labels[s["id"] - 1]
        else:
            assert (mask[region] == 0).all()
    assert sum(s["area"] for s in infos) == pan.size


def test_both_stuff_textures_occur():
    ds = SyntheticShapes(30, size=32, seed=0)
    seen = {
        s["category_id"]
        for i in range(30)
        for s in ds.instance_target(i)["segments_info"]
        if not s["isthing"]
    }
    assert seen == {4, 5}


def test_bad_arguments():
    with pytest.raises(InvalidInputError, match="min_shapes"):
        SyntheticShapes(4, min_shapes=3, max_shapes=2)
    with pytest.raises(InvalidInputError, match="at least 16x16"):
        SyntheticShapes(4, size=8)
    with pytest.raises(InvalidInputError, match="max_radius"):
        SyntheticShapes(4, max_radius=0.5)
    with pytest.raises(IndexError, match="out of range"):
        SyntheticShapes(4).generate(4)


def test_published_normalisation_matches_generated_images():
    ds = SyntheticShapes(256, size=32, seed=123)
    pixels = np.stack([ds.generate(i)[0] for i in range(len(ds))]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(pixels.mean(axis=0), SHAPE_MEAN, atol=0.025)
    np.testing.assert_allclose(pixels.std(axis=0), SHAPE_STD, atol=0.02)
