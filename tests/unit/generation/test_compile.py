"""Optional torch.compile: the worker's warm-up compiles the denoiser, later jobs reuse the graph."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch._dynamo.utils import counters

from ourvidz.config import Settings
from ourvidz.generation.request import request_for_job
from ourvidz.generation.runtime import GenerationRuntime
from ourvidz.storage import Storage
from tests.unit.generation.helpers import same_image


def test_attention_runs_on_sdpa(runtime: GenerationRuntime) -> None:
    pipe = runtime.executor.run(lambda pipelines: pipelines.get("sdxl")).result()
    processors = set(map(type, pipe.unet.attn_processors.values()))
    assert processors == {AttnProcessor2_0}


def test_compiled_warm_up_then_no_recompiles(
    tiny_settings: Settings, runtime: GenerationRuntime, tmp_path: Path
) -> None:
    compiled = GenerationRuntime(
        tiny_settings.model_copy(update={"torch_compile": True}), storage=Storage(f"file://{tmp_path}")
    )
    try:
        compiled.warm_up(["sdxl"])
        pipe = compiled.executor.run(lambda pipelines: pipelines.get("sdxl")).result()
        assert isinstance(pipe.unet, torch._dynamo.eval_frame.OptimizedModule)
        graphs = counters["stats"]["unique_graphs"]
        request = request_for_job("sdxl_image_fast", "a lighthouse", seeds=[3])
        pixels = compiled.submit(request).result()
        assert counters["stats"]["unique_graphs"] == graphs  # the warm-up's graph served the job
        assert same_image(pixels[0], runtime.submit(request).result()[0])
    finally:
        compiled.close()
