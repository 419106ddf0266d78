"""Per-image binary Dice/IoU and per-image multiclass scores."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score

from pixelseg.errors import InvalidInputError
from pixelseg.metrics import ConfusionMatrix, binary_dice, binary_iou, per_image_scores


def test_hand_computed_binary_scores() -> None:
    # image 0: |P|=3, |T|=2, |P∩T|=2; image 1: both empty; image 2: T empty, P not.
    pred = torch.tensor([[[1, 1, 1, 0]], [[0, 0, 0, 0]], [[0, 1, 0, 0]]])
    target = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[0, 0, 0, 0]]])
    dice = binary_dice(pred, target)
    iou = binary_iou(pred, target)
    assert dice.dtype == torch.float64
    assert dice.tolist() == pytest.approx([4 / 5, 1.0, 0.0])
    assert iou.tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    nan_dice = binary_dice(pred, target, empty_score=float("nan"))
    assert math.isnan(nan_dice[1]) and nan_dice[0] == pytest.approx(0.8) and nan_dice[2] == 0


def test_binary_scores_equal_sklearn_per_image() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(4, 3, 9, 11, generator=gen) < 0.4
    target = torch.rand(4, 3, 9, 11, generator=gen) < 0.5
    dice, iou = binary_dice(pred, target), binary_iou(pred, target)
    for i in range(4):
        t, p = target[i].flatten().numpy(), pred[i].flatten().numpy()
        assert dice[i].item() == pytest.approx(f1_score(t, p), abs=1e-12)
        assert iou[i].item() == pytest.approx(jaccard_score(t, p), abs=1e-12)


def test_binary_ignore_index_removes_pixels() -> None:
    pred = torch.tensor([[1, 1, 0, 1]])
    target = torch.tensor([[1, 255, 0, 255]])
    # Only pixels 0 and 2 count: P = {0}, T = {0} -> perfect.
    assert binary_dice(pred, target, ignore_index=255).tolist() == [1.0]
    assert binary_iou(pred, target, ignore_index=255).tolist() == [1.0]


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (torch.tensor([[0, 2]]), torch.tensor([[0, 1]]), r"pred mask holds values \[2\]"),
        (torch.tensor([[0, 1]]), torch.tensor([[0, 3]]), r"target mask holds values \[3\]"),
        (torch.tensor([[0.2, 0.9]]), torch.tensor([[0, 1]]), r"float32.*threshold"),
        (torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1]]), r"\(1, 3\).*\(1, 2\)"),
        (torch.tensor([0, 1]), torch.tensor([0, 1]), r"\[B, \*spatial\]"),
    ],
)
def test_binary_bad_input_raises(pred, target, match) -> None:
    for fn in (binary_dice, binary_iou):
        with pytest.raises(InvalidInputError, match=match):
            fn(pred, target)


def test_binary_target_ignore_value_without_ignore_index_raises() -> None:
    with pytest.raises(InvalidInputError, match=r"\[255\].*0, 1$"):
        binary_dice(torch.tensor([[0, 1]]), torch.tensor([[0, 255]]))


def test_per_image_scores_equal_confusion_matrix_per_image() -> None:
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (3, 10, 12), generator=gen)
    pred = torch.randint(0, 4, (3, 10, 12), generator=gen)
    target[0, :2] = 255
    pred[2] = torch.where(pred[2] == 3, 0, pred[2])  # image 2: class 3 never predicted
    target[2] = torch.where(target[2] == 3, 1, target[2])  # ... nor in the ground truth
    out = per_image_scores(pred, target, 4, ignore_index=255)
    assert out["iou_per_class"].shape == (3, 4)
    assert math.isnan(out["iou_per_class"][2, 3])
    for i in range(3):
        cm = ConfusionMatrix(4, 255)
        cm.update(pred[i : i + 1], target[i : i + 1])
        s = cm.compute()
        assert out["iou"][i].item() == pytest.approx(s["miou"], abs=1e-12)
        assert out["dice"][i].item() == pytest.approx(s["mdice"], abs=1e-12)


def test_per_image_scores_hand_computed_and_all_ignored() -> None:
    # image 0: gt [0, 0, 1, 1], pred [0, 1, 1, 1] -> IoU c0 = 1/2, c1 = 2/3; class 2 absent.
    target = torch.tensor([[0, 0, 1, 1], [9, 9, 9, 9]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 1, 2, 2]])
    out = per_image_scores(pred, target, 3, ignore_index=9)
    assert out["iou"][0].item() == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["dice"][0].item() == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert math.isnan(out["iou"][1]) and math.isnan(out["dice"][1])


def test_per_image_scores_accepts_logits_and_rejects_bad_labels() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 5, 5, generator=gen)
    target = torch.randint(0, 3, (2, 5, 5), generator=gen)
    a = per_image_scores(logits, target, 3)
    b = per_image_scores(logits.argmax(1), target, 3)
    assert torch.equal(a["iou"], b["iou"])
    target[1, 0, 0] = 3
    with pytest.raises(InvalidInputError, match=r"\[3\]"):
        per_image_scores(logits, target, 3)
