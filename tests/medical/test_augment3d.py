"""3D augmentation: image and label move together, labels stay labels, seeding, spec errors."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pixelseg.engine.sampling import SeededDataset
from pixelseg.errors import DataError, InvalidInputError
from pixelseg.medical.augment3d import AUGMENT3D_NAMES, Augment3D, build_augment3d

GEOMETRIC = [
    {"name": "rotate", "angle": 30, "p": 1.0},
    {"name": "scale", "range": [0.8, 1.25], "p": 1.0},
    {"name": "elastic", "alpha": [2, 4], "sigma": [4, 6], "p": 1.0},
    {"name": "flip", "p": 0.5},
]
ALL_OPS = [{"name": name, "p": 1.0} for name in AUGMENT3D_NAMES]


def _phantom(size: int = 24) -> torch.Tensor:
    """Labels 0 (background, also along the border), 1 (a ball) and 2 (a box)."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    label = torch.zeros(size, size, size, dtype=torch.int64)
    label[(grid - torch.tensor([9.0, 10.0, 11.0]).view(3, 1, 1, 1)).norm(dim=0) < 6] = 1
    label[14:20, 5:12, 13:21] = 2
    return label


def _coordinates(shape: tuple[int, int, int]) -> torch.Tensor:
    """``[3, D, H, W]``: each voxel's own (d, h, w) index, a ramp trilinear sampling keeps."""
    return torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij")).float()


@pytest.mark.parametrize("seed", range(4))
def test_label_follows_the_image_through_every_geometric_op(seed: int) -> None:
    # The image is the label's one-hot encoding. Nearest neighbour reads the corner of
    # largest trilinear weight (>= 1/8), so where one channel is above 0.9 (< 1/8 left for
    # the others) the moved label must be that channel's class.
    label = _phantom()
    image = torch.nn.functional.one_hot(label, 3).permute(3, 0, 1, 2).float()
    augment = Augment3D(GEOMETRIC)
    augment.set_seed(seed)
    out_image, out_label = augment(image, label)
    assert not torch.equal(out_label, label)
    top, cls = out_image.max(dim=0)
    sure = top > 0.9
    assert sure.float().mean() > 0.85
    assert torch.equal(cls[sure], out_label[sure])
    for k in (1, 2):  # each object is still there, about where its image went
        assert (out_label == k).sum() > 0.5 * (label == k).sum()
        label_centroid = (_coordinates(label.shape) * (out_label == k)).sum((1, 2, 3))
        label_centroid = label_centroid / (out_label == k).sum()
        image_centroid = (_coordinates(label.shape) * out_image[k]).sum((1, 2, 3))
        image_centroid = image_centroid / out_image[k].sum()
        assert torch.allclose(label_centroid, image_centroid, atol=0.5)


def test_labels_keep_their_values_and_out_of_volume_gets_label_fill() -> None:
    label = _phantom() * 3 + (_phantom() == 2).long()  # values 0, 3, 7
    image = label[None].float()
    augment = Augment3D([{"name": "rotate", "angle": 45, "axes": [0], "p": 1.0}], label_fill=255)
    seen: set[int] = set()
    for seed in range(3):
        augment.set_seed(seed)
        _, out = augment(image, label)
        seen |= set(out.unique().tolist())
    assert seen == {0, 3, 7, 255}


def test_image_fill_number_and_border() -> None:
    image = torch.ones(1, 8, 8, 8)
    rotate = {"name": "rotate", "angle": [[0, 0], [0, 0], [45, 45]], "p": 1.0}
    filled, _ = Augment3D([rotate], image_fill=-3.0)(image, None)
    assert filled.min() == -3.0 and filled.max() == pytest.approx(1.0)
    border, _ = Augment3D([rotate])(image, None)
    torch.testing.assert_close(border, image)


def test_identity_when_every_p_is_zero() -> None:
    label = _phantom(16)
    image = torch.randn(2, 16, 16, 16)
    augment = Augment3D([{"name": name, "p": 0.0} for name in AUGMENT3D_NAMES])
    out_image, out_label = augment(image, label)
    assert torch.equal(out_image, image) and torch.equal(out_label, label)


@pytest.mark.parametrize(("axis", "dims"), [(0, (1, 2)), (1, (0, 2)), (2, (0, 1))])
def test_rotation_by_90_degrees_is_rot90(axis: int, dims: tuple[int, int]) -> None:
    # A positive angle about ``axis`` turns its plane from the later axis to the earlier one.
    angle = [[0, 0]] * 3
    angle[axis] = [90, 90]
    label = torch.randint(0, 5, (6, 6, 6))
    image = torch.randn(2, 6, 6, 6)
    out_image, out_label = Augment3D([{"name": "rotate", "angle": angle, "p": 1.0}])(image, label)
    torch.testing.assert_close(out_image, torch.rot90(image, -1, [d + 1 for d in dims]))
    assert torch.equal(out_label, torch.rot90(label, -1, dims))


def test_scale_zooms_about_the_centre() -> None:
    shape = (9, 11, 13)
    coords = _coordinates(shape)
    augment = Augment3D([{"name": "scale", "range": [2.0, 2.0], "p": 1.0}])
    out, _ = augment(coords, None)
    centre = torch.tensor([4.0, 5.0, 6.0]).view(3, 1, 1, 1)
    torch.testing.assert_close(out, centre + (coords - centre) / 2)
    same, _ = Augment3D([{"name": "scale", "range": [1, 1], "p": 1.0}])(coords, None)
    torch.testing.assert_close(same, coords)


def test_elastic_displacement_is_smooth_and_bounded_by_alpha() -> None:
    shape = (24, 24, 24)
    coords = _coordinates(shape)
    augment = Augment3D([{"name": "elastic", "alpha": 3.0, "sigma": 6.0, "p": 1.0}], seed=1)
    out, _ = augment(coords, None)
    displacement = (out - coords)[:, 4:-4, 4:-4, 4:-4]  # away from the border clamp
    assert 1.0 < displacement.abs().max() <= 3.0 + 1e-4
    steps = [displacement.diff(dim=d).abs().max() for d in (1, 2, 3)]
    assert max(steps) < 1.0  # smooth: neighbours move alike


def test_flips_are_exact() -> None:
    label = torch.randint(0, 4, (5, 6, 7))
    image = torch.randn(2, 5, 6, 7)
    out_image, out_label = Augment3D([{"name": "flip", "axes": [0, 2], "p": 1.0}])(image, label)
    assert torch.equal(out_image, image.flip([1, 3])) and torch.equal(out_label, label.flip([0, 2]))


@pytest.mark.parametrize("name", ["noise", "gamma", "contrast", "brightness"])
def test_intensity_ops_change_the_image_only(name: str) -> None:
    label = _phantom(16)
    image = torch.randn(2, 16, 16, 16, dtype=torch.float64)
    out_image, out_label = Augment3D([{"name": name, "p": 1.0}], seed=3)(image, label)
    assert out_label is label
    assert out_image.shape == image.shape and out_image.dtype == torch.float64
    assert not torch.allclose(out_image, image)


def test_intensity_ops_by_their_definitions() -> None:
    image = torch.rand(2, 8, 8, 8) * torch.tensor([1.0, 5.0]).view(2, 1, 1, 1)
    dims = (1, 2, 3)
    gamma, _ = Augment3D([{"name": "gamma", "p": 1.0}], seed=0)(image, None)
    torch.testing.assert_close(gamma.mean(dims), image.mean(dims))
    torch.testing.assert_close(gamma.std(dims), image.std(dims))
    contrast, _ = Augment3D([{"name": "contrast", "range": [2, 2], "p": 1.0}])(image, None)
    assert torch.all(contrast.amin(dims) >= image.amin(dims))
    assert torch.all(contrast.amax(dims) <= image.amax(dims))
    brightness, _ = Augment3D([{"name": "brightness", "range": [0.5, 0.5], "p": 1.0}])(image, None)
    torch.testing.assert_close(brightness, image * 0.5)
    noise, _ = Augment3D([{"name": "noise", "std": 0.5, "p": 1.0}], seed=0)(image, None)
    assert float((noise - image).std()) == pytest.approx(0.5, rel=0.05)


def test_set_seed_makes_draws_reproducible_without_touching_global_generators() -> None:
    label = _phantom(16)
    image = torch.randn(1, 16, 16, 16)
    torch_state, numpy_state, python_state = (
        torch.random.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
    )
    augment = Augment3D(ALL_OPS)
    runs = []
    for seed in (7, 7, 8):
        augment.set_seed(seed)
        runs.append(augment(image, label))
    continued = augment(image, label)
    fresh = Augment3D(ALL_OPS, seed=8)(image, label)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert all(
        np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state, strict=True)
    )
    assert random.getstate() == python_state
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])
    assert not torch.equal(continued[0], runs[2][0])  # the stream goes on without set_seed
    assert torch.equal(fresh[0], runs[2][0])  # the construction seed is a set_seed


def test_each_op_draws_from_its_own_stream() -> None:
    image = torch.rand(1, 8, 8, 8) + 1
    brightness = {"name": "brightness", "p": 1.0}
    factors = []
    for flip_p in (0.0, 0.5, 1.0):
        out, _ = Augment3D([{"name": "flip", "p": flip_p}, brightness], seed=4)(image, None)
        factors.append(float(out.sum() / image.sum()))
    assert factors == pytest.approx([factors[0]] * 3)


def test_single_slice_and_dtypes() -> None:
    image = torch.randn(1, 1, 12, 10, dtype=torch.float64)
    label = torch.randint(0, 3, (1, 12, 10))
    augment = Augment3D([{"name": "rotate", "axes": [0], "p": 1.0}, {"name": "scale", "p": 1.0}])
    out_image, out_label = augment(image, label)
    assert out_image.shape == image.shape and out_image.dtype == torch.float64
    assert out_label.dtype == torch.int64 and set(out_label.unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [{"name": "flip"}, {"name": "rotat"}],
            r"augment3d\[1\]: .*'rotat'\. Did you mean 'rotate'",
        ),
        (
            [{"name": "rotate", "angel": 10}],
            r"augment3d\[0\] \('rotate'\): unknown option 'angel'\. Did you mean 'angle'",
        ),
        (
            [{"name": "flip"}, {"name": "noise"}, {"name": "flip", "p": 1.5}],
            r"augment3d\[2\] \('flip'\): p must be a probability in \[0, 1\], got 1\.5",
        ),
        ([{"name": "flip", "axes": [0, 3]}], r"augment3d\[0\] \('flip'\): axes .* got \[0, 3\]"),
        (
            [{"name": "scale", "range": [1.2, 0.9]}],
            r"\('scale'\): range must be \[low, high\] with low <= high, got \[1\.2, 0\.9\]",
        ),
        ([{"name": "elastic", "sigma": 0}], r"\('elastic'\): sigma must be > 0 voxels, got 0"),
        ([{"name": "gamma", "invert_p": 2}], r"\('gamma'\): invert_p must be a probability"),
        (
            [{"name": "rotate", "angle": [10, 20, 30, 40]}],
            r"\('rotate'\): angle must be degrees a .* got \[10, 20, 30, 40\]",
        ),
        (["flip"], r"augment3d\[0\] must be a mapping with a 'name' key, got 'flip'"),
        ({"name": "flip"}, "must be a list of specs"),
        ([{"name": "rotate", "angle": [20, 10]}], r"angle must be degrees .* got \[20, 10\]"),
        ([{"name": "scale", "per_axis": "yes"}], r"\('scale'\): per_axis must be true or false"),
    ],
)
def test_bad_specs_name_the_entry_and_option(specs: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Augment3D(specs)  # type: ignore[arg-type]


def test_bad_fills_and_inputs() -> None:
    with pytest.raises(InvalidInputError, match=r"image_fill .*got 'edge'"):
        Augment3D([{"name": "flip"}], image_fill="edge")
    with pytest.raises(InvalidInputError, match=r"label_fill must be an integer label, got 0\.5"):
        Augment3D([{"name": "flip"}], label_fill=0.5)  # type: ignore[arg-type]
    augment = Augment3D([{"name": "flip"}])
    with pytest.raises(
        DataError, match=r"image must be a float tensor \[C, D, H, W\], got \(8, 8, 8\)"
    ):
        augment(torch.zeros(8, 8, 8), None)
    with pytest.raises(
        DataError, match=r"label must be an int64 tensor .*\(8, 8, 8\).*torch.int32"
    ):
        augment(torch.zeros(1, 8, 8, 8), torch.zeros(8, 8, 8, dtype=torch.int32))


class _Constant(Dataset):
    """One flat volume per index, augmented by ``transform`` (as a volumetric dataset)."""

    def __init__(self, transform: Augment3D) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(torch.ones(1, 4, 4, 4), None)[0].mean()


def test_dataloader_workers_draw_different_samples_without_set_seed() -> None:
    dataset = _Constant(Augment3D([{"name": "brightness", "p": 1.0}], seed=0))
    loader = DataLoader(
        dataset,
        batch_size=1,
        num_workers=2,
        multiprocessing_context="fork",
        generator=torch.Generator().manual_seed(0),
    )
    values = [float(v) for v in loader]
    assert len(set(values)) == 4  # workers 0 and 1 do not repeat each other's draws


def test_seeded_dataset_gives_the_same_draws_with_any_worker_count() -> None:
    # The trainer's contract: set_seed(sample_seed(seed, epoch, index)) before each draw.
    dataset = SeededDataset(_Constant(Augment3D([{"name": "brightness", "p": 1.0}])), seed=3)
    keys = [(index, 1) for index in range(4)]
    alone = [float(dataset[key]) for key in keys]
    loader = DataLoader(
        dataset, sampler=keys, batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    assert [float(v) for v in loader] == alone
    assert len(set(alone)) == 4


def test_bad_seed_is_named() -> None:
    with pytest.raises(InvalidInputError, match="seed must be an integer >= 0 or None, got -1"):
        Augment3D([{"name": "flip"}], seed=-1)


def test_build_returns_none_for_no_specs() -> None:
    assert build_augment3d([]) is None and build_augment3d(None) is None
    assert isinstance(build_augment3d([{"name": "flip"}], label_fill=255), Augment3D)


def test_speed_of_one_64_cube_with_every_op() -> None:
    image, label = torch.randn(1, 64, 64, 64), torch.randint(0, 3, (64, 64, 64))
    augment = Augment3D(ALL_OPS, seed=0)
    augment(image, label)
    start = time.perf_counter()
    augment(image, label)
    print(f"Augment3D, every op, one 64^3 sample: {time.perf_counter() - start:.3f} s")
