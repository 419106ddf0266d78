"""ConfusionMatrix against sklearn, torchmetrics and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torchmetrics.classification import MulticlassJaccardIndex

from pixelseg.errors import InvalidInputError
from pixelseg.metrics import ConfusionMatrix, confusion_scores
from pixelseg.metrics import counting as counting_module


def random_pair(
    seed: int, shape: tuple[int, ...], num_classes: int, ignore: int | None, frac: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=gen)
    pred = torch.where(
        torch.rand(shape, generator=gen) < 0.4,
        torch.randint(0, num_classes, shape, generator=gen),
        target,
    )
    if ignore is not None:
        target[torch.rand(shape, generator=gen) < frac] = ignore
    return pred, target


def sklearn_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore
) -> np.ndarray:
    keep = torch.ones_like(target, dtype=torch.bool) if ignore is None else target != ignore
    return sk_confusion_matrix(
        target[keep].numpy(), pred[keep].numpy(), labels=list(range(num_classes))
    )


@pytest.mark.parametrize("ignore", [None, 255, -1, -100, 65535, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_matrix_equals_sklearn(seed: int, ignore: int | None) -> None:
    pred, target = random_pair(seed, (3, 23, 17), 7, ignore)
    cm = ConfusionMatrix(7, ignore_index=ignore)
    cm.update(pred, target)
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_array_equal(cm.matrix.numpy(), sklearn_matrix(pred, target, 7, ignore))


def test_hand_computed_tiny_case() -> None:
    # Kept (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,0); class 3 appears nowhere.
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pred, target)
    expected = [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert cm.matrix.tolist() == expected
    s = cm.compute()
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert s["mean_pixel_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert s["iou"][:3] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert math.isnan(s["iou"][3])
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["fwiou"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3 + 1 / 5 * 0)
    assert s["dice"][:3] == pytest.approx([2 / 4, 4 / 5, 0.0])
    assert math.isnan(s["dice"][3])
    assert s["mdice"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_empty_accumulator_scores_are_nan() -> None:
    s = ConfusionMatrix(3).compute()
    for key in ("pixel_accuracy", "mean_pixel_accuracy", "miou", "fwiou", "mdice"):
        assert math.isnan(s[key]), key
    assert all(math.isnan(v) for v in s["iou"] + s["dice"])


def test_per_class_and_macro_equal_torchmetrics() -> None:
    # Classes 6 and 7 never occur; class 5 is only predicted (IoU 0, counted in the mean).
    num_classes = 8
    pred, target = random_pair(3, (4, 31, 29), 5, 255)
    pred[0, 0, :5] = 5
    cm = ConfusionMatrix(num_classes, ignore_index=255)
    cm.update(pred, target)
    ours = cm.compute()
    per_class = MulticlassJaccardIndex(num_classes, average=None, ignore_index=255)(pred, target)
    macro = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=255)(pred, target)
    # torchmetrics reports 0 (zero_division) for the absent classes 6, 7 where we report NaN;
    # its macro average skips them as we do, so the means agree.
    assert ours["iou"][:6] == pytest.approx(per_class[:6].tolist(), abs=1e-6)
    assert ours["iou"][5] == 0.0
    assert all(math.isnan(v) for v in ours["iou"][6:])
    assert per_class[6:].tolist() == [0.0, 0.0]
    assert ours["miou"] == pytest.approx(float(macro), abs=1e-6)


def test_ignore_index_inside_class_range_matches_torchmetrics() -> None:
    # ignore_index=0 drops class 0's ground truth; torchmetrics leaves class 0 out of the
    # macro mean, and so do we (NaN), though predictions of 0 still count as misses.
    pred, target = random_pair(4, (2, 19, 21), 5, None)
    cm = ConfusionMatrix(5, ignore_index=0)
    cm.update(pred, target)
    assert cm.matrix[0].sum() == 0
    assert cm.matrix[:, 0].sum() > 0
    np.testing.assert_array_equal(cm.matrix.numpy(), sklearn_matrix(pred, target, 5, 0))
    per_class = MulticlassJaccardIndex(5, average=None, ignore_index=0)(pred, target)
    macro = MulticlassJaccardIndex(5, average="macro", ignore_index=0)(pred, target)
    s = cm.compute()
    assert math.isnan(s["iou"][0])
    assert s["iou"][1:] == pytest.approx(per_class[1:].tolist(), abs=1e-6)
    assert s["miou"] == pytest.approx(float(macro), abs=1e-6)


def test_ignored_pixels_change_nothing() -> None:
    pred, target = random_pair(5, (2, 40, 40), 6, 255, frac=0.3)
    a, b = ConfusionMatrix(6, 255), ConfusionMatrix(6, 255)
    a.update(pred, target)
    other = torch.randint(0, 6, pred.shape, generator=torch.Generator().manual_seed(9))
    changed = torch.where(target == 255, other, pred)
    assert not torch.equal(changed, pred)
    b.update(changed, target)
    assert torch.equal(a.matrix, b.matrix)


def test_streaming_and_merge_equal_one_shot() -> None:
    pred, target = random_pair(6, (6, 25, 30), 9, 255)
    one = ConfusionMatrix(9, 255)
    one.update(pred, target)
    streamed = ConfusionMatrix(9, 255)
    for i in range(0, 6, 2):
        streamed.update(pred[i : i + 2], target[i : i + 2])
    left, right = ConfusionMatrix(9, 255), ConfusionMatrix(9, 255)
    left.update(pred[:4], target[:4])
    right.update(pred[4:], target[4:])
    assert left.merge(right) is left
    assert torch.equal(streamed.matrix, one.matrix)
    assert torch.equal(left.matrix, one.matrix)
    assert streamed.compute() == one.compute()


def test_logits_equal_argmax_labels_2d_and_3d() -> None:
    gen = torch.Generator().manual_seed(7)
    for shape in [(2, 13, 11), (2, 5, 9, 7)]:
        logits = torch.randn(shape[0], 4, *shape[1:], generator=gen)
        target = torch.randint(0, 4, shape, generator=gen)
        a, b = ConfusionMatrix(4), ConfusionMatrix(4)
        a.update(logits, target)
        b.update(logits.argmax(dim=1), target)
        assert torch.equal(a.matrix, b.matrix)
        np.testing.assert_array_equal(
            a.matrix.numpy(), sklearn_matrix(logits.argmax(dim=1), target, 4, None)
        )


def test_3d_volume_equals_sklearn() -> None:
    pred, target = random_pair(8, (2, 9, 14, 12), 5, 255)
    cm = ConfusionMatrix(5, 255)
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix.numpy(), sklearn_matrix(pred, target, 5, 255))


@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.uint16, torch.uint32]
)
def test_narrow_label_dtypes_do_not_overflow(dtype: torch.dtype) -> None:
    # 255 * 21 overflows uint8/int16 keys if computed in the input dtype.
    pred, target = random_pair(10, (2, 20, 20), 21, 255 if dtype != torch.int8 else 127)
    ignore = int(target.max())
    a, b = ConfusionMatrix(21, ignore), ConfusionMatrix(21, ignore)
    a.update(pred, target)
    b.update(pred.to(dtype), target.to(dtype))
    assert torch.equal(a.matrix, b.matrix)


def test_bool_masks_count_as_two_classes() -> None:
    pred = torch.tensor([[True, False, True, True]])
    target = torch.tensor([[True, False, False, True]])
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 1], [0, 2]]


def test_chunked_counting_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    pred, target = random_pair(11, (3, 17, 19), 6, 255)
    a = ConfusionMatrix(6, 255)
    a.update(pred, target)
    monkeypatch.setattr(counting_module, "_CHUNK", 100)  # 969 pixels -> 10 chunks
    b = ConfusionMatrix(6, 255)
    b.update(pred, target)
    b.update(pred[:1], target[:1])  # smaller input reuses the buffer
    a.update(pred[:1], target[:1])
    assert torch.equal(a.matrix, b.matrix)


def test_non_contiguous_inputs() -> None:
    pred, target = random_pair(12, (2, 16, 18), 4, 255)
    a, b = ConfusionMatrix(4, 255), ConfusionMatrix(4, 255)
    a.update(pred.transpose(1, 2), target.transpose(1, 2))
    b.update(pred, target)
    assert torch.equal(a.matrix, b.matrix)


def test_reset_and_repr() -> None:
    pred, target = random_pair(13, (1, 8, 8), 3, None)
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert "pixels=64" in repr(cm)
    cm.reset()
    assert cm.matrix.sum() == 0


def test_matrix_property_is_a_copy() -> None:
    cm = ConfusionMatrix(2)
    cm.matrix[0, 0] = 5
    assert cm.matrix.sum() == 0


def test_all_reduce_is_noop_without_process_group() -> None:
    pred, target = random_pair(14, (1, 8, 8), 3, None)
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    before = cm.matrix
    cm.all_reduce()
    assert torch.equal(cm.matrix, before)


def test_confusion_scores_rejects_non_square() -> None:
    with pytest.raises(InvalidInputError, match=r"\[C, C\]"):
        confusion_scores(torch.zeros(2, 3))


# ---- bad input -------------------------------------------------------------------------


def assert_unchanged_after(cm: ConfusionMatrix, pred, target, match: str) -> None:
    before = cm.matrix
    with pytest.raises(InvalidInputError, match=match):
        cm.update(pred, target)
    assert torch.equal(cm.matrix, before)


@pytest.fixture
def filled() -> ConfusionMatrix:
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(*random_pair(15, (2, 6, 6), 4, 255))
    return cm


def test_shape_mismatch_names_both_shapes(filled: ConfusionMatrix) -> None:
    pred, target = torch.zeros(2, 6, 6, dtype=torch.long), torch.zeros(2, 6, 5, dtype=torch.long)
    assert_unchanged_after(filled, pred, target, r"\(2, 6, 6\).*\(2, 6, 5\)")


@pytest.mark.parametrize(
    ("bad_values", "shown"), [([4, 9], r"\[4, 9\]"), ([-1], r"\[-1\]"), ([254], r"\[254\]")]
)
def test_target_out_of_range_lists_values(filled, bad_values, shown) -> None:
    pred, target = random_pair(16, (2, 6, 6), 4, 255)
    target.view(-1)[: len(bad_values)] = torch.tensor(bad_values)
    assert_unchanged_after(filled, pred, target, rf"target .*\[0, 3\].*255.*{shown}")


def test_target_huge_values_raise_instead_of_overflowing(filled: ConfusionMatrix) -> None:
    # 2**62 * 4 wraps int64 to 0, which would silently count as class 0 without the bounds.
    pred, target = random_pair(17, (2, 6, 6), 4, None)
    target[0, 0, 0] = 2**62
    assert_unchanged_after(filled, pred, target, str(2**62))


def test_wide_ignore_value_path_validates_and_counts() -> None:
    pred, target = random_pair(18, (2, 10, 10), 4, 65535)
    cm = ConfusionMatrix(4, ignore_index=65535)
    cm.update(pred, target)
    np.testing.assert_array_equal(cm.matrix.numpy(), sklearn_matrix(pred, target, 4, 65535))
    target[0, 0, 0] = 40000
    assert_unchanged_after(cm, pred, target, r"65535.*\[40000\]")


def test_pred_out_of_range_lists_values(filled: ConfusionMatrix) -> None:
    pred, target = random_pair(19, (2, 6, 6), 4, 255)
    pred[0, 0, :2] = torch.tensor([4, -2])
    assert_unchanged_after(filled, pred, target, r"pred .*\[0, 3\].*\[-2, 4\]")


def test_logits_with_wrong_class_dim(filled: ConfusionMatrix) -> None:
    logits = torch.randn(2, 5, 6, 6)
    target = torch.zeros(2, 6, 6, dtype=torch.long)
    assert_unchanged_after(filled, logits, target, r"5 classes in dim 1.*num_classes=4")


def test_logits_with_wrong_spatial_dims(filled: ConfusionMatrix) -> None:
    logits = torch.randn(2, 4, 6, 7)
    target = torch.zeros(2, 6, 6, dtype=torch.long)
    assert_unchanged_after(filled, logits, target, r"\(2, 4, 6, 7\).*\(2, 6, 6\)")


def test_float_target(filled: ConfusionMatrix) -> None:
    target = torch.zeros(2, 6, 6)
    assert_unchanged_after(filled, target.long(), target, r"float32.*integer")


def test_nan_logits(filled: ConfusionMatrix) -> None:
    logits = torch.randn(2, 4, 6, 6)
    logits[1, 2, 3, 3] = float("nan")
    target = torch.zeros(2, 6, 6, dtype=torch.long)
    assert_unchanged_after(filled, logits, target, r"NaN at 1 of 72 pixels")


def test_float_pred_with_label_shape(filled: ConfusionMatrix) -> None:
    target = torch.zeros(2, 6, 6, dtype=torch.long)
    assert_unchanged_after(filled, target.float(), target, r"logits \(2, 4, 6, 6\)")


def test_integer_pred_shaped_like_logits(filled: ConfusionMatrix) -> None:
    target = torch.zeros(2, 6, 6, dtype=torch.long)
    pred = torch.zeros(2, 4, 6, 6, dtype=torch.long)
    assert_unchanged_after(filled, pred, target, r"logits must be floating point")


def test_not_tensors(filled: ConfusionMatrix) -> None:
    assert_unchanged_after(filled, np.zeros((2, 6, 6)), torch.zeros(2, 6, 6), r"ndarray")


def test_bad_constructor_and_merge_arguments() -> None:
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidInputError, match="num_classes"):
            ConfusionMatrix(bad)
    with pytest.raises(InvalidInputError, match="ignore_index"):
        ConfusionMatrix(3, ignore_index=1.5)
    with pytest.raises(InvalidInputError, match=r"num_classes=4.*num_classes=3"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(InvalidInputError, match="dict"):
        ConfusionMatrix(3).merge({})


def test_empty_batch_counts_nothing() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(0, 4, 4, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.long))
    assert cm.matrix.sum() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu() -> None:
    pred, target = random_pair(20, (2, 33, 35), 6, 255)
    a, b = ConfusionMatrix(6, 255), ConfusionMatrix(6, 255)
    a.update(pred, target)
    b.update(pred.cuda(), target.cuda())
    assert b.matrix.device.type == "cuda"
    assert torch.equal(a.matrix, b.matrix.cpu())
    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(InvalidInputError, match=r"\[7\]"):
        b.update(pred.cuda(), bad.cuda())
