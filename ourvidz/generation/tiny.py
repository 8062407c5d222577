"""The `tiny` model profile: real SDXL and Wan pipeline classes at toy sizes, with random weights.

They are built once from configs (the Wan image-to-video one only where `wan_i2v_model` is set), saved
with `save_pretrained` under the models dir, and from then on loaded by exactly the code that loads
production weights. Sizes are picked so a catalog-default SDXL image takes about a second on two CPU
cores; the geometry (8x VAE, 2x2 Wan patches, 4x temporal compression, 16 latent channels for Wan)
matches the real models, so every size rule is the same.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModel,
    UMT5Config,
    UMT5EncoderModel,
)

from ourvidz.generation.tokenizers import CLIP_MAX_LENGTH, clip_tokenizer, umt5_tokenizer

TINY_VERSION = 1  # bump when a config below changes, so old builds are not reused
WAN_FLOW_SHIFT = 5.0
TINY_IMAGE_TOKENS = (32 // 8) ** 2 + 1  # the tiny CLIP vision encoder's: 4x4 patches and a class token


def tiny_path(models_dir: Path, family: str) -> Path:
    return models_dir / f"tiny-{family}-v{TINY_VERSION}"


def ensure_tiny(models_dir: Path, family: str) -> Path:
    """Path of the saved tiny pipeline for `family`, building it first if needed (safe across processes)."""
    target = tiny_path(models_dir, family)
    if (target / "model_index.json").is_file():
        return target
    builders = {
        "sdxl": build_tiny_sdxl, "wan": build_tiny_wan, "wan_i2v": build_tiny_wan_i2v,
        "wan_flf2v": lambda: build_tiny_wan_i2v(last_frame=True),
    }  # fmt: skip
    if family not in builders:
        raise ValueError(f"no tiny model for family {family!r}")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=models_dir))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            builders[family]().save_pretrained(staging)
        try:
            os.rename(staging, target)  # atomic; fails if another process got there first
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def sdxl_scheduler() -> EulerDiscreteScheduler:
    """SDXL base's scheduler configuration."""
    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )  # fmt: skip


def wan_scheduler() -> UniPCMultistepScheduler:
    """Wan2.1's flow-matching UniPC scheduler."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=WAN_FLOW_SHIFT,
    )  # fmt: skip


def _clip_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        projection_dim=32, hidden_act="gelu",
    )  # fmt: skip


def build_tiny_sdxl() -> StableDiffusionXLPipeline:
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=4,
        block_out_channels=(8, 16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 2, 4), transformer_layers_per_block=(1, 1, 1), use_linear_projection=True,
        cross_attention_dim=64,  # both text encoders' hidden sizes
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids + pooled text embedding
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=1024, layers_per_block=1,
        block_out_channels=(4, 4, 8, 8), norm_num_groups=4, mid_block_add_attention=False,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.13025, force_upcast=False,
    )  # fmt: skip
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_clip_config()),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config()),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=sdxl_scheduler(),
    )


def _tiny_umt5(tokenizer: Any) -> UMT5EncoderModel:
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8,
        )
    )  # fmt: skip


def _tiny_wan_vae() -> AutoencoderKLWan:
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def build_tiny_wan() -> WanPipeline:
    tokenizer = umt5_tokenizer()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
    )  # fmt: skip
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=_tiny_umt5(tokenizer), transformer=transformer, vae=_tiny_wan_vae(),
        scheduler=wan_scheduler(),
    )  # fmt: skip


def build_tiny_wan_i2v(last_frame: bool = False) -> WanImageToVideoPipeline:
    """Wan2.1 image-to-video at toy size: the noise latents plus the first frame's latents and mask (36
    input channels), and a CLIP vision encoder whose penultimate states condition the transformer.
    `last_frame`: the first-last-frame variant, whose image embedding takes both frames' tokens."""
    tokenizer = umt5_tokenizer()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=36, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024, image_dim=32, added_kv_proj_dim=16,
        pos_embed_seq_len=2 * TINY_IMAGE_TOKENS if last_frame else None,
    )  # fmt: skip
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                         image_size=32, patch_size=8, projection_dim=32)
    )  # fmt: skip
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=_tiny_umt5(tokenizer), vae=_tiny_wan_vae(),
        scheduler=wan_scheduler(), image_processor=processor, image_encoder=image_encoder,
        transformer=transformer,
    )  # fmt: skip
