"""Instance augmentation: image, boxes and masks stay aligned; dropped instances leave in step.

Alignment is checked on a painted sample: instance ``i`` (label ``i + 1``) is filled with its
own colour, so after any flip, scale or crop every mask pixel must still show its instance's
colour in the image and every pixel of that colour must lie in its mask. Pixels within two of
a region's edge are left out of both checks after resampling, and colours match within 0.05 (they differ by
0.5 or more): antialiased bilinear resampling blends colours near edges, and torch's nearest
resampling of masks may shift an edge by up to half a pixel. Flips, crops and padding move
whole pixels, so without a resize the check is exact (a one-pixel shift fails it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torchvision.transforms import v2

from pixelseg.data import (
    INSTANCE_TRANSFORM_NAMES,
    CocoInstances,
    InstanceTransform,
    PennFudan,
    SyntheticInstances,
    TransformedInstances,
    build_instance_transforms,
    fit_boxes_to_masks,
    write_coco,
)
from pixelseg.errors import DataError, InvalidInputError

COLOURS = torch.tensor(
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
)
BACKGROUND = torch.tensor([0.5, 0.5, 0.5])


def _painted_sample(height: int = 60, width: int = 80) -> dict:
    """Five disjoint non-rectangular instances, each painted in ``COLOURS[i]``; one sits in a
    corner so that crops often remove it, one is a crowd."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    shapes = [
        (xs - 20) ** 2 + (ys - 20) ** 2 <= 100,  # circle
        (xs - 55) ** 2 / 4 + (ys - 15) ** 2 <= 64,  # ellipse
        (ys >= 35) & (ys <= 55) & (xs >= 15) & (xs - 15 <= ys - 35),  # right triangle
        (xs - 55).abs() + (ys - 45).abs() <= 10,  # diamond
        (xs <= 4) & (ys >= height - 4),  # small square in the bottom-left corner
    ]
    masks = torch.stack(shapes).to(torch.uint8)
    image = BACKGROUND[:, None, None].expand(3, height, width).clone()
    for mask, colour in zip(masks, COLOURS, strict=True):
        image[:, mask.bool()] = colour[:, None]
    boxes = fit_boxes_to_masks({"masks": masks})["boxes"]
    return {
        "image": image,
        "boxes": boxes,
        "labels": torch.arange(1, 6, dtype=torch.int64),
        "masks": masks,
        "iscrowd": torch.tensor([0, 0, 0, 1, 0]),
        "area": masks.flatten(1).sum(1).to(torch.float64),
        "image_id": 7,
        "name": "painted",
        "image_path": "",
    }


def _tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Reference tight boxes (x2 = last column + 1), computed independently with numpy."""
    out = []
    for mask in masks.numpy():
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        out.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def _erode(region: np.ndarray, margin: int) -> np.ndarray:
    if margin == 0:
        return region
    return ndimage.binary_erosion(region, iterations=margin, border_value=0)


def _check_aligned(out: dict, margin: int = 2) -> None:
    """Boxes tight, areas counted, and colours where the masks are, ``margin`` pixels in."""
    image, masks, labels = out["image"], out["masks"], out["labels"]
    assert masks.shape[1:] == image.shape[1:]
    assert len(out["boxes"]) == len(labels) == len(masks) == len(out["iscrowd"])
    assert len(out["area"]) == len(labels)
    assert masks.flatten(1).any(1).all(), "empty masks must be dropped"
    torch.testing.assert_close(out["boxes"], _tight_boxes(masks), rtol=0, atol=0)
    torch.testing.assert_close(out["area"], masks.flatten(1).sum(1).to(torch.float64))
    pixels = image.permute(1, 2, 0)
    for label in range(1, 6):
        colour = COLOURS[label - 1]
        painted = ((pixels - colour).abs().max(dim=2).values < 0.05).numpy()
        kept = (labels == label).nonzero().flatten()
        if len(kept) == 0:
            # A dropped instance leaves no solid patch of its colour behind.
            assert not _erode(painted, margin).any(), f"label {label} dropped but still visible"
            continue
        mask = masks[int(kept[0])].numpy().astype(bool)
        assert not (_erode(mask, margin) & ~painted).any(), f"mask {label} covers other colours"
        assert not (_erode(painted, margin) & ~mask).any(), f"colour {label} outside its mask"
        assert out["iscrowd"][int(kept[0])] == (1 if label == 4 else 0)


GEOMETRIC = [
    {"name": "hflip", "p": 0.5},
    {"name": "vflip", "p": 0.5},
    {"name": "scale", "sizes": [40, 60, 90], "max_size": 140},
    {"name": "crop", "size": [48, 56]},
]


def test_random_flips_scales_crops_keep_image_boxes_masks_aligned() -> None:
    transform = build_instance_transforms(GEOMETRIC)
    sample = _painted_sample()
    dropped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out = transform(sample)
        assert out["image"].shape == (3, 48, 56)
        _check_aligned(out)
        dropped += 5 - len(out["labels"])
    assert dropped > 0, "the crops never removed an instance: the drop path went untested"


def test_flips_crops_and_padding_keep_alignment_to_the_pixel() -> None:
    transform = build_instance_transforms(
        [
            {"name": "hflip"},
            {"name": "vflip"},
            {"name": "zoom_out", "max_scale": 1.5},
            {"name": "crop", "size": [50, 70]},
        ]
    )
    for seed in range(20):
        torch.manual_seed(seed)
        _check_aligned(transform(_painted_sample()), margin=0)


@pytest.mark.parametrize(
    "spec",
    [
        [
            {"name": "scale_jitter", "size": [64, 64], "scale": [0.5, 1.5]},
            {"name": "crop", "size": 64},
        ],
        [
            {"name": "zoom_out", "max_scale": 2.0, "p": 1.0, "fill": 0.0},
            {"name": "resize", "size": 50},
        ],
        [{"name": "resize", "size": [30, 100]}],
    ],
)
def test_other_geometric_ops_keep_alignment(spec: list[dict]) -> None:
    transform = build_instance_transforms(spec)
    for seed in range(10):
        torch.manual_seed(seed)
        _check_aligned(transform(_painted_sample()))


def test_crop_drops_instances_with_every_per_instance_key() -> None:
    sample = _painted_sample()
    sample["area"] = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0], dtype=torch.float64)
    # The top-right 30x40 corner keeps only the ellipse (label 2), cut at x = 40.
    crop = InstanceTransform([v2.Lambda(lambda x: v2.functional.crop(x, 0, 40, 30, 40))])
    out = crop(sample)
    assert out["labels"].tolist() == [2]
    assert out["iscrowd"].tolist() == [0]
    ellipse = sample["masks"][1, 0:30, 40:80]
    torch.testing.assert_close(out["masks"][0], ellipse)
    assert out["area"].tolist() == [float(ellipse.sum())]
    assert out["boxes"].tolist() == _tight_boxes(ellipse[None]).tolist()


def test_boxes_are_tight_around_a_cut_triangle_not_the_clipped_box() -> None:
    masks = torch.zeros(1, 20, 20, dtype=torch.uint8)
    ys, xs = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    masks[0] = (xs <= ys).to(torch.uint8)  # lower-left triangle, box [0, 0, 20, 20]
    sample = {
        "image": torch.rand(3, 20, 20),
        "boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]),
        "labels": torch.tensor([1]),
        "masks": masks,
        "iscrowd": torch.tensor([0]),
        "area": torch.tensor([210.0], dtype=torch.float64),
    }
    # Keep rows 0..7: what is left of the triangle spans columns 0..7 only, while v2's
    # clipped box still spans all 20 columns.
    crop = InstanceTransform([v2.Lambda(lambda x: v2.functional.crop(x, 0, 0, 8, 20))])
    out = crop(sample)
    assert out["boxes"].tolist() == [[0.0, 0.0, 8.0, 8.0]]
    assert out["area"].tolist() == [36.0]


def test_area_follows_the_scale_for_crowds_too() -> None:
    transform = build_instance_transforms([{"name": "resize", "size": [120, 160]}])
    out = transform(_painted_sample())
    torch.testing.assert_close(out["area"], out["masks"].flatten(1).sum(1).to(torch.float64))
    before = _painted_sample()["area"]
    assert (out["area"] / before).sub(4.0).abs().max() < 0.5  # twice the side: 4x the area


def test_colour_alone_leaves_boxes_masks_and_area() -> None:
    sample = _painted_sample()
    sample["area"] = torch.tensor([1.5, 2.5, 3.5, 4.5, 5.5], dtype=torch.float64)  # polygon areas
    transform = build_instance_transforms(
        [{"name": "color", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.05}]
    )
    torch.manual_seed(0)
    out = transform(sample)
    for key in ("boxes", "masks", "labels", "area", "iscrowd"):
        torch.testing.assert_close(out[key], sample[key])
    assert not torch.equal(out["image"], sample["image"])
    assert out["image"].min() >= 0 and out["image"].max() <= 1


ALL_OPS = [
    *GEOMETRIC,
    {"name": "scale_jitter", "size": [64, 64]},
    {"name": "zoom_out", "p": 0.5},
    {"name": "resize", "size": 64, "max_size": 100},
    {"name": "color", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02},
]


def test_every_name_is_covered_here() -> None:
    assert {spec["name"] for spec in ALL_OPS} == set(INSTANCE_TRANSFORM_NAMES)


def test_empty_targets_pass_through() -> None:
    sample = {
        "image": torch.rand(3, 30, 40),
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 30, 40, dtype=torch.uint8),
        "iscrowd": torch.zeros(0, dtype=torch.int64),
        "area": torch.zeros(0, dtype=torch.float64),
    }
    torch.manual_seed(0)
    out = build_instance_transforms(ALL_OPS)(sample)
    assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == torch.float32
    assert out["masks"].shape == (0, *out["image"].shape[1:])
    assert out["labels"].shape == out["iscrowd"].shape == out["area"].shape == (0,)


def test_seeded_calls_repeat_and_outputs_are_plain_tensors() -> None:
    transform = build_instance_transforms(ALL_OPS)
    sample = SyntheticInstances(1, size=64, seed=2)[0]
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(transform(sample))
    first, again, other = outputs
    for key in ("image", "boxes", "labels", "masks", "iscrowd", "area"):
        assert type(first[key]) is torch.Tensor, key
        assert first[key].dtype == sample[key].dtype, key
        torch.testing.assert_close(first[key], again[key], rtol=0, atol=0)
    assert first["image"].shape != other["image"].shape or not torch.equal(
        first["image"], other["image"]
    )
    assert first["name"] == sample["name"] and first["image_id"] == sample["image_id"]


def test_empty_spec_is_none_and_the_wrapper_passes_samples_through() -> None:
    assert build_instance_transforms([]) is None and build_instance_transforms(None) is None
    source = SyntheticInstances(2, size=32)
    wrapped = TransformedInstances(source, None)
    assert len(wrapped) == 2 and wrapped.classes == source.classes
    torch.testing.assert_close(wrapped[1]["masks"], source[1]["masks"])


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "hflp"}, r"'hflp'.*Did you mean 'hflip'.*color, crop, hflip"),
        ({"name": "crop", "sise": 32}, r"unknown option 'sise'.*Did you mean 'size'.*size, fill"),
        ({"name": "crop"}, r"\('crop'\): missing option\(s\) size"),
        ({"name": "scale", "sizes": [0, 10]}, r"positive shorter-side"),
        ({"name": "hflip", "p": 2}, r"probability"),
        ({"name": "color", "hue": 0.9}, r"\('color'\).*hue"),
        ({"name": "scale_jitter", "size": 64, "scale": [2, 1]}, r"low <= high"),
        ("hflip", r"mapping with a 'name'"),
    ],
)
def test_bad_specs_name_the_entry_and_the_valid_choices(spec: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        build_instance_transforms([{"name": "vflip"}, spec])


def test_mismatched_sample_is_a_data_error_naming_it() -> None:
    sample = _painted_sample()
    sample["masks"] = sample["masks"][:, :50]
    with pytest.raises(DataError, match="'painted'"):
        build_instance_transforms([{"name": "hflip"}])(sample)


def test_wraps_synthetic_and_coco_sources(tmp_path) -> None:
    source = SyntheticInstances(4, size=64, seed=1)
    write_coco(source, tmp_path, source.categories)
    coco = CocoInstances(tmp_path / "images", tmp_path / "instances.json")
    transform = build_instance_transforms([*GEOMETRIC[:2], {"name": "crop", "size": 40}])
    for dataset in (source, coco):
        wrapped = TransformedInstances(dataset, transform)
        assert wrapped.classes == ["circle", "square", "triangle"]
        for i in range(len(wrapped)):
            out = wrapped[i]
            assert out["image"].shape == (3, 40, 40)
            torch.testing.assert_close(out["boxes"], _tight_boxes(out["masks"]), rtol=0, atol=0)


@pytest.mark.realdata
def test_wraps_real_pennfudan(shared_dir) -> None:
    dataset = PennFudan(shared_dir("pennfudan"), split="val")
    transform = build_instance_transforms(
        [{"name": "hflip"}, {"name": "scale", "sizes": [200, 240]}, {"name": "crop", "size": 192}]
    )
    wrapped = TransformedInstances(dataset, transform)
    for i in range(3):
        torch.manual_seed(i)
        out = wrapped[i]
        assert out["image"].shape == (3, 192, 192)
        assert out["masks"].flatten(1).any(1).all()
        torch.testing.assert_close(out["boxes"], _tight_boxes(out["masks"]), rtol=0, atol=0)
        assert (out["labels"] == 1).all()


def test_set_seed_reproduces_a_draw_and_leaves_the_global_stream_alone():
    from pixelseg.data import SyntheticInstances
    from pixelseg.data.instance_transforms import build_instance_transforms

    transform = build_instance_transforms(
        [{"name": "hflip", "p": 0.5}, {"name": "scale_jitter", "size": [64, 64], "scale": [0.5, 1.5]},
         {"name": "crop", "size": [64, 64]}]
    )  # fmt: skip
    sample = SyntheticInstances(1, size=64, seed=3)[0]
    transform.set_seed(123)
    torch.manual_seed(0)
    first = transform(sample)
    after_first = torch.rand(1)
    transform.set_seed(123)
    torch.manual_seed(0)
    second = transform(sample)
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["masks"], second["masks"])
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after_first)  # the global generator did not move
