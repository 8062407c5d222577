"""Generation benchmark: pure pipeline time per job type, and batched vs sequential SDXL throughput.

    python bench/generation.py                         # tiny models on this machine's CPU
    python bench/generation.py --scale full --device cuda --json out.json   # on a GPU

`--scale full` builds the real SDXL and Wan2.1 1.3B architectures with random weights (timing does not
depend on weight values) and feeds random prompt embeddings of the real shapes, so no hub or text
encoder is needed. Everything else is the runtime a worker uses: the pipeline cache, the device
executor and its micro-batching. Prints JSON and a table; the batching ratio compares against a
sequential baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    DiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    WanPipeline,
    WanTransformer3DModel,
)

from ourvidz.catalog import JOB_TYPES
from ourvidz.config import Settings
from ourvidz.generation.models import ModelKey
from ourvidz.generation.pipelines import Embeddings
from ourvidz.generation.request import GenerationRequest, request_for_job
from ourvidz.generation.runtime import GenerationRuntime
from ourvidz.generation.tiny import sdxl_scheduler, wan_scheduler

from report import publish

# Enhanced types run the same pipeline call as their plain twin; enhancement is benchmarked elsewhere.
DEFAULT_TYPES = ["sdxl_image_fast", "sdxl_image_high", "image_fast", "image_high", "video_fast", "video_high"]
TARGETS_GPU = {"sdxl_image_fast": 1.0, "sdxl_image_high": 1.5, "image_fast": 2.0, "video_fast": 40.0}
TARGET_BATCH_RATIO = 1.6
PROMPT = "a lighthouse on a cliff at dusk, waves below, cinematic light"


def cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast like `from_pretrained(dtype=...)` does: the modules a model keeps in fp32 stay in fp32."""
    model.to(dtype)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if any(part in keep for part in name.split(".")):
            tensor.data = tensor.data.to(torch.float32)
    return model


def build_full_size(key: ModelKey) -> DiffusionPipeline:
    """The real architectures (see ARCHITECTURE.md), random weights, built directly on the device."""
    dtype = getattr(torch, key.dtype.removeprefix("torch."))
    # Schedulers keep their tables on the CPU (set_timesteps converts them to numpy), so they are built
    # outside the device context.
    scheduler = sdxl_scheduler() if key.family == "sdxl" else wan_scheduler()
    with torch.device(key.device):
        if key.family == "sdxl":
            unet = UNet2DConditionModel(
                sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
            )  # fmt: skip
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                sample_size=1024, scaling_factor=0.13025, force_upcast=True,
            )  # fmt: skip
            return StableDiffusionXLPipeline(
                vae=cast(vae, dtype), unet=cast(unet, dtype), scheduler=scheduler,
                text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
            )  # fmt: skip
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
            out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        )  # fmt: skip
        return WanPipeline(
            tokenizer=None, text_encoder=None, transformer=cast(transformer, dtype),
            vae=AutoencoderKLWan(), scheduler=scheduler,
        )  # fmt: skip


def random_sdxl_embeddings(pipe: DiffusionPipeline, request: GenerationRequest) -> Embeddings:
    """UMT5/CLIP outputs are not what is timed; tensors of the real shapes stand in for them."""
    n, dtype, device = request.num_images, pipe.unet.dtype, pipe.unet.device
    text = torch.randn(n, 77, 2048, dtype=dtype, device=device)
    pooled = torch.randn(n, 1280, dtype=dtype, device=device)
    return {
        "prompt_embeds": text, "negative_prompt_embeds": torch.randn_like(text),
        "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": torch.randn_like(pooled),
    }  # fmt: skip


def random_wan_embeddings(pipe: DiffusionPipeline, request: GenerationRequest) -> Embeddings:
    text = torch.randn(1, 512, 4096, dtype=pipe.transformer.dtype, device=pipe.transformer.device)
    return {"prompt_embeds": text, "negative_prompt_embeds": torch.randn_like(text)}


def make_runtime(args: argparse.Namespace, data_dir: Path) -> GenerationRuntime:
    settings = Settings(
        data_dir=data_dir,
        model_profile="tiny" if args.scale == "tiny" else "production",
        device=args.device,
        batch_window_ms=args.batch_window_ms,
        max_batch_images=args.max_batch_images,
        torch_compile=args.compile,
    )
    if args.scale == "tiny":
        return GenerationRuntime(settings)
    encoders = {"sdxl": random_sdxl_embeddings, "wan": random_wan_embeddings}
    return GenerationRuntime(settings, encoders=encoders, loader=build_full_size)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(runtime: GenerationRuntime, requests: list[GenerationRequest]) -> float:
    """Seconds from submitting `requests` together until every one has its pixels."""
    synchronize()
    start = time.perf_counter()
    futures = [runtime.submit(request) for request in requests]
    for future in futures:
        future.result()
    synchronize()
    return time.perf_counter() - start


def bench_job_types(runtime: GenerationRuntime, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.job_types:
        job = JOB_TYPES[name]
        frames = args.video_frames if job.output == "video" and args.video_frames else None
        request = request_for_job(name, PROMPT, seeds=[1], frames=frames)
        timed(runtime, [request])  # warm-up: load, allocate, compile
        repeats = 1 if job.output == "video" else args.repeats
        samples = [timed(runtime, [request]) for _ in range(repeats)]
        seconds = statistics.median(samples)
        target = (
            TARGETS_GPU.get(name)
            if args.scale == "full" and runtime.pipelines.device.type == "cuda"
            else None
        )
        rows.append(row := {
            "job_type": name, "size": f"{request.width}x{request.height}", "steps": request.steps,
            "frames": request.frames, "images": request.num_images, "seconds": round(seconds, 4),
            "images_per_s": round(request.num_images / seconds, 3),
            "frames_per_s": round(request.frames / seconds, 3), "samples": [round(s, 4) for s in samples],
            "target_s": target, "meets_target": None if target is None else seconds <= target,
        })  # fmt: skip
        print(f"measured {name}: {row['seconds']} s", flush=True)  # partial results survive a kill
    return rows


def bench_batching(runtime: GenerationRuntime, jobs: int) -> dict[str, Any]:
    """The same jobs submitted together, first with batching off (the baseline), then on."""
    requests = [request_for_job("sdxl_image_fast", f"{PROMPT}, variant {i}", seeds=[i]) for i in range(jobs)]
    executor = runtime.executor
    max_images, executor.max_batch_images = executor.max_batch_images, 1
    timed(runtime, requests[:1])  # warm-up
    sequential_s = timed(runtime, requests)
    executor.max_batch_images = max_images
    calls_before = len(executor.batch_sizes)
    batched_s = timed(runtime, requests)
    return {
        "jobs": jobs, "sequential_s": round(sequential_s, 4), "batched_s": round(batched_s, 4),
        "ratio": round(sequential_s / batched_s, 3), "target_ratio": TARGET_BATCH_RATIO,
        "batch_sizes": list(executor.batch_sizes)[calls_before:],
    }  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    print(f"\ngeneration benchmark: scale={result['scale']} device={result['device']}")
    print(
        f"{'job type':<18} {'size':>9} {'steps':>5} {'frames':>6} {'seconds':>9} {'img/s':>7} {'target':>7}"
    )
    for row in result["job_types"]:
        target = (
            ""
            if row["target_s"] is None
            else f"{row['target_s']:.1f}{' ok' if row['meets_target'] else ' !!'}"
        )
        print(
            f"{row['job_type']:<18} {row['size']:>9} {row['steps']:>5} {row['frames']:>6} "
            f"{row['seconds']:>9.3f} {row['images_per_s']:>7.2f} {target:>7}"
        )
    batch = result["batching"]
    if batch is None:
        return
    print(
        f"batched vs sequential, {batch['jobs']} sdxl_image_fast jobs: {batch['sequential_s']:.3f} s -> "
        f"{batch['batched_s']:.3f} s, ratio {batch['ratio']:.2f} (target >= {batch['target_ratio']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--job-types", nargs="+", default=DEFAULT_TYPES, choices=sorted(JOB_TYPES))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image job type (median)")
    parser.add_argument("--video-frames", type=int, help="override 81 frames (e.g. 17 on a CPU)")
    parser.add_argument("--batch-jobs", type=int, default=4, help="0 skips the batching comparison")
    parser.add_argument("--batch-window-ms", type=float, default=50.0)
    parser.add_argument("--max-batch-images", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser first")
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ourvidz-bench-") as tmp:
        runtime = make_runtime(args, Path(tmp))
        try:
            result = {
                "scale": args.scale, "device": str(runtime.pipelines.device), "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "compile": args.compile, "job_types": bench_job_types(runtime, args),
                "batching": bench_batching(runtime, args.batch_jobs) if args.batch_jobs else None,
                "model_loads": runtime.pipelines.total_loads,
            }  # fmt: skip
        finally:
            runtime.close()
    publish(result, args.json)
    print_table(result)


if __name__ == "__main__":
    main()
