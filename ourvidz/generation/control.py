"""How a caller follows and stops a generation request; free of torch so flows can import it cheaply."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

ProgressFn = Callable[[int, int], None]
WaitingFn = Callable[[int], None]


class Cancelled(Exception):
    """The request was cancelled; raised between denoising steps, before any output is produced."""


@dataclass(frozen=True, slots=True)
class Control:
    """`progress(step, total)` after every denoising step; `waiting(position)` while the request waits
    for the device (0: it runs next), each time the device moves on; and a flag that cancels it."""

    progress: ProgressFn | None = None
    cancel: threading.Event | None = None
    waiting: WaitingFn | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()
