"""The device executor: the one thread that drives a device, with micro-batching of SDXL requests.

Flow runs in a worker submit requests from many threads; the executor runs one pipeline call at a time
so the device is never oversubscribed. An SDXL request waits up to `batch_window` seconds for
compatible requests (same size, steps, guidance), which then share one batched call; the images are
split back per request, each with its own seeds.

A long call does not hold the other families for its whole length: between two denoising steps of a
Wan call (`INTERLEAVED`), the executor runs the next waiting request of another family (an SDXL
image takes a few Wan steps' time), then the video goes on. Requests that wait are told their
position each time the device moves on (`Control.waiting`), so a job waiting for the device is seen
to wait, not taken for hung.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ourvidz.generation.control import Cancelled, Control
from ourvidz.generation.models import PipelineCache
from ourvidz.generation.pipelines import Encoder, run_pipeline
from ourvidz.generation.request import GenerationRequest


@dataclass(slots=True)
class _Item:
    future: Future[Any]
    request: GenerationRequest | None = None
    control: Control = field(default_factory=Control)
    call: Callable[[PipelineCache], Any] | None = None


INTERLEAVED = frozenset({"wan"})  # families whose calls let other families' requests run between steps


class ExecutorClosed(RuntimeError):
    """The executor was shut down before the request ran."""


class DeviceExecutor:
    def __init__(
        self,
        pipelines: PipelineCache,
        *,
        batch_window: float = 0.05,
        max_batch_images: int = 8,
        encoders: Mapping[str, Encoder] | None = None,
    ) -> None:
        self.pipelines = pipelines
        self.batch_window = batch_window
        self.max_batch_images = max_batch_images
        self.encoders = dict(encoders or {})
        self.batch_sizes: deque[int] = deque(maxlen=1024)  # requests per recent pipeline call, in order
        self._calls: Counter[tuple[str, int]] = Counter()  # (family, requests in the call) -> calls
        self._pending: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running: str | None = None  # the family of the call on the device, while one runs
        self._thread = threading.Thread(target=self._loop, name="ourvidz-device", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest, control: Control | None = None) -> Future[np.ndarray]:
        """Queue a request; the future gives its frames (images, frames, H, W, 3) or raises."""
        return self._enqueue(_Item(Future(), request=request, control=control or Control()))

    def run(self, call: Callable[[PipelineCache], Any]) -> Future[Any]:
        """Run `call(pipelines)` on the device thread, in turn with generation (loads, warm-ups)."""
        return self._enqueue(_Item(Future(), call=call))

    def batch_counts(self) -> dict[str, dict[str, int]]:
        """Pipeline calls so far per family and batch size: `{"sdxl": {"1": 3, "4": 2}}`."""
        counts: dict[str, dict[str, int]] = {}
        for (family, size), calls in sorted(self._calls.items()):
            counts.setdefault(family, {})[str(size)] = calls
        return counts

    def shutdown(self, wait: bool = True) -> None:
        with self._cond:
            self._closed = True
            abandoned = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for item in abandoned:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(ExecutorClosed("generation executor shut down"))
        if wait:
            self._thread.join()

    def _enqueue(self, item: _Item) -> Future[Any]:
        with self._cond:
            if self._closed:
                raise ExecutorClosed("generation executor is shut down")
            self._pending.append(item)
            self._cond.notify_all()
            position = len(self._pending) - 1
        if item.control.waiting is not None and self._running is not None:
            item.control.waiting(position)
        return item.future

    def _tell_waiting(self) -> None:
        """Each waiting request's position (the device just moved on)."""
        with self._cond:
            waiting = list(self._pending)
        for position, item in enumerate(waiting):
            if item.control.waiting is not None:
                try:
                    item.control.waiting(position)
                except Exception:  # a caller's callback never stops the device
                    continue

    def _between_steps(self) -> None:
        """After a step of an interleaved call: the next waiting request of another family (with what
        it batches with) runs now, then the call goes on."""
        self._tell_waiting()
        with self._cond:
            other = next(
                (item for item in self._pending if item.request and item.request.family != self._running),
                None,
            )
            if other is None:
                return
            self._pending.remove(other)
            batch = [other]
            assert other.request is not None
            if other.request.batch_key is not None and self.max_batch_images > 1:
                self._gather(batch, other.request.batch_key, window=0.0)
        outer, self._running = self._running, other.request.family
        try:
            self._execute(batch, between_steps=self._tell_waiting)
        finally:
            self._running = outer

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = [self._pending.popleft()]
                key = batch[0].request.batch_key if batch[0].request else None
                if key is not None and self.max_batch_images > 1:
                    self._gather(batch, key)
            first = batch[0].request
            self._running = first.family if first else "call"
            try:
                between = self._between_steps if first and first.family in INTERLEAVED else self._tell_waiting
                self._execute(batch, between_steps=between)
            finally:
                self._running = None
            self._tell_waiting()

    def _gather(self, batch: list[_Item], key: tuple[object, ...], window: float | None = None) -> None:
        """Add compatible pending requests to `batch` until it is full or the window has passed."""
        deadline = time.monotonic() + (self.batch_window if window is None else window)
        while True:
            images = sum(item.request.num_images for item in batch if item.request)
            for item in list(self._pending):
                request = item.request
                if (
                    request
                    and request.batch_key == key
                    and images + request.num_images <= self.max_batch_images
                ):
                    self._pending.remove(item)
                    batch.append(item)
                    images += request.num_images
            remaining = deadline - time.monotonic()
            if images >= self.max_batch_images or remaining <= 0 or self._closed:
                return
            self._cond.wait(remaining)

    def _execute(self, batch: list[_Item], between_steps: Callable[[], None] | None = None) -> None:
        live = []
        for item in batch:
            if not item.future.set_running_or_notify_cancel():
                continue  # the caller cancelled the future itself
            if item.control.cancelled:
                item.future.set_exception(Cancelled("cancelled before it started"))
                continue
            live.append(item)
        if not live:
            return
        if live[0].call is not None:
            self._settle(live[0], live[0].call)
            return
        requests = [item.request for item in live if item.request]
        family = requests[0].family
        try:
            pipeline = self.pipelines.get(requests[0].pipeline)
            controls = [item.control for item in live]
            results = run_pipeline(pipeline, requests, controls, self.encoders.get(family), between_steps)
        except Exception as exc:
            for item in live:
                item.future.set_exception(exc)
            return
        finally:
            self.batch_sizes.append(len(live))
            self._calls[family, len(live)] += 1
        for item, result in zip(live, results, strict=True):
            if isinstance(result, Cancelled):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _settle(self, item: _Item, call: Callable[[PipelineCache], Any]) -> None:
        try:
            item.future.set_result(call(self.pipelines))
        except Exception as exc:
            item.future.set_exception(exc)
