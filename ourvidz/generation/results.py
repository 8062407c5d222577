"""What a generation produced and where it goes; plain data, importable without torch."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

AssetType = Literal["image", "video", "thumbnail"]


@dataclass(frozen=True, slots=True)
class OutputPlace:
    """Where a job's files go: `{bucket}/{user_id}/{job_id}/{index}.{ext}`."""

    bucket: str
    user_id: uuid.UUID
    job_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Asset:
    """One stored file of a job's result."""

    type: AssetType
    bucket: str
    key: str
    index: int
    width: int
    height: int
    seed: int
    size_bytes: int
    frames: int = 1
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    assets: list[Asset]

    @property
    def seeds(self) -> list[int]:
        return [asset.seed for asset in self.assets if asset.type != "thumbnail"]
