"""Turning generated pixels into files in storage: png images, mp4 videos with a webp thumbnail."""

from __future__ import annotations

import io
import tempfile
import uuid
from pathlib import Path
from typing import NamedTuple

import imageio_ffmpeg
import numpy as np
from PIL import Image

from ourvidz.generation.request import GenerationRequest
from ourvidz.generation.results import Asset
from ourvidz.jobs.errors import StorageFailed
from ourvidz.storage import Storage, asset_key

MP4_QUALITY = 8  # imageio-ffmpeg's 0-10 scale; 8 is visually clean at a fraction of lossless size
WEBP_QUALITY = 80


def encode_png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_webp(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="WEBP", quality=WEBP_QUALITY)
    return buffer.getvalue()


def write_mp4(frames: np.ndarray, fps: int, path: Path) -> None:
    """H.264 in yuv420p, the format every browser plays (sizes are multiples of 16, so no padding)."""
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        quality=MP4_QUALITY, macro_block_size=16, ffmpeg_log_level="error",
    )  # fmt: skip
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def store_outputs(
    storage: Storage,
    request: GenerationRequest,
    pixels: np.ndarray,
    *,
    bucket: str,
    user_id: uuid.UUID,
    job_id: uuid.UUID,
) -> list[Asset]:
    """Write a request's frames (images, frames, H, W, 3) under the job's keys and describe each file;
    raises StorageFailed (the storage's own error chained) when storage refuses them."""
    try:
        return _store(storage, request, pixels, Place(bucket, user_id, job_id))
    except Exception as exc:  # any backend's error (OSError, an S3 client's): the job's is STORAGE_FAILED
        raise StorageFailed from exc


class Place(NamedTuple):
    bucket: str
    user_id: uuid.UUID
    job_id: uuid.UUID


def _store(storage: Storage, request: GenerationRequest, pixels: np.ndarray, place: Place) -> list[Asset]:
    bucket, user_id, job_id = place
    common = {"bucket": bucket, "width": request.width, "height": request.height}
    if not request.is_video:
        assets = []
        for index, (seed, image) in enumerate(zip(request.seeds, pixels, strict=True)):
            key = asset_key(user_id, job_id, index, "png")
            size = storage.put(bucket, key, encode_png(image[0]))
            assets.append(Asset("image", key=key, index=index, seed=seed, size_bytes=size, **common))
        return assets
    video, seed = pixels[0], request.seeds[0]
    with tempfile.TemporaryDirectory(prefix="ourvidz-video-") as tmp:
        path = Path(tmp) / "video.mp4"
        write_mp4(video, request.fps, path)
        key = asset_key(user_id, job_id, 0, "mp4")
        size = storage.put_file(bucket, key, path)
    thumb_key = asset_key(user_id, job_id, 0, "webp")
    thumb_size = storage.put(bucket, thumb_key, encode_webp(video[0]))
    return [
        Asset(
            "video", key=key, index=0, seed=seed, size_bytes=size, frames=len(video),
            duration=len(video) / request.fps, **common,
        ),
        Asset("thumbnail", key=thumb_key, index=0, seed=seed, size_bytes=thumb_size, **common),
    ]  # fmt: skip
