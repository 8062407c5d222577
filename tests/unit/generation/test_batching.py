"""Micro-batching: compatible SDXL requests share one call and each gets back its own images."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ourvidz.config import Settings
from ourvidz.generation.control import Cancelled, Control
from ourvidz.generation.request import GenerationRequest, request_for_job
from ourvidz.generation.runtime import GenerationRuntime
from tests.unit.generation.helpers import same_image

SMALL = {"width": 64, "height": 64, "steps": 3}


def _runtime(settings: Settings, window_ms: float, max_images: int) -> GenerationRuntime:
    return GenerationRuntime(
        settings.model_copy(update={"batch_window_ms": window_ms, "max_batch_images": max_images})
    )


@pytest.fixture
def batching(tiny_settings: Settings) -> Iterator[GenerationRuntime]:
    runtime = _runtime(tiny_settings, window_ms=300, max_images=8)
    yield runtime
    runtime.close()


@pytest.fixture
def sequential(tiny_settings: Settings) -> Iterator[GenerationRuntime]:
    runtime = _runtime(tiny_settings, window_ms=300, max_images=1)
    yield runtime
    runtime.close()


def test_compatible_requests_share_a_call(batching: GenerationRuntime, sequential: GenerationRuntime) -> None:
    fewer_steps = {**SMALL, "steps": 2}
    requests: dict[str, GenerationRequest] = {
        "a": request_for_job("sdxl_image_fast", "a lighthouse", seeds=[11], **SMALL),
        "b": request_for_job("sdxl_image_fast", "a forest path", num_images=3, seeds=[21, 22, 23], **SMALL),
        "wan": request_for_job("image_fast", "a boat", seeds=[31], **SMALL),
        "other steps": request_for_job("sdxl_image_fast", "a lighthouse", seeds=[41], **fewer_steps),
        "too big": request_for_job("sdxl_image_high", "a desert", num_images=6, seeds=range(51, 57), **SMALL),
    }
    futures = {name: batching.submit(request) for name, request in requests.items()}
    batched = {name: future.result(timeout=120) for name, future in futures.items()}
    # a+b share the first call; the 6-image request would overflow the batch of 8 and runs on its own.
    assert list(batching.executor.batch_sizes) == [2, 1, 1, 1]
    alone = {name: sequential.submit(request).result(timeout=120) for name, request in requests.items()}
    assert list(sequential.executor.batch_sizes) == [1, 1, 1, 1, 1]
    for name, request in requests.items():
        assert batched[name].shape == (request.num_images, 1, 64, 64, 3)
        for image_batched, image_alone in zip(batched[name], alone[name], strict=True):
            assert same_image(image_batched, image_alone), name
    assert not same_image(batched["b"][0], batched["b"][1])


def test_a_request_cancelled_inside_a_batch_does_not_stop_the_others(batching: GenerationRuntime) -> None:
    cancel = threading.Event()

    def progress(step: int, total: int) -> None:
        if step == 2:
            cancel.set()

    steps = {"width": 64, "height": 64, "steps": 6}
    doomed = batching.submit(
        request_for_job("sdxl_image_fast", "a lighthouse", **steps), Control(progress=progress, cancel=cancel)
    )
    kept = batching.submit(request_for_job("sdxl_image_fast", "a forest", **steps))
    assert kept.result(timeout=120).shape == (1, 1, 64, 64, 3)
    with pytest.raises(Cancelled):
        doomed.result(timeout=120)
    assert list(batching.executor.batch_sizes) == [2]


def test_a_cancelled_future_is_skipped(batching: GenerationRuntime) -> None:
    blocker = threading.Event()
    batching.executor.run(lambda _pipelines: blocker.wait(30))
    skipped = batching.submit(request_for_job("image_fast", "a boat", **SMALL))
    assert skipped.cancel()
    blocker.set()
    batching.submit(request_for_job("image_fast", "a boat", **SMALL)).result(timeout=120)
    assert list(batching.executor.batch_sizes) == [1]
