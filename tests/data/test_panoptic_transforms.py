"""Panoptic augmentation: image, instances, semantic and panoptic maps stay aligned.

The painted sample gives every segment (stuff too) its own colour and VOID another, so after
flips, crops and padding, which move whole pixels, the colour of every pixel must be the
colour of its segment in the moved panoptic map, or the padding colour where the map is
VOID and the semantic map says 255. After resampling, colours blend at edges; the check is
then made two pixels inside each segment. Every output must also pass the library-independent
consistency check (``check_panoptic_sample``: masks = thing segments, semantic = category
mapping, tight boxes and segment areas).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pixelseg.data import (
    INSTANCE_TRANSFORM_NAMES,
    PANOPTIC_TRANSFORM_NAMES,
    PanopticCategories,
    SyntheticPanoptic,
    TransformedPanoptic,
    build_panoptic_transforms,
)
from pixelseg.data.panoptic_sample import panoptic_targets
from pixelseg.errors import InvalidInputError

CATEGORIES = PanopticCategories.from_list(
    [
        {"id": 1, "name": "ball", "isthing": 1},
        {"id": 2, "name": "box", "isthing": 1},
        {"id": 3, "name": "grass", "isthing": 0},
        {"id": 4, "name": "sand", "isthing": 0},
    ],
    "test",
)
THINGS, STUFF = [1, 2], [3, 4]
# Segment id -> colour; VOID and the padding fill have their own.
COLOURS = {
    500: (0.0, 1.0, 0.0),  # grass
    600: (1.0, 1.0, 0.0),  # sand
    7001: (1.0, 0.0, 0.0),  # ball
    7002: (0.0, 0.0, 1.0),  # box
    7003: (1.0, 0.0, 1.0),  # crowd of balls
    7004: (0.0, 1.0, 1.0),  # small box in a corner, often cropped away
}
VOID_COLOUR, FILL = (0.5, 0.5, 0.5), 1.0


def _painted_sample(height: int = 60, width: int = 80) -> dict:
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    ids = np.where(ys < 30, 500, 600)
    ids[:, width - 4 :] = 0  # a VOID strip
    ids[(xs - 20) ** 2 + (ys - 20) ** 2 <= 100] = 7001
    ids[(xs - 55) ** 2 / 4 + (ys - 15) ** 2 <= 64] = 7002
    ids[np.abs(xs - 45) + np.abs(ys - 45) <= 10] = 7003
    ids[(xs <= 4) & (ys >= height - 4)] = 7004
    segments = [
        {"id": 500, "category_id": 3},
        {"id": 7001, "category_id": 1},
        {"id": 7002, "category_id": 2},
        {"id": 600, "category_id": 4},
        {"id": 7003, "category_id": 1, "iscrowd": 1},
        {"id": 7004, "category_id": 2},
    ]
    image = torch.empty(3, height, width)
    image[:] = torch.tensor(VOID_COLOUR)[:, None, None]
    for seg_id, colour in COLOURS.items():
        image[:, torch.from_numpy(ids == seg_id)] = torch.tensor(colour)[:, None]
    sample = panoptic_targets(ids, segments, CATEGORIES, where="painted")
    return {"image": image, **sample, "image_id": 3, "name": "painted", "image_path": ""}


def _check(out: dict, check_panoptic_sample, margin: int = 0) -> None:
    """Consistent sample, and colours matching the segments ``margin`` pixels inside each."""
    check_panoptic_sample(out, THINGS, STUFF)
    pixels = out["image"].permute(1, 2, 0)
    pan = out["panoptic"].numpy()
    for seg in out["segments_info"]:
        region = pan == seg["id"]
        if margin:
            region = ndimage.binary_erosion(region, iterations=margin, border_value=0)
        colour = torch.tensor(COLOURS[seg["id"]])
        inside = pixels[torch.from_numpy(region)]  # empty when the segment is thinner than 2m
        assert ((inside - colour).abs() < 0.05).all(), seg
    if margin == 0:
        void = torch.from_numpy(pan == 0)
        fill_or_void = torch.stack([torch.tensor(VOID_COLOUR), torch.full((3,), FILL)])
        diff = (pixels[void][:, None, :] - fill_or_void[None]).abs().amax(2).amin(1)
        assert (diff < 1e-6).all()
        is_fill = (pixels - FILL).abs().amax(2) < 1e-6
        assert (out["semantic"][is_fill] == 255).all() and (out["panoptic"][is_fill] == 0).all()


def test_names_are_the_instance_names() -> None:
    assert PANOPTIC_TRANSFORM_NAMES == INSTANCE_TRANSFORM_NAMES


def test_the_painted_sample_is_consistent(check_panoptic_sample) -> None:
    _check(_painted_sample(), check_panoptic_sample)


@pytest.mark.parametrize(
    "spec",
    [
        [{"name": "hflip"}, {"name": "vflip"}],
        [{"name": "zoom_out", "max_scale": 1.5, "fill": FILL, "p": 1.0}],
        [{"name": "crop", "size": [50, 70]}],
        [{"name": "hflip"}, {"name": "crop", "size": [70, 90], "fill": FILL}],  # pads
        [
            {"name": "vflip"},
            {"name": "zoom_out", "max_scale": 2.0, "fill": FILL},
            {"name": "crop", "size": [40, 60], "fill": FILL},
        ],
    ],
)
def test_pixel_moves_keep_everything_aligned_to_the_pixel(spec, check_panoptic_sample) -> None:
    transform = build_panoptic_transforms(spec)
    for seed in range(12):
        transform.set_seed(seed)
        _check(transform(_painted_sample()), check_panoptic_sample)


@pytest.mark.parametrize(
    "spec",
    [
        [{"name": "scale", "sizes": [30, 45, 90], "max_size": 140}, {"name": "hflip"}],
        [
            {"name": "scale_jitter", "size": [64, 64], "scale": [0.5, 1.5]},
            {"name": "crop", "size": 64, "fill": FILL},
        ],
        [
            {"name": "zoom_out", "max_scale": 2.0, "p": 1.0, "fill": FILL},
            {"name": "resize", "size": 50},
        ],
        [{"name": "resize", "size": [30, 100]}],
    ],
)
def test_resampling_keeps_maps_and_instances_aligned(spec, check_panoptic_sample) -> None:
    transform = build_panoptic_transforms(spec)
    for seed in range(6):
        transform.set_seed(seed)
        _check(transform(_painted_sample()), check_panoptic_sample, margin=2)


def test_zoom_out_pads_with_void_and_keeps_every_pixel(check_panoptic_sample) -> None:
    sample = _painted_sample()
    transform = build_panoptic_transforms([{"name": "zoom_out", "max_scale": 2.0, "p": 1.0}])
    transform.set_seed(1)
    out = transform(sample)
    h, w = out["panoptic"].shape
    assert h * w > 60 * 80
    assert out["segments_info"] == [
        {**s, "bbox": out["segments_info"][k]["bbox"]}
        for k, s in enumerate(sample["segments_info"])
    ]  # nothing lost, areas unchanged
    void_before = int((sample["panoptic"] == 0).sum())
    assert int((out["semantic"] == 255).sum()) == h * w - 60 * 80 + void_before
    check_panoptic_sample(out, THINGS, STUFF)


def test_crops_drop_segments_and_their_instances(check_panoptic_sample) -> None:
    transform = build_panoptic_transforms([{"name": "crop", "size": [24, 24]}])
    sample = _painted_sample()
    dropped_things = dropped_stuff = 0
    for seed in range(30):
        transform.set_seed(seed)
        out = transform(sample)
        _check(out, check_panoptic_sample)
        kept = {s["id"] for s in out["segments_info"]}
        lost = [s for s in sample["segments_info"] if s["id"] not in kept]
        dropped_things += sum(s["isthing"] for s in lost)
        dropped_stuff += sum(1 - s["isthing"] for s in lost)
        # The instances are the remaining thing segments, crowd flags in step.
        things = [s for s in out["segments_info"] if s["isthing"]]
        assert out["iscrowd"].tolist() == [s["iscrowd"] for s in things]
    assert dropped_things > 0 and dropped_stuff > 0, "the drop path went untested"


def test_set_seed_reproduces_the_draw_and_leaves_the_global_stream() -> None:
    transform = build_panoptic_transforms(
        [{"name": "scale_jitter", "size": [60, 80]}, {"name": "crop", "size": [30, 30]}]
    )
    sample = _painted_sample()
    state = torch.get_rng_state()
    transform.set_seed(11)
    first, again = transform(sample), transform(sample)
    assert torch.equal(torch.get_rng_state(), state)
    transform.set_seed(12)
    other = transform(sample)
    for key in ("image", "masks", "semantic", "panoptic", "boxes"):
        torch.testing.assert_close(first[key], again[key], rtol=0, atol=0)
    assert first["segments_info"] == again["segments_info"]
    assert not torch.equal(first["image"], other["image"])


def test_colour_only_pipelines_leave_the_targets(check_panoptic_sample) -> None:
    transform = build_panoptic_transforms([{"name": "color", "brightness": 0.5}])
    sample = _painted_sample()
    out = transform(sample)
    for key in ("masks", "semantic", "panoptic", "boxes", "area"):
        torch.testing.assert_close(out[key], sample[key], rtol=0, atol=0)
    assert out["segments_info"] == sample["segments_info"]
    assert not torch.equal(out["image"], sample["image"])


def test_specs_and_errors() -> None:
    assert build_panoptic_transforms(None) is None and build_panoptic_transforms([]) is None
    with pytest.raises(
        InvalidInputError,
        match=r"panoptic transforms\[1\]: unknown panoptic "
        r"transform 'flip'. Did you mean",
    ):
        build_panoptic_transforms([{"name": "hflip"}, {"name": "flip"}])
    with pytest.raises(InvalidInputError, match=r"panoptic transforms\[0\] \('crop'\): missing"):
        build_panoptic_transforms([{"name": "crop"}])


def test_transformed_panoptic_wraps_a_source(check_panoptic_sample) -> None:
    source = SyntheticPanoptic(3, size=48, seed=2)
    transform = build_panoptic_transforms(
        [{"name": "hflip"}, {"name": "scale", "sizes": [40, 64]}, {"name": "crop", "size": 40}]
    )
    dataset = TransformedPanoptic(source, transform)
    assert len(dataset) == 3
    assert dataset.categories == source.categories and dataset.classes == source.classes
    assert dataset.thing_category_ids == [1, 2, 3] and dataset.stuff_category_ids == [4, 5]
    assert dataset.stuff_classes == ["stripes", "blotches"]
    for i in range(3):
        transform.set_seed(i)
        out = dataset[i]
        assert out["image"].shape == (3, 40, 40)
        check_panoptic_sample(out, [1, 2, 3], [4, 5])
    plain = TransformedPanoptic(source, None)[1]
    torch.testing.assert_close(plain["panoptic"], source[1]["panoptic"])
