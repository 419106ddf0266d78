"""Panoptic quality against the reference: the COCO sample's expected numbers (panopticapi
``pq_compute``), hand-built cases where each rule decides the outcome, a naive per-pair
implementation written from the rules, and torchmetrics where the definitions agree."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pixelseg.data.coco_panoptic import write_panoptic
from pixelseg.errors import DataError
from pixelseg.metrics.panoptic import PanopticQuality, panoptic_quality

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco_panoptic_sample"
# 1, 2: things (person, car); 3, 4: stuff (sky, road).
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "sky", "isthing": 0},
    {"id": 4, "name": "road", "isthing": 0},
]


def segs(*pairs: tuple[int, int], crowd: tuple[int, ...] = ()) -> list[dict[str, int]]:
    """segments_info from (id, category_id) pairs; ids in ``crowd`` get iscrowd 1."""
    return [{"id": i, "category_id": c, "iscrowd": int(i in crowd)} for i, c in pairs]


def run(
    gt: list[int], gt_segs: list[dict], pred: list[int], pred_segs: list[dict]
) -> PanopticQuality:
    """PQ of one 1-row image."""
    metric = PanopticQuality(CATEGORIES)
    metric.update(np.array([gt]), gt_segs, np.array([pred]), pred_segs, image=7)
    return metric


# ---------------------------------------------------------------- the reference's test vectors


@pytest.mark.realdata
@pytest.mark.parametrize("prediction", ["pred_00", "pred_10", "pred_25"])
def test_reproduces_the_reference_numbers_on_the_coco_sample(prediction: str) -> None:
    if not (SAMPLE / "expected_pq.json").is_file():
        pytest.skip(f"reference vectors {SAMPLE} not present (see ../shared/data/README.md)")
    expected = json.loads((SAMPLE / "expected_pq.json").read_text())[prediction]
    got = panoptic_quality(SAMPLE / "gt.json", SAMPLE / f"{prediction}.json")
    for group in ("All", "Things", "Stuff"):
        assert got[group]["n"] == expected[group]["n"], group
        for key in ("pq", "sq", "rq"):
            assert got[group][key] == pytest.approx(expected[group][key], abs=1e-9), (group, key)
    assert set(got["per_class"]) == {int(c) for c in expected["per_class"]}
    for cid, scores in expected["per_class"].items():
        for key, value in scores.items():
            assert got["per_class"][int(cid)][key] == pytest.approx(value, abs=1e-9), (cid, key)


# ---------------------------------------------------------------- hand-built cases, one rule each


def test_iou_must_exceed_one_half() -> None:
    gt, gt_segs = [1, 1, 1, 1, 5, 5, 5, 5], segs((1, 1), (5, 3))
    # person: 2 of 4 pixels, IoU exactly 2/4 -> no match (FP + FN); sky: IoU 4/6 -> match.
    at_half = run(gt, gt_segs, [7, 7, 9, 9, 9, 9, 9, 9], segs((7, 1), (9, 3)))
    assert at_half.counts[1] == {"iou": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert at_half.counts[3] == {"iou": pytest.approx(4 / 6), "tp": 1, "fp": 0, "fn": 0}
    result = at_half.compute()
    assert result["per_class"][3] == pytest.approx({"pq": 4 / 6, "sq": 4 / 6, "rq": 1.0})
    assert result["per_class"][1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert result["All"] == pytest.approx({"pq": 2 / 6, "sq": 2 / 6, "rq": 0.5, "n": 2})
    assert result["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}
    assert result["Stuff"] == pytest.approx({"pq": 4 / 6, "sq": 4 / 6, "rq": 1.0, "n": 1})
    # One more pixel: IoU 3/4 -> match.
    above = run(gt, gt_segs, [7, 7, 7, 9, 9, 9, 9, 9], segs((7, 1), (9, 3)))
    assert above.counts[1] == {"iou": 0.75, "tp": 1, "fp": 0, "fn": 0}


def test_union_leaves_out_the_predictions_pixels_on_void() -> None:
    # IoU with void counted would be 4/8 = 0.5 (no match); without it 4/4.
    metric = run([1, 1, 1, 1, 0, 0, 0, 0], segs((1, 1)), [7] * 8, segs((7, 1)))
    assert metric.counts[1] == {"iou": 1.0, "tp": 1, "fp": 0, "fn": 0}
    # Only the prediction's pixels on ground-truth void leave the union, not the ground
    # truth's pixels on predicted void: I = 4, union = 6 + 6 - 4 - 2 = 6.
    metric = run([1, 1, 1, 1, 1, 1, 0, 0], segs((1, 1)), [0, 0, 7, 7, 7, 7, 7, 7], segs((7, 1)))
    assert metric.counts[1] == {"iou": pytest.approx(4 / 6), "tp": 1, "fp": 0, "fn": 0}


def test_an_unmatched_prediction_mostly_on_void_is_not_a_false_positive() -> None:
    gt, gt_segs = [1, 1, 1, 1, 0, 0, 0, 0], segs((1, 1))
    metric = run(gt, gt_segs, [7, 7, 7, 7, 7, 7, 8, 8], segs((7, 1), (8, 2)))
    assert metric.counts[2] == {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0}
    result = metric.compute()
    assert result["All"]["n"] == 1 and result["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}


def test_crowd_regions_only_excuse_predictions_of_their_own_category() -> None:
    gt, gt_segs = [1, 1, 1, 1, 2, 2, 2, 2], segs((1, 1), (2, 3), crowd=(1,))
    # A person over the person crowd: no match, no FP, and the crowd is no FN.
    metric = run(gt, gt_segs, [7, 7, 7, 7, 8, 8, 8, 8], segs((7, 1), (8, 3)))
    assert metric.counts[1] == {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert metric.compute()["All"]["n"] == 1
    # A car over the person crowd is a false positive.
    metric = run(gt, gt_segs, [7, 7, 7, 7, 8, 8, 8, 8], segs((7, 2), (8, 3)))
    assert metric.counts[2]["fp"] == 1
    # A crowd never matches, even when it would at IoU 1.
    metric = run([1, 1, 1, 1], segs((1, 1), crowd=(1,)), [7, 7, 7, 7], segs((7, 1)))
    assert metric.counts[1] == {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0}


def test_void_and_own_crowd_count_together_and_more_than_half_is_needed() -> None:
    # Prediction of 8 pixels: 3 on void, 2 on the person crowd, 3 on sky.
    gt = [0, 0, 0, 1, 1, 2, 2, 2]
    excused = run(gt, segs((1, 1), (2, 3), crowd=(1,)), [7] * 8, segs((7, 1)))
    assert excused.counts[1]["fp"] == 0  # (3 + 2) / 8 > 0.5
    assert excused.counts[3] == {"iou": 0.0, "tp": 0, "fp": 0, "fn": 1}
    other_crowd = run(gt, segs((1, 2), (2, 3), crowd=(1,)), [7] * 8, segs((7, 1)))
    assert other_crowd.counts[1]["fp"] == 1  # 3 / 8 on void only
    half = run([0, 0, 0, 1, 2, 2, 2, 2], segs((1, 1), (2, 3), crowd=(1,)), [7] * 8, segs((7, 1)))
    assert half.counts[1]["fp"] == 1  # (3 + 1) / 8 is not more than half


def test_the_last_crowd_segment_of_a_category_is_its_crowd_region_as_in_the_reference() -> None:
    gt_segs = segs((1, 1), (3, 1), crowd=(1, 3))
    metric = run([1, 1, 1, 1, 3, 3, 3, 3], gt_segs, [7, 7, 7, 7, 8, 8, 8, 8], segs((7, 1), (8, 1)))
    assert metric.counts[1] == {"iou": 0.0, "tp": 0, "fp": 1, "fn": 0}


def test_counts_accumulate_over_images_and_merge_and_reset() -> None:
    gt, gt_segs = np.array([[1, 1, 1, 1, 5, 5, 5, 5]]), segs((1, 1), (5, 3))
    good, good_segs = np.array([[7, 7, 7, 9, 9, 9, 9, 9]]), segs((7, 1), (9, 3))
    bad, bad_segs = np.array([[7, 9, 9, 9, 9, 9, 9, 9]]), segs((7, 1), (9, 3))
    one = PanopticQuality(CATEGORIES)
    one.update(gt, gt_segs, good, good_segs)
    one.update(gt, gt_segs, bad, bad_segs)
    # person: TP (IoU 3/4) + FP + FN; sky: IoU 4/5 and 4/7.
    assert one.counts[1] == {"iou": 0.75, "tp": 1, "fp": 1, "fn": 1}
    result = one.compute()
    assert result["per_class"][1] == pytest.approx({"pq": 0.375, "sq": 0.75, "rq": 0.5})
    assert result["per_class"][3]["pq"] == pytest.approx((4 / 5 + 4 / 7) / 2)
    first, second = PanopticQuality(CATEGORIES), PanopticQuality(CATEGORIES)
    first.update(gt, gt_segs, good, good_segs)
    second.update(gt, gt_segs, bad, bad_segs)
    assert first.merge(second).compute() == result and first.num_images == 2
    one.reset()
    assert one.num_images == 0 and all(c["tp"] == c["fp"] == 0 for c in one.counts.values())


def test_a_group_without_categories_seen_averages_to_nan() -> None:
    result = run([1, 1], segs((1, 1)), [7, 7], segs((7, 1))).compute()
    assert result["All"]["n"] == 1 and result["Stuff"]["n"] == 0
    assert math.isnan(result["Stuff"]["pq"])


def test_tensors_and_large_coco_ids_give_the_same_counts() -> None:
    gt, gt_segs = [0, 1, 1, 1, 5, 5, 5, 5], segs((1, 1), (5, 3))
    pred, pred_segs = [7, 7, 7, 9, 9, 9, 9, 9], segs((7, 1), (9, 3))
    small = run(gt, gt_segs, pred, pred_segs).counts
    big = {1: 9_000_001, 5: 16_000_000, 7: 2_000_000, 9: 3}  # ids past the lookup table
    metric = PanopticQuality(CATEGORIES)
    metric.update(
        torch.tensor([[big.get(v, 0) for v in gt]]),
        [{**s, "id": big[s["id"]]} for s in gt_segs],
        torch.tensor([[big[v] for v in pred]], dtype=torch.int32),
        [{**s, "id": big[s["id"]]} for s in pred_segs],
    )
    assert metric.counts == small


# ---------------------------------------------------------------- a naive implementation


def naive_counts(
    gt: np.ndarray, gt_segs: list[dict], pred: np.ndarray, pred_segs: list[dict]
) -> dict[int, dict[str, Any]]:
    """The rules spelled out pair by pair with boolean masks (slow, obviously right)."""
    out = {c["id"]: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0} for c in CATEGORIES}
    gt_matched, pred_matched = set(), set()
    for g in gt_segs:
        for p in pred_segs:
            if g["iscrowd"] or g["category_id"] != p["category_id"]:
                continue
            gm, pm = gt == g["id"], pred == p["id"]
            inter = int((gm & pm).sum())
            union = int(gm.sum() + pm.sum()) - inter - int((pm & (gt == 0)).sum())
            if inter and inter / union > 0.5:
                out[g["category_id"]]["tp"] += 1
                out[g["category_id"]]["iou"] += inter / union
                gt_matched.add(g["id"])
                pred_matched.add(p["id"])
    crowd_of = {}
    for g in gt_segs:
        if g["iscrowd"]:
            crowd_of[g["category_id"]] = g["id"]
        elif g["id"] not in gt_matched:
            out[g["category_id"]]["fn"] += 1
    for p in pred_segs:
        if p["id"] in pred_matched:
            continue
        pm = pred == p["id"]
        ignored = (gt == 0) | (gt == crowd_of.get(p["category_id"], -1))
        if (pm & ignored).sum() / pm.sum() <= 0.5:
            out[p["category_id"]]["fp"] += 1
    return out


def random_pair(
    rng: np.random.Generator, size: int = 16, crowd: bool = True, pred_void: bool = True
) -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """Blocky ground truth (some void, some crowds) and a noisy, partly relabelled prediction."""
    cells = rng.integers(0, 7, (size // 4, size // 4))
    gt = np.kron(cells, np.ones((4, 4), dtype=np.int64))
    gt_ids = [int(i) for i in np.unique(gt) if i]
    gt_segs = [
        {
            "id": i,
            "category_id": int(rng.integers(1, 5)),
            "iscrowd": int(crowd and rng.random() < 0.2),
        }
        for i in gt_ids
    ]
    pred = np.where(gt > 0, gt + 10, 20 if not pred_void else 0)
    noise = rng.random(gt.shape) < 0.25
    pred[noise] = rng.choice(
        [0, 11, 12, 13, 30, 31] if pred_void else [11, 12, 30, 31], noise.sum()
    )
    cat_of_gt = {s["id"] + 10: s["category_id"] for s in gt_segs}
    pred_segs = [
        {"id": int(i), "category_id": cat_of_gt.get(int(i), int(rng.integers(1, 5)))}
        for i in np.unique(pred)
        if i
    ]
    for s in pred_segs:
        if rng.random() < 0.2:
            s["category_id"] = int(rng.integers(1, 5))
    return gt, gt_segs, pred, pred_segs


def test_equals_a_naive_per_pair_implementation_on_random_images() -> None:
    rng = np.random.default_rng(0)
    metric = PanopticQuality(CATEGORIES)
    expected = {c["id"]: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0} for c in CATEGORIES}
    tps = fps = 0
    for _ in range(60):
        gt, gt_segs, pred, pred_segs = random_pair(rng)
        metric.update(gt, gt_segs, pred, pred_segs)
        for cid, c in naive_counts(gt, gt_segs, pred, pred_segs).items():
            for key in c:
                expected[cid][key] += c[key]
            tps, fps = tps + c["tp"], fps + c["fp"]
    assert tps > 20 and fps > 20  # the random cases exercise both outcomes
    for cid, c in metric.counts.items():
        assert c == {**expected[cid], "iou": pytest.approx(expected[cid]["iou"], abs=1e-12)}


def test_agrees_with_torchmetrics_without_crowds_or_predicted_void() -> None:
    pytest.importorskip("torchmetrics")
    from torchmetrics.detection import PanopticQuality as TorchmetricsPQ

    rng = np.random.default_rng(1)
    ours = PanopticQuality(CATEGORIES)
    theirs = TorchmetricsPQ(
        things={1, 2}, stuffs={3, 4}, return_sq_and_rq=True, return_per_class=True
    )
    for _ in range(8):
        gt, gt_segs, pred, pred_segs = random_pair(rng, crowd=False, pred_void=False)
        # torchmetrics merges the segments of a stuff category: keep one per category.
        gt_segs = [s if s["category_id"] < 3 else {**s, "category_id": 1} for s in gt_segs]
        pred_segs = [s if s["category_id"] < 3 else {**s, "category_id": 2} for s in pred_segs]
        gt_segs[0]["category_id"], pred_segs[0]["category_id"] = 3, 3
        ours.update(gt, gt_segs, pred, pred_segs)
        pairs = []
        for ids, segments in ((pred, pred_segs), (gt, gt_segs)):
            cat = np.zeros_like(ids)  # 0 is no category: void for torchmetrics
            for s in segments:
                cat[ids == s["id"]] = s["category_id"]
            pairs.append(torch.from_numpy(np.stack([cat, ids], -1))[None])
        theirs.update(*pairs)
    result = ours.compute()
    per_class = theirs.compute()  # [classes (things, then stuff, sorted), (pq, sq, rq)]
    # torchmetrics divides int tensors, so its IoUs are float32: agreement to ~1e-7.
    for k, cid in enumerate([1, 2, 3, 4]):
        assert [result["per_class"][cid][key] for key in ("pq", "sq", "rq")] == pytest.approx(
            per_class[k].tolist(), abs=1e-6
        )
    counts = [ours.counts[c] for c in (1, 2, 3, 4)]
    for key, state in (
        ("tp", "true_positives"),
        ("fp", "false_positives"),
        ("fn", "false_negatives"),
    ):
        assert getattr(theirs, state).tolist() == [c[key] for c in counts], key
    seen = (theirs.true_positives + theirs.false_positives + theirs.false_negatives) > 0
    assert result["All"]["n"] == int(seen.sum()) >= 3
    assert result["All"]["pq"] == pytest.approx(float(per_class[seen, 0].mean()), abs=1e-6)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("gt_segs", "pred", "pred_segs", "message"),
    [
        (segs((1, 1)), [7, 9], segs((7, 1)), r"image with ID 7.*prediction segment with ID 9"),
        (segs((1, 1)), [7, 7], segs((7, 1), (9, 1)), r"image with ID 7.*IDs \[9\].*not in the PNG"),
        (segs((1, 1)), [7, 7], segs((7, 42)), r"image with ID 7.*ID 7 has unknown category_id 42"),
        (segs((1, 1)), [7, 7], segs((7, 1), (7, 2)), r"image with ID 7.*segment ID 7 is repeated"),
        (segs((1, 1), (1, 2)), [7, 7], segs((7, 1)), r"segment ID 1 is repeated"),
        ([{"id": 1, "category_id": 1, "area": 3}], [7, 7], segs((7, 1)), r"ID 1 has area 3.*2 pix"),
        (segs((1, 1)), [7, 7], segs((0, 1)), r"segment ID 0 is outside"),
    ],
)
def test_bad_segments_name_the_image_and_the_segment(
    gt_segs: list[dict], pred: list[int], pred_segs: list[dict], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        run([1, 1], gt_segs, pred, pred_segs)


def test_maps_of_different_sizes_are_refused() -> None:
    metric = PanopticQuality(CATEGORIES)
    with pytest.raises(DataError, match=r"image with ID 'a.png'.*prediction is 1x3.*truth is 1x2"):
        metric.update(
            np.ones((1, 2), int), segs((1, 1)), np.ones((1, 3), int), segs((1, 1)), "a.png"
        )


def write_dataset(root: Path, name: str, maps: dict[int, tuple[np.ndarray, list[dict]]]) -> Path:
    records = [
        {"image_id": i, "file_name": f"{i:03d}.png", "ids": ids, "segments_info": s}
        for i, (ids, s) in maps.items()
    ]
    write_panoptic(root / f"{name}.json", root / name, records, CATEGORIES)
    return root / f"{name}.json"


def test_file_api_defaults_folders_to_the_json_paths(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pairs = [random_pair(rng) for _ in range(3)]
    gt_json = write_dataset(tmp_path, "gt", {i: (p[0], p[1]) for i, p in enumerate(pairs)})
    pred_json = write_dataset(tmp_path, "pred", {i: (p[2], p[3]) for i, p in enumerate(pairs)})
    streamed = PanopticQuality(CATEGORIES)
    for gt, gt_segs, pred, pred_segs in pairs:
        streamed.update(gt, gt_segs, pred, pred_segs)
    assert panoptic_quality(gt_json, pred_json) == streamed.compute()


def test_file_api_names_missing_predictions_and_pngs(tmp_path: Path) -> None:
    gt = np.array([[1, 1]])
    gt_json = write_dataset(tmp_path, "gt", {1: (gt, segs((1, 1))), 2: (gt, segs((1, 1)))})
    pred_json = write_dataset(tmp_path, "pred", {1: (gt, segs((1, 1)))})
    with pytest.raises(DataError, match=r"no prediction for the image with ID 2"):
        panoptic_quality(gt_json, pred_json)
    pred_json = write_dataset(tmp_path, "pred", {1: (gt, segs((1, 1))), 2: (gt, segs((1, 1)))})
    (tmp_path / "pred" / "002.png").unlink()
    with pytest.raises(DataError, match=r"002.png' of the image with ID 2 does not exist"):
        panoptic_quality(gt_json, pred_json)
    with pytest.raises(DataError, match=r"folder .*nowhere' does not exist"):
        panoptic_quality(gt_json, pred_json, pred_folder=tmp_path / "nowhere")


def test_all_reduce_round_trips_the_counts_in_a_one_process_group(tmp_path: Path) -> None:
    import torch.distributed as dist

    rng = np.random.default_rng(3)
    metric = PanopticQuality(CATEGORIES)
    for _ in range(4):
        metric.update(*random_pair(rng))
    before, images = metric.counts, metric.num_images
    metric.all_reduce()  # not initialised: a no-op
    assert metric.counts == before
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rdv", rank=0, world_size=1)
    try:
        metric.all_reduce()
    finally:
        dist.destroy_process_group()
    assert metric.counts == before and metric.num_images == images
    assert any(c["tp"] for c in before.values()) and any(c["fn"] for c in before.values())
