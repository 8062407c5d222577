"""The generation runtime of one worker process: warm pipelines, one device executor, storage.

`generate` turns a request into stored files and returns what was stored; the pixels are produced
on the device thread and encoded in the caller's thread, so the device moves on to the next call
while the previous job's files are written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from concurrent.futures import Future

import numpy as np

from ourvidz.config import Settings
from ourvidz.generation.control import Control
from ourvidz.generation.executor import DeviceExecutor
from ourvidz.generation.models import FAMILIES, Loader, PipelineCache
from ourvidz.generation.outputs import store_outputs
from ourvidz.generation.pipelines import Encoder
from ourvidz.generation.request import GenerationRequest, request_for_job
from ourvidz.generation.results import GenerationResult, OutputPlace
from ourvidz.storage import Storage

WARM_UP_JOB_TYPES = {"sdxl": "sdxl_image_fast", "wan": "image_fast"}


class GenerationRuntime:
    def __init__(
        self,
        settings: Settings,
        storage: Storage | None = None,
        encoders: Mapping[str, Encoder] | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage or Storage(settings.storage_url)
        self.pipelines = PipelineCache(settings, loader)
        self.executor = DeviceExecutor(
            self.pipelines,
            batch_window=settings.batch_window_ms / 1000,
            max_batch_images=settings.max_batch_images,
            encoders=encoders,
        )

    def submit(self, request: GenerationRequest, control: Control | None = None) -> Future[np.ndarray]:
        return self.executor.submit(request, control)

    def generate(
        self, request: GenerationRequest, place: OutputPlace, control: Control | None = None
    ) -> GenerationResult:
        pixels = self.submit(request, control).result()
        return self._store(request, pixels, place)

    async def generate_async(
        self, request: GenerationRequest, place: OutputPlace, control: Control | None = None
    ) -> GenerationResult:
        pixels = await asyncio.wrap_future(self.submit(request, control))
        return await asyncio.to_thread(self._store, request, pixels, place)

    def warm_up(self, families: Iterable[str] = FAMILIES) -> None:
        """Load each family's pipeline now; with torch.compile on, also run a short call to compile it."""
        for family in families:
            self.executor.run(lambda pipelines, family=family: pipelines.get(family)).result()
            if self.settings.torch_compile:
                request = request_for_job(WARM_UP_JOB_TYPES[family], "warm-up", steps=2, seeds=[0])
                self.submit(request).result()

    def close(self) -> None:
        self.executor.shutdown()

    def _store(self, request: GenerationRequest, pixels: np.ndarray, place: OutputPlace) -> GenerationResult:
        assets = store_outputs(
            self.storage, request, pixels, bucket=place.bucket, user_id=place.user_id, job_id=place.job_id
        )
        return GenerationResult(assets)
