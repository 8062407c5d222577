"""Real tiny diffusers pipelines on the CPU, built once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ourvidz.config import Settings
from ourvidz.generation.runtime import GenerationRuntime
from ourvidz.storage import Storage


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("generation")
    return Settings(data_dir=data_dir, model_profile="tiny", device="cpu", batch_window_ms=0)


@pytest.fixture(scope="session")
def runtime(tiny_settings: Settings) -> Iterator[GenerationRuntime]:
    """One warm runtime shared by the session, as a worker process would keep it."""
    runtime = GenerationRuntime(tiny_settings)
    yield runtime
    runtime.close()


@pytest.fixture
def fresh_runtime(tiny_settings: Settings, tmp_path: Path) -> Iterator[GenerationRuntime]:
    """A runtime with nothing loaded yet (the tiny models on disk are shared)."""
    runtime = GenerationRuntime(tiny_settings, storage=Storage(f"file://{tmp_path / 'storage'}"))
    yield runtime
    runtime.close()
