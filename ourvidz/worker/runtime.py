"""The generation runtime of this process: created on first use and kept, so models stay warm."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ourvidz.config import get_settings

if TYPE_CHECKING:  # importing the runtime pulls in torch; only workers pay for that
    from ourvidz.generation.runtime import GenerationRuntime

_runtime: GenerationRuntime | None = None
_lock = threading.Lock()


def get_runtime() -> GenerationRuntime:
    global _runtime
    with _lock:
        if _runtime is None:
            from ourvidz.generation.runtime import GenerationRuntime

            _runtime = GenerationRuntime(get_settings())
        return _runtime


def current_runtime() -> GenerationRuntime | None:
    """The runtime if this process has made one (for status reports), without creating it."""
    return _runtime
