"""Panoptic fusion: each detectron2 rule decides a hand-built case; random cases agree with a
loop-by-loop re-implementation of ``combine_semantic_and_instance_outputs``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pixelseg.errors import InvalidInputError, NonFiniteError
from pixelseg.inference import FusionSettings, fuse_panoptic, naive_paste

THINGS = [1, 7]  # label 1 -> COCO id 1, label 2 -> COCO id 7
STUFF = [100, 200]  # semantic class 1 -> 100, class 2 -> 200
H, W = 6, 8


def box(top: int, left: int, height: int, width: int, value: float = 1.0) -> torch.Tensor:
    mask = torch.zeros(H, W)
    mask[top : top + height, left : left + width] = value
    return mask


def things_logits(h: int = H, w: int = W) -> torch.Tensor:
    """Semantic logits that call every pixel 'things' (class 0): no stuff gets pasted."""
    logits = torch.zeros(len(STUFF) + 1, h, w)
    logits[0] = 5.0
    return logits


def fuse(masks, scores, labels=None, logits=None, **kwargs):
    masks = torch.stack(masks) if isinstance(masks, list) else masks
    scores = torch.tensor(scores, dtype=torch.float32)
    labels = torch.ones(len(scores), dtype=torch.int64) if labels is None else torch.tensor(labels)
    logits = things_logits() if logits is None else logits
    kwargs.setdefault("stuff_area_threshold", 0)
    return fuse_panoptic(
        masks, scores, labels, logits, thing_category_ids=THINGS, stuff_category_ids=STUFF, **kwargs
    )


# ------------------------------------------------------------------ each rule by hand
def test_higher_score_wins_contested_pixels_even_listed_second():
    first, second = box(0, 0, 3, 4), box(0, 2, 3, 4)  # 6 pixels shared of 12 each
    ids, segments = fuse([first, second], [0.6, 0.9], overlap_threshold=0.5)
    assert [s["instance_index"] for s in segments] == [1, 0]
    assert (ids[second.bool()] == 1).all()  # the 0.9 instance got all its pixels
    assert ids[0, 0] == 2 and ids[0, 2] == 1
    assert segments[1]["area"] == 6  # only its free pixels


def test_equal_scores_keep_input_order():
    ids, segments = fuse([box(0, 0, 2, 2), box(0, 1, 2, 2)], [0.7, 0.7], overlap_threshold=1.0)
    assert [s["instance_index"] for s in segments] == [0, 1]
    assert ids[0, 1] == 1


def test_score_threshold_drops_below_keeps_equal():
    ids, segments = fuse([box(0, 0, 2, 2), box(3, 3, 2, 2)], [0.5, 0.49], score_threshold=0.5)
    assert [s["instance_index"] for s in segments] == [0]
    assert segments[0]["score"] == pytest.approx(0.5)
    assert (ids[3:5, 3:5] == 0).all()


def test_overlap_threshold_drops_60_percent_pastes_free_part_of_40():
    owner = box(0, 0, 2, 5)  # 10 pixels, highest score
    sixty = torch.zeros(H, W)
    sixty[0:2, 2:5] = 1  # 6 pixels on the owner
    sixty[2, 0:4] = 1  # 4 free pixels
    forty = torch.zeros(H, W)
    forty[1, 0:4] = 1  # 4 pixels on the owner
    forty[4, 0:6] = 1  # 6 free pixels
    ids, segments = fuse([owner, sixty, forty], [0.9, 0.8, 0.7], overlap_threshold=0.5)
    assert [s["instance_index"] for s in segments] == [0, 2]
    assert segments[1]["area"] == 6
    assert (ids[4, 0:6] == 2).all() and (ids[1, 0:4] == 1).all()
    assert (ids[2] == 0).all()  # the dropped instance pasted nothing, not even its free part


def test_empty_masks_are_skipped_and_ids_stay_consecutive():
    masks = [box(0, 0, 2, 2), torch.zeros(H, W), box(3, 3, 2, 2)]
    ids, segments = fuse(masks, [0.9, 0.8, 0.7])
    assert [s["id"] for s in segments] == [1, 2]
    assert [s["instance_index"] for s in segments] == [0, 2]
    assert set(ids.unique().tolist()) == {0, 1, 2}


def test_mask_threshold_is_inclusive_like_detectron2():
    soft = box(0, 0, 2, 3, value=0.3)
    assert fuse([soft], [0.9], mask_threshold=0.5)[1] == []
    assert fuse([soft], [0.9], mask_threshold=0.3)[1][0]["area"] == 6
    assert fuse([soft], [0.9], mask_threshold=0.31)[1] == []
    # Bool masks are used as they are.
    assert fuse([soft > 0], [0.9], mask_threshold=1.0)[1][0]["area"] == 6


def test_things_class_never_becomes_stuff():
    logits = torch.zeros(3, H, W)
    logits[0, :, :4] = 4.0  # 'things' on the left half
    logits[1, :, 4:] = 4.0  # stuff 100 on the right half
    ids, segments = fuse([box(0, 0, 1, 1)], [0.9], logits=logits)
    assert [(s["category_id"], s["isthing"]) for s in segments] == [(1, True), (100, False)]
    assert (ids[:, 4:] == 2).all()
    assert (ids[:, :4] == 0).sum() == H * 4 - 1  # unclaimed 'things' pixels stay VOID


def test_stuff_area_threshold_drops_9_keeps_10():
    logits = things_logits(4, 12)
    logits[1, 0, 0:9] = 9.0  # 9 pixels of stuff 100
    logits[2, 1, 0:10] = 9.0  # 10 pixels of stuff 200
    empty = torch.zeros(0, 4, 12)
    ids, segments = fuse_panoptic(
        empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), logits,
        thing_category_ids=THINGS, stuff_category_ids=STUFF, stuff_area_threshold=10,
    )  # fmt: skip
    assert [(s["id"], s["category_id"], s["area"]) for s in segments] == [(1, 200, 10)]
    assert (ids[0] == 0).all() and (ids[1, :10] == 1).all()


def test_stuff_score_is_mean_softmax_probability():
    logits = torch.zeros(3, 1, 4)
    logits[1] = torch.tensor([[1.0, 2.0, 3.0, 0.5]])  # stuff 100 wins everywhere
    _, segments = fuse_panoptic(
        torch.zeros(0, 1, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), logits,
        thing_category_ids=THINGS, stuff_category_ids=STUFF, stuff_area_threshold=0,
    )  # fmt: skip
    x = np.array([1.0, 2.0, 3.0, 0.5])
    expected = np.mean(np.exp(x) / (np.exp(x) + 2.0))
    assert segments[0]["score"] == pytest.approx(expected, rel=1e-6)


STUFF_P = 1.0 / (1.0 + np.exp(-4.0) + np.exp(-9.0))  # logits (5, 0, 9): 'things' 5


def test_category_ids_areas_and_segment_fields():
    logits = things_logits()
    logits[2, 5, :] = 9.0  # the bottom row is stuff 200
    ids, segments = fuse(
        [box(0, 0, 2, 2), box(2, 2, 2, 3)], [0.8, 0.9], labels=[2, 1], logits=logits
    )
    assert segments == [
        {"id": 1, "category_id": 1, "isthing": True, "score": pytest.approx(0.9), "area": 6,
         "instance_index": 1},
        {"id": 2, "category_id": 7, "isthing": True, "score": pytest.approx(0.8), "area": 4,
         "instance_index": 0},
        {"id": 3, "category_id": 200, "isthing": False, "score": pytest.approx(STUFF_P),
         "area": 8},
    ]  # fmt: skip
    counts = torch.bincount(ids.reshape(-1), minlength=4).tolist()
    assert counts[1:] == [s["area"] for s in segments]
    assert ids.dtype == torch.int64 and ids.shape == (H, W)


def test_mask_layouts_agree():
    masks = torch.stack([box(0, 0, 3, 3, 0.8), box(1, 1, 3, 3, 0.6)])
    plain = fuse(masks, [0.9, 0.8])
    with_channel = fuse(masks[:, None], [0.9, 0.8])
    as_bool = fuse(masks >= 0.5, [0.9, 0.8])
    for ids, segments in (with_channel, as_bool):
        assert torch.equal(ids, plain[0]) and segments == plain[1]


def test_naive_paste_differs_from_fusion_on_overlap():
    # A big low-score instance listed last overwrites a small confident one in naive paste.
    small, big = box(1, 1, 2, 2), box(0, 0, 4, 4)
    masks, scores = torch.stack([small, big]), torch.tensor([0.95, 0.6])
    labels = torch.tensor([1, 2])
    args = (masks, scores, labels, things_logits())
    kwargs = {"thing_category_ids": THINGS, "stuff_category_ids": STUFF}
    fused_ids, fused = fuse_panoptic(*args, **kwargs, stuff_area_threshold=0)
    naive_ids, naive = naive_paste(*args, **kwargs)
    assert [(s["category_id"], s["area"]) for s in fused] == [(1, 4), (7, 12)]
    assert [(s["id"], s["category_id"], s["area"]) for s in naive] == [(1, 7, 16)]
    assert (naive_ids[:4, :4] == 1).all() and not torch.equal(fused_ids, naive_ids)


def test_naive_paste_stuff_everywhere_left_without_area_threshold():
    logits = things_logits()
    logits[1, 5, 7] = 9.0  # a single pixel of stuff 100
    ids, segments = naive_paste(
        torch.zeros(1, H, W), torch.tensor([0.9]), torch.tensor([1]), logits,
        thing_category_ids=THINGS, stuff_category_ids=STUFF,
    )  # fmt: skip
    assert [(s["id"], s["category_id"], s["area"]) for s in segments] == [(1, 100, 1)]
    assert ids[5, 7] == 1 and ids.sum() == 1


# ------------------------------------------------------------------ against the reference
def reference_fusion(masks, scores, labels, logits, st, ot, at, mt):
    """detectron2's ``combine_semantic_and_instance_outputs``, statement by statement in
    numpy, with COCO ids, areas, stuff scores and no empty segments (see the module)."""
    binary = masks >= mt
    pan = np.zeros(logits.shape[1:], dtype=np.int64)
    segments, current = [], 0
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable
    for i in order:
        score = float(scores[i])
        if score < st:
            break
        mask = binary[i]
        mask_area = int(mask.sum())
        if mask_area == 0:
            continue
        intersect_area = int((mask & (pan > 0)).sum())
        if intersect_area * 1.0 / mask_area > ot:
            continue
        if intersect_area > 0:
            mask = mask & (pan == 0)
        if mask.sum() == 0:
            continue
        current += 1
        pan[mask] = current
        segments.append(
            {"id": current, "category_id": THINGS[labels[i] - 1], "isthing": True,
             "score": score, "area": int(mask.sum()), "instance_index": i}
        )  # fmt: skip
    semantic = logits.argmax(axis=0)
    e = np.exp(logits - logits.max(axis=0))
    probs = e / e.sum(axis=0)
    for label in np.unique(semantic).tolist():
        if label == 0:
            continue
        mask = (semantic == label) & (pan == 0)
        mask_area = int(mask.sum())
        if mask_area < at or mask_area == 0:
            continue
        current += 1
        pan[mask] = current
        segments.append(
            {"id": current, "category_id": STUFF[label - 1], "isthing": False,
             "score": float(probs[label][mask].mean()), "area": mask_area}
        )  # fmt: skip
    return pan, segments


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    h, w, n = rng.integers(5, 13), rng.integers(5, 13), rng.integers(0, 7)
    masks = np.zeros((n, h, w), dtype=np.float32)
    for i in range(n):
        top, left = rng.integers(0, h), rng.integers(0, w)
        bottom, right = rng.integers(top, h + 1), rng.integers(left, w + 1)
        masks[i, top:bottom, left:right] = rng.uniform(0.2, 1.0, (bottom - top, right - left))
    scores = rng.choice([0.3, 0.5, 0.6, 0.75, 0.9], n).astype(np.float32)  # ties on purpose
    labels = rng.integers(1, len(THINGS) + 1, n)
    logits = rng.normal(0, 2, (len(STUFF) + 1, h, w)).astype(np.float32)
    settings = {
        "score_threshold": float(rng.choice([0.0, 0.5, 0.6])),
        "overlap_threshold": float(rng.choice([0.0, 0.3, 0.5, 1.0])),
        "stuff_area_threshold": int(rng.integers(0, 40)),
        "mask_threshold": float(rng.choice([0.3, 0.5, 0.7])),
    }
    return masks, scores, labels, logits, settings


def assert_same(ids, segments, ref_ids, ref_segments):
    np.testing.assert_array_equal(ids.numpy(), ref_ids)
    assert len(segments) == len(ref_segments)
    for got, want in zip(segments, ref_segments, strict=True):
        assert got == {**want, "score": pytest.approx(want["score"], rel=1e-5, abs=1e-6)}


@pytest.mark.parametrize("seed", range(20))
def test_matches_detectron2_reference_on_random_cases(seed):
    masks, scores, labels, logits, settings = random_case(seed)
    ids, segments = fuse_panoptic(
        torch.from_numpy(masks), torch.from_numpy(scores), torch.from_numpy(labels),
        torch.from_numpy(logits), thing_category_ids=THINGS, stuff_category_ids=STUFF,
        **settings,
    )  # fmt: skip
    ref = reference_fusion(masks, scores, labels, logits, *settings.values())
    assert_same(ids, segments, *ref)
    if segments:
        assert [s["id"] for s in segments] == list(range(1, len(segments) + 1))


# ------------------------------------------------------------------ devices and bad inputs
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    masks, scores, labels, logits, settings = random_case(3)
    tensors = [torch.from_numpy(a) for a in (masks, scores, labels, logits)]
    kwargs = {"thing_category_ids": THINGS, "stuff_category_ids": STUFF, **settings}
    cpu_ids, cpu_segments = fuse_panoptic(*tensors, **kwargs)
    gpu_ids, gpu_segments = fuse_panoptic(*(t.cuda() for t in tensors), **kwargs)
    assert gpu_ids.is_cuda and torch.equal(gpu_ids.cpu(), cpu_ids)
    assert_same(gpu_ids.cpu(), gpu_segments, cpu_ids.numpy(), cpu_segments)


def bad_inputs():
    masks, scores, labels = torch.rand(2, H, W), torch.tensor([0.9, 0.8]), torch.tensor([1, 2])
    logits = torch.randn(3, H, W)
    yield "masks must be", (torch.rand(2, H, W + 1), scores, labels, logits), {}
    yield "masks must be bool or float", (masks.long(), scores, labels, logits), {}
    yield r"scores and labels must be \[2\]", (masks, scores[:1], labels, logits), {}
    yield r"labels\[1\] is 3", (masks, scores, torch.tensor([1, 3]), logits), {}
    yield r"labels\[0\] is 0", (masks, scores, torch.tensor([0, 1]), logits), {}
    yield "labels must be integers", (masks, scores, labels.float(), logits), {}
    yield "semantic_logits has 4 classes", (masks, scores, labels, torch.randn(4, H, W)), {}
    yield "semantic_logits must be float", (masks, scores, labels, logits.long()), {}
    yield "category id 7 appears twice", (masks, scores, labels, logits), {"stuff": [7, 8]}
    yield "overlap_threshold must be", (masks, scores, labels, logits), {"overlap_threshold": 2}
    yield (
        "stuff_area_threshold must be",
        (masks, scores, labels, logits),
        {"stuff_area_threshold": -1},
    )


@pytest.mark.parametrize("match, args, options", list(bad_inputs()))
def test_bad_inputs_name_the_value(match, args, options):
    stuff = options.pop("stuff", STUFF)
    with pytest.raises(InvalidInputError, match=match):
        fuse_panoptic(*args, thing_category_ids=THINGS, stuff_category_ids=stuff, **options)


def test_non_finite_inputs():
    masks, labels = torch.rand(1, H, W), torch.tensor([1])
    kwargs = {"thing_category_ids": THINGS, "stuff_category_ids": STUFF}
    logits = torch.randn(3, H, W)
    with pytest.raises(NonFiniteError, match="scores"):
        fuse_panoptic(masks, torch.tensor([float("nan")]), labels, logits, **kwargs)
    logits[1, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="semantic_logits"):
        naive_paste(masks, torch.tensor([0.9]), labels, logits, **kwargs)


def test_fusion_settings_validate_and_feed_the_function():
    settings = FusionSettings(stuff_area_threshold=0, overlap_threshold=0.3)
    ids, _ = fuse_panoptic(
        torch.rand(1, H, W), torch.tensor([0.9]), torch.tensor([1]), torch.randn(3, H, W),
        thing_category_ids=THINGS, stuff_category_ids=STUFF, **dataclasses.asdict(settings),
    )  # fmt: skip
    assert ids.shape == (H, W)
    for bad in (
        {"score_threshold": -0.1},
        {"mask_threshold": float("nan")},
        {"overlap_threshold": True},
        {"stuff_area_threshold": 1.5},
    ):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            FusionSettings(**bad)
