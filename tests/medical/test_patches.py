"""The patch sampler: foreground oversampling, border padding, seeding, the torch dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelseg.engine.sampling import SeededDataset
from pixelseg.errors import InvalidInputError, NonFiniteError
from pixelseg.medical.patches import (
    PatchDataset,
    PatchSampler,
    class_locations,
    model_to_volume,
    volume_to_model,
)


def _padded_reference(array: np.ndarray, first, size, fill) -> np.ndarray:
    """The patch by brute force: pad by a whole patch on every side, then slice."""
    pad = [(0, 0)] * (array.ndim - 3) + [(p, p) for p in size]
    padded = np.pad(array, pad, constant_values=fill)
    box = tuple(slice(f + p, f + 2 * p) for f, p in zip(first, size, strict=True))
    return padded[(..., *box)]


def test_axis_order_volume_to_model_and_back() -> None:
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # [I, J, K]
    model = volume_to_model(volume)
    assert model.shape == (4, 3, 2) and model.flags.c_contiguous
    assert model[3, 2, 1] == volume[1, 2, 3]  # [D, H, W] = [k, j, i]
    np.testing.assert_array_equal(model_to_volume(model), volume)
    channels = torch.arange(2 * 2 * 3 * 4).reshape(2, 2, 3, 4)
    assert volume_to_model(channels).shape == (2, 4, 3, 2)
    assert torch.equal(model_to_volume(volume_to_model(channels)), channels)
    with pytest.raises(InvalidInputError, match="at least 3 axes"):
        volume_to_model(np.zeros((3, 3)))


def test_class_locations_by_hand() -> None:
    label = np.zeros((2, 3, 4), dtype=np.uint8)
    label[0, 1, 2] = 2
    label[1, 2, 3] = 1
    label[0, 0, 1] = 2
    found = class_locations(label)
    assert sorted(found) == [1, 2]
    np.testing.assert_array_equal(found[1], [23])
    np.testing.assert_array_equal(found[2], [1, 6])
    assert class_locations(np.zeros((3, 3, 3), dtype=np.int64)) == {}
    big = np.ones((10, 10, 10), dtype=np.int64)
    capped = class_locations(big, max_per_class=11)[1]
    assert len(capped) == 11 and capped[0] == 0 and capped[-1] == 999


def _draws(sampler: PatchSampler, shape, locations, count: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sampler.start(shape, rng, locations) for _ in range(count)]


def _contains(first, size, voxel) -> bool:
    return all(f <= v < f + p for f, p, v in zip(first, size, voxel, strict=True))


def test_foreground_fraction_is_respected_statistically() -> None:
    shape, size = (64, 64, 64), (16, 16, 16)
    label = np.zeros(shape, dtype=np.uint8)
    label[40, 10, 50] = 1  # one foreground voxel
    locations = class_locations(label)
    half = _draws(PatchSampler(size, 0.5), shape, locations)
    forced = sum(fg for _, fg in half)
    hit = sum(_contains(first, size, (40, 10, 50)) for first, _ in half)
    assert 450 <= forced <= 550  # Binomial(1000, 0.5): +-3.2 sd
    assert all(_contains(first, size, (40, 10, 50)) for first, fg in half if fg)
    assert forced <= hit <= forced + 25  # uniform patches rarely catch one voxel
    none = _draws(PatchSampler(size, 0.0), shape, locations)
    assert sum(_contains(first, size, (40, 10, 50)) for first, _ in none) < 25
    every = _draws(PatchSampler(size, 1.0), shape, locations)
    assert all(fg and _contains(first, size, (40, 10, 50)) for first, fg in every)
    # the voxel lies in the patch's central half, at varying places
    offsets = {tuple(v - f for v, f in zip((40, 10, 50), first, strict=True)) for first, _ in every}
    assert len(offsets) > 50
    assert all(4 <= o <= 12 for offset in offsets for o in offset)
    # no foreground in the case: every draw is uniform
    assert not any(fg for _, fg in _draws(PatchSampler(size, 1.0), shape, {}, count=50))


def test_foreground_classes_are_chosen_uniformly() -> None:
    shape, size = (40, 40, 40), (8, 8, 8)
    label = np.zeros(shape, dtype=np.int64)
    label[:20, :20, :20] = 1  # 8000 voxels
    label[35, 35, 35] = 2  # 1 voxel
    draws = _draws(PatchSampler(size, 1.0), shape, class_locations(label), count=600)
    rare = sum(_contains(first, size, (35, 35, 35)) for first, _ in draws)
    assert 240 <= rare <= 360


def test_uniform_centres_cover_the_volume_and_hang_over_at_most_half_a_patch() -> None:
    shape, size = (20, 9, 30), (8, 16, 7)
    firsts = np.array([f for f, _ in _draws(PatchSampler(size, 0.0), shape, {}, count=2000)])
    centres = firsts + np.array(size) // 2
    np.testing.assert_array_equal(centres.min(axis=0), [0, 0, 0])
    np.testing.assert_array_equal(centres.max(axis=0), np.array(shape) - 1)


def test_border_patches_are_padded_with_the_pad_values() -> None:
    shape, size = (10, 12, 9), (8, 6, 10)
    image = np.arange(2 * np.prod(shape), dtype=np.float32).reshape(2, *shape) + 1
    label = np.zeros(shape, dtype=np.uint8)
    label[0, 0, 0] = 3  # a corner: foreground patches hang over three borders
    label[9, 11, 8] = 1
    sampler = PatchSampler(size, 0.7, pad_image=-5.0, pad_label=7)
    locations = class_locations(label)
    seen_padding = 0
    for seed in range(60):
        first, _ = sampler.start(shape, np.random.default_rng(seed), locations)
        patch, patch_label = sampler.sample(image, label, np.random.default_rng(seed), locations)
        assert patch.shape == (2, *size) and patch.dtype == np.float32
        assert patch_label.shape == size and patch_label.dtype == np.uint8
        np.testing.assert_array_equal(patch, _padded_reference(image, first, size, -5.0))
        np.testing.assert_array_equal(patch_label, _padded_reference(label, first, size, 7))
        seen_padding += int((patch_label == 7).any())
    assert seen_padding > 30
    # patches are copies: changing one leaves the case alone
    patch[...] = 0
    assert image.min() == 1


def test_volumes_smaller_than_the_patch_are_padded_whole() -> None:
    shape, size = (5, 6, 3), (16, 16, 16)
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    label = np.ones(shape, dtype=np.int64)
    sampler = PatchSampler(size, 0.5, pad_image=0.0, pad_label=0)
    for seed in range(20):
        patch, patch_label = sampler.sample(image, label, np.random.default_rng(seed))
        assert patch.shape == (1, 16, 16, 16) and patch_label.shape == (16, 16, 16)
        assert patch_label.sum() == label.sum()  # the whole volume is inside
        np.testing.assert_allclose(np.sort(patch[0][patch_label == 1]), np.sort(image.ravel()))
        assert (patch[0][patch_label == 0] == 0).all()


def test_torch_inputs_give_torch_patches() -> None:
    image = torch.randn(2, 12, 10, 8)
    label = torch.zeros(12, 10, 8, dtype=torch.int64)
    label[3, 4, 5] = 1
    patch, patch_label = PatchSampler((4, 4, 4), 1.0).sample(image, label, np.random.default_rng(1))
    assert isinstance(patch, torch.Tensor) and patch.shape == (2, 4, 4, 4)
    assert patch_label.dtype == torch.int64 and patch_label.sum() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (((16, 16), 0.3), r"patch_size must be 3 integers >= 1 \(D, H, W\), got \(16, 16\)"),
        (((16, 0, 16), 0.3), r"got \(16, 0, 16\)"),
        (((16, 8.5, 16), 0.3), "8.5"),
        (((16, 16, 16), 1.5), "foreground_fraction must be in \\[0, 1\\], got 1.5"),
        (((16, 16, 16), -0.1), "got -0.1"),
        (((16, 16, 16), float("nan")), "got nan"),
    ],
)
def test_bad_sampler_arguments_name_the_value(args: tuple, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        PatchSampler(*args)


def test_image_label_shape_mismatch_is_refused() -> None:
    sampler = PatchSampler((4, 4, 4))
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match=r"\(1, 8, 8, 8\) and \(8, 8, 7\)"):
        sampler.sample(np.zeros((1, 8, 8, 8)), np.zeros((8, 8, 7), dtype=np.int64), rng)
    with pytest.raises(InvalidInputError, match=r"\(8, 8, 8\) and \(8, 8, 8\)"):
        sampler.sample(np.zeros((8, 8, 8)), np.zeros((8, 8, 8), dtype=np.int64), rng)


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    cases = []
    for n in range(3):
        image = rng.normal(size=(1, 12, 14, 16)).astype(np.float32)
        label = np.zeros((12, 14, 16), dtype=np.uint8)
        label[2 + n, 3:5, 4:6] = 1
        cases.append((image, label))
    return cases


class NoiseAugment:
    """A seeded augmentation: adds noise from its own generator."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng()

    def set_seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple:
        return image + float(self.rng.normal()), mask


def test_patch_dataset_samples_shapes_and_names() -> None:
    dataset = PatchDataset(_cases(), (8, 8, 8), samples_per_epoch=7, names=["a", "b", "c"])
    assert len(dataset) == 7
    sample = dataset[4]
    assert sample["image"].shape == (1, 8, 8, 8) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (8, 8, 8) and sample["mask"].dtype == torch.int64
    assert sample["name"] == "b_4"  # case 4 % 3
    assert [dataset[i]["name"] for i in range(7)] == [
        "a_0",
        "b_1",
        "c_2",
        "a_3",
        "b_4",
        "c_5",
        "a_6",
    ]
    with pytest.raises(IndexError):
        dataset[7]
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 1, 8, 8, 8) and batch["mask"].shape == (4, 8, 8, 8)


def test_set_seed_makes_patch_and_augmentation_exact() -> None:
    dataset = PatchDataset(_cases(), (6, 6, 6), 30, 0.5, transform=NoiseAugment())
    draws = []
    for _ in range(2):
        dataset.transform.set_seed(1234)
        draws.append(dataset[5])
    assert torch.equal(draws[0]["image"], draws[1]["image"])
    assert torch.equal(draws[0]["mask"], draws[1]["mask"])
    dataset.transform.set_seed(1235)
    assert not torch.equal(dataset[5]["image"], draws[0]["image"])
    # the trainer's mechanism: SeededDataset seeds every (index, epoch) draw
    seeded = SeededDataset(dataset, seed=9)
    first = [seeded[(i, 2)]["image"] for i in range(10)]
    again = [seeded[(i, 2)]["image"] for i in reversed(range(10))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(seeded[(3, 3)]["image"], first[3])
    # unseeded draws take fresh entropy
    dataset.transform.set_seed(None)
    assert not torch.equal(dataset[0]["image"], dataset[0]["image"])


def test_patch_dataset_bad_inputs_name_the_case() -> None:
    image, label = _cases()[0]
    with pytest.raises(
        InvalidInputError, match=r"case case_000: .*\(1, 12, 14, 16\) and \(12, 14\)"
    ):
        PatchDataset([(image, label[:, :, 0])], (4, 4, 4), 1)
    with pytest.raises(InvalidInputError, match="case x: label must be integer, got float32"):
        PatchDataset([(image, label.astype(np.float32))], (4, 4, 4), 1, names=["x"])
    bad = image.copy()
    bad[0, 1, 1, 1] = np.inf
    with pytest.raises(NonFiniteError, match="case case_000: image holds NaN"):
        PatchDataset([(bad, label)], (4, 4, 4), 1)
    with pytest.raises(InvalidInputError, match="samples_per_epoch must be >= 1, got 0"):
        PatchDataset([(image, label)], (4, 4, 4), 0)
    with pytest.raises(InvalidInputError, match="distinct"):
        PatchDataset([(image, label)] * 2, (4, 4, 4), 1, names=["a", "a"])
    with pytest.raises(InvalidInputError, match="at least one case"):
        PatchDataset([], (4, 4, 4), 1)
    with pytest.raises(InvalidInputError, match="foreground_fraction"):
        PatchDataset([(image, label)], (4, 4, 4), 1, foreground_fraction=2.0)


def test_msd_phantoms_to_patches_glue(tmp_path) -> None:
    from pixelseg.medical.datasets import MSDDataset
    from pixelseg.medical.phantom_dataset import make_phantom_dataset
    from pixelseg.medical.preprocess import window

    options = {"shape": (32, 32, 16), "spacing": (4.5, 4.5, 8.0), "nodule_mm": (10.0, 16.0)}
    dataset = MSDDataset(make_phantom_dataset(tmp_path / "msd", 2, seed=3, **options))
    cases = [
        (
            volume_to_model(window(case.image.array, "lung"))[None],
            volume_to_model(case.label.array),
        )
        for case in dataset
    ]
    assert cases[0][0].shape == (1, 16, 32, 32) and cases[0][1].shape == (16, 32, 32)
    patches = PatchDataset(cases, (8, 16, 16), 8, foreground_fraction=1.0, names=dataset.names)
    patches.transform.set_seed(0)
    batch = next(iter(torch.utils.data.DataLoader(patches, batch_size=8)))
    assert batch["image"].shape == (8, 1, 8, 16, 16) and batch["name"][1] == "lung_002_1"
    assert all((mask == 1).any() for mask in batch["mask"])  # every patch holds a nodule
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
