"""Loading pipelines once per process and keeping them warm.

`PipelineCache` loads each (family, model, dtype, device) once and hands the same pipeline to every
later job; `loads` counts real loads, for tests and metrics. Tiny and production weights go through
the same `from_pretrained(..., local_files_only=True)` path whenever the source is a local folder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import diffusers.utils.logging
import torch
import transformers.utils.logging
from diffusers import (
    AutoencoderKLWan,
    DiffusionPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
)
from transformers import CLIPVisionModel

from ourvidz.config import Settings
from ourvidz.generation.noop import NoopPipeline
from ourvidz.generation.request import InvalidRequest
from ourvidz.generation.tiny import WAN_FLOW_SHIFT, ensure_tiny, tiny_path

FAMILIES = ("sdxl", "wan")
# Pipelines, not families: Wan requests with a first frame (and a last one) run on them.
WAN_I2V, WAN_FLF2V = "wan_i2v", "wan_flf2v"
PIPELINES = (*FAMILIES, WAN_I2V, WAN_FLF2V)
logger = logging.getLogger(__name__)

# Loading bars would flood a worker's log; loads are counted and reported instead.
diffusers.utils.logging.disable_progress_bar()
transformers.utils.logging.disable_progress_bar()


@dataclass(frozen=True, slots=True)
class ModelKey:
    family: str
    source: str
    dtype: str
    device: str


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def dtype_for(family: str, device: torch.device) -> torch.dtype:
    """Half precision on CUDA (fp16 for SDXL, bf16 for Wan as trained); fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.float16 if family == "sdxl" else torch.bfloat16


Loader = Callable[[ModelKey], DiffusionPipeline]


def load_pretrained(key: ModelKey) -> DiffusionPipeline:
    """Weights from a diffusers folder or repo id, or (SDXL) a single `.safetensors` checkpoint."""
    dtype = getattr(torch, key.dtype.removeprefix("torch."))
    local = Path(key.source).exists()
    if key.family == "sdxl":
        if key.source.endswith(".safetensors"):
            return StableDiffusionXLPipeline.from_single_file(key.source, torch_dtype=dtype)
        return StableDiffusionXLPipeline.from_pretrained(key.source, dtype=dtype, local_files_only=local)
    # The Wan VAE stays in fp32: it is cheap next to the transformer and bf16 decoding bands.
    vae = AutoencoderKLWan.from_pretrained(
        key.source, subfolder="vae", dtype=torch.float32, local_files_only=local
    )
    if key.family in (WAN_I2V, WAN_FLF2V):  # its CLIP image encoder too, as Wan2.1 I2V is meant to run
        encoder = CLIPVisionModel.from_pretrained(
            key.source, subfolder="image_encoder", dtype=torch.float32, local_files_only=local
        )
        return WanImageToVideoPipeline.from_pretrained(
            key.source, vae=vae, image_encoder=encoder, dtype=dtype, local_files_only=local
        )
    return WanPipeline.from_pretrained(key.source, vae=vae, dtype=dtype, local_files_only=local)


class PipelineCache:
    """Process-wide, thread-safe cache of loaded pipelines.

    `loader` builds a pipeline for a key (default: `load_pretrained`); the cache then puts it on the
    device and applies what every pipeline gets (Wan scheduler shift, VAE tiling on CUDA, compile).
    """

    def __init__(self, settings: Settings, loader: Loader | None = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.loader = loader or load_pretrained
        self.loads: Counter[ModelKey] = Counter()
        self._pipelines: dict[ModelKey, DiffusionPipeline] = {}
        self._lock = threading.Lock()

    def key(self, family: str) -> ModelKey:
        if family not in PIPELINES:
            raise InvalidRequest("family", f"unknown model family {family!r}; known: {', '.join(PIPELINES)}")
        return ModelKey(family, self.source(family), str(dtype_for(family, self.device)), str(self.device))

    def source(self, family: str) -> str:
        """Where `family`'s weights come from under the configured profile."""
        if self.settings.model_profile == "tiny":
            assert self.settings.models_dir is not None  # filled in by Settings
            return str(tiny_path(self.settings.models_dir, family))
        if self.settings.model_profile == "noop":
            return "noop"
        if family in (WAN_I2V, WAN_FLF2V):
            source = self.settings.wan_i2v_model if family == WAN_I2V else self.settings.wan_flf2v_model
            if not source:
                raise InvalidRequest("reference_image_url", f"no {family} model is configured on this worker")
            return source
        return self.settings.sdxl_model if family == "sdxl" else self.settings.wan_model

    def get(self, family: str) -> DiffusionPipeline:
        key = self.key(family)
        with self._lock:
            pipeline = self._pipelines.get(key)
            if pipeline is None:
                started = time.perf_counter()
                pipeline = self._load(key)
                self._pipelines[key] = pipeline
                self.loads[key] += 1
                logger.info(
                    "loaded %s pipeline from %s in %.2f s",
                    key.family,
                    key.source,
                    time.perf_counter() - started,
                )
            return pipeline

    @property
    def total_loads(self) -> int:
        return sum(self.loads.values())

    def _load(self, key: ModelKey) -> DiffusionPipeline:
        if self.settings.model_profile == "noop":
            return NoopPipeline(key.family)
        if self.settings.model_profile == "tiny" and self.loader is load_pretrained:
            assert self.settings.models_dir is not None
            ensure_tiny(self.settings.models_dir, key.family)
        pipeline = self.loader(key)
        if key.family != "sdxl":
            pipeline.scheduler = UniPCMultistepScheduler.from_config(
                pipeline.scheduler.config, flow_shift=WAN_FLOW_SHIFT
            )
            if self.device.type == "cuda":
                pipeline.vae.enable_tiling()  # bounds decode memory; on CPU it only slows decoding down
        pipeline.to(key.device)
        pipeline.set_progress_bar_config(disable=True)
        if self.settings.torch_compile:
            denoiser = "unet" if key.family == "sdxl" else "transformer"
            setattr(pipeline, denoiser, torch.compile(getattr(pipeline, denoiser)))
        return pipeline
