"""Micro-batching: concurrent requests share forward passes, only same-size images share
one, every request gets its own result, and the queue is bounded."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import deque

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from pixelseg.serve import ServeSettings, create_app
from pixelseg.serve.batcher import MicroBatcher, _Job, take_group
from pixelseg.serve.errors import ApiError


def job(loop, height: int, width: int, value: float = 0.0) -> _Job:
    return _Job(torch.full((1, height, width), value), loop.create_future(), 0.0)


def test_take_group_keeps_the_oldest_size_and_the_order():
    loop = asyncio.new_event_loop()
    try:
        jobs = deque(
            [job(loop, 4, 4, 0), job(loop, 5, 4, 1), job(loop, 4, 4, 2), job(loop, 4, 4, 3),
             job(loop, 5, 4, 4), job(loop, 4, 4, 5)]
        )  # fmt: skip
        jobs[2].future.cancel()  # a request that timed out is dropped, not computed
        group = take_group(jobs, max_batch_size=2)
        assert [int(j.image[0, 0, 0]) for j in group] == [0, 3]
        assert [int(j.image[0, 0, 0]) for j in jobs] == [1, 4, 5]
        assert [int(j.image[0, 0, 0]) for j in take_group(jobs, 8)] == [1, 4]
        assert [int(j.image[0, 0, 0]) for j in jobs] == [5]
    finally:
        loop.close()


class FakeModel:
    """``images [B, 1, H, W]`` -> labels = the images' values; records each pass's shape and
    blocks the first pass until ``gate`` opens."""

    def __init__(self, delay: float = 0.0):
        self.shapes: list[tuple[int, ...]] = []
        self.gate = threading.Event()
        self.running = threading.Event()
        self.delay = delay

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        self.shapes.append(tuple(images.shape))
        self.running.set()
        if len(self.shapes) == 1:
            assert self.gate.wait(10)
        time.sleep(self.delay)
        return images[:, 0].long().numpy()


async def until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def run_scenario(sizes, max_batch_size=8, max_queue=64):
    """Submit one image of ``sizes[0]`` and, while its pass is held, one per later size; then
    release. Returns the passes' shapes and each request's (labels value, batch size)."""
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=max_batch_size, max_wait_ms=1.0,
                           max_queue=max_queue)  # fmt: skip

    async def scenario():
        await batcher.start()
        first = asyncio.create_task(batcher.submit(torch.full((1, *sizes[0]), 0.0)))
        await until(model.running.is_set)
        rest = [
            asyncio.create_task(batcher.submit(torch.full((1, *size), float(i))))
            for i, size in enumerate(sizes[1:], start=1)
        ]
        await until(lambda: batcher.waiting == len(rest))
        model.gate.set()
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    answers = []
    for index, (size, result) in enumerate(zip(sizes, results, strict=True)):
        assert result.labels.shape == size and (result.labels == index).all()
        answers.append(result.batch_size)
    return model.shapes, answers


def test_requests_waiting_during_a_pass_share_the_next():
    shapes, batch_sizes = run_scenario([(6, 7)] * 8)
    assert shapes == [(1, 1, 6, 7), (7, 1, 6, 7)]
    assert batch_sizes == [1] + [7] * 7


def test_only_same_size_images_share_a_pass_in_arrival_order():
    a, b = (6, 7), (7, 6)
    shapes, batch_sizes = run_scenario([a, b, a, b, a, a])
    # After the first pass: b1 a2 b3 a4 a5 wait; the oldest (b1) leads with its size.
    assert shapes == [(1, 1, *a), (2, 1, *b), (3, 1, *a)]
    assert batch_sizes == [1, 2, 3, 2, 3, 3]


def test_max_batch_size_splits_a_crowd():
    shapes, _ = run_scenario([(5, 5)] * 11, max_batch_size=4)
    assert [s[0] for s in shapes] == [1, 4, 4, 2]


def test_a_full_queue_refuses_with_503_and_the_rest_still_finish():
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0.0, max_queue=2)

    async def scenario():
        await batcher.start()
        running = asyncio.create_task(batcher.submit(torch.zeros(1, 3, 3)))
        await until(model.running.is_set)
        waiting = [asyncio.create_task(batcher.submit(torch.ones(1, 3, 3))) for _ in range(2)]
        await until(lambda: batcher.waiting == 2)
        with pytest.raises(ApiError) as refused:
            await batcher.submit(torch.ones(1, 3, 3))
        model.gate.set()
        done = await asyncio.gather(running, *waiting)
        await batcher.stop()
        return refused.value, done

    refused, done = asyncio.run(scenario())
    assert refused.status == 503 and refused.code == "queue_full"
    assert "max_queue 2" in refused.message
    assert [r.batch_size for r in done] == [1, 2, 2]


def test_a_request_that_stopped_waiting_is_not_computed():
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0.0, max_queue=8)

    async def scenario():
        await batcher.start()
        running = asyncio.create_task(batcher.submit(torch.zeros(1, 3, 3)))
        await until(model.running.is_set)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit(torch.ones(1, 4, 4)), 0.05)
        model.gate.set()
        await running
        later = await batcher.submit(torch.full((1, 5, 5), 2.0))
        await batcher.stop()
        return later

    later = asyncio.run(scenario())
    assert model.shapes == [(1, 1, 3, 3), (1, 1, 5, 5)]
    assert later.batch_size == 1 and (later.labels == 2).all()


def test_a_failing_pass_fails_its_requests_only():
    calls = []

    def flaky(images):
        calls.append(images.shape[0])
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return images[:, 0].long().numpy()

    batcher = MicroBatcher(flaky, max_batch_size=8, max_wait_ms=0.0, max_queue=8)

    async def scenario():
        with pytest.raises(RuntimeError, match="device lost"):
            await batcher.submit(torch.zeros(1, 2, 2))
        result = await batcher.submit(torch.ones(1, 2, 2))  # the worker survived
        await batcher.stop()
        return result

    assert (asyncio.run(scenario()).labels == 1).all()


def test_concurrent_http_requests_are_batched_and_answered_each_their_own(served, gated_runner):
    gate = threading.Event()
    runner, predictor = gated_runner(gate=gate)
    settings = ServeSettings(model=served["checkpoint"], max_batch_size=8, max_wait_ms=20.0)
    app = create_app(settings, runner=runner)
    names = ["shape_0", "shape_1", "shape_0", "shape_0", "shape_1", "noise", "shape_1", "shape_0"]
    answers: dict[int, object] = {}

    def post(index: int) -> None:
        data = (served["images"] / f"{names[index]}.png").read_bytes()
        answers[index] = client.post("/v1/segment", files={"image": ("x.png", data, "image/png")})

    with TestClient(app) as client:
        first = threading.Thread(target=post, args=(0,))
        first.start()
        assert predictor.running.wait(10)
        others = [threading.Thread(target=post, args=(i,)) for i in range(1, 8)]
        for thread in others:
            thread.start()
        deadline = time.monotonic() + 20
        while app.state.batcher.waiting < 7:
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.01)
        gate.set()
        for thread in [first, *others]:
            thread.join(30)
    sizes = {name: Image.open(served["images"] / f"{name}.png").size[::-1] for name in names}
    # The held first request alone, then one pass per size holding all its waiting requests
    # (which size goes first depends on the order the threads' uploads arrived in).
    passes = [(shape[0], tuple(shape[2:])) for shape in predictor.shapes]
    assert passes[0] == (1, sizes["shape_0"])
    assert sorted(passes[1:]) == sorted(
        [(3, sizes["shape_1"]), (3, sizes["shape_0"]), (1, sizes["noise"])]
    )
    expected_batch = {"shape_0": "3", "shape_1": "3", "noise": "1"}
    for index, response in answers.items():
        assert response.status_code == 200, response.text
        name = names[index]
        assert response.headers["x-batch-size"] == ("1" if index == 0 else expected_batch[name])
        expected = np.asarray(Image.open(served["predicted"] / f"{name}_mask.png"))
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(response.content))), expected
        )
    assert len(answers) == 8
    metrics = TestClient(app).get("/metrics").text.splitlines()
    assert "pixelseg_batch_size_count 4.0" in metrics
    assert "pixelseg_batch_size_sum 8.0" in metrics


def test_the_worker_follows_a_new_event_loop():
    # A test client without start-up (or a restarted app) submits from a fresh loop.
    batcher = MicroBatcher(
        lambda images: images[:, 0].long().numpy(), max_batch_size=4, max_wait_ms=0.0, max_queue=4
    )
    for value in (1.0, 2.0):
        result = asyncio.run(batcher.submit(torch.full((1, 2, 2), value)))
        assert result.batch_size == 1 and (result.labels == value).all()


def test_stopping_fails_the_running_pass_with_503_not_a_later_timeout():
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0.0, max_queue=8)

    async def scenario():
        await batcher.start()
        running = asyncio.create_task(batcher.submit(torch.zeros(1, 3, 3)))
        await until(model.running.is_set)
        await batcher.stop()
        with pytest.raises(ApiError) as info:
            await asyncio.wait_for(running, 5)
        model.gate.set()  # let the forward thread finish
        return info.value

    error = asyncio.run(scenario())
    assert error.status == 503 and error.code == "shutting_down"
