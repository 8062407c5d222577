"""Remembering signed callbacks for their tolerance window, so a captured one cannot be sent again.

In-process memory on one gateway; Redis (`SET NX EX`) when configured, so all replicas share it.
"""

from __future__ import annotations

import threading
import time

import redis


class ReplayGuard:
    def __init__(self, window_seconds: int, redis_url: str | None = None) -> None:
        self.window = window_seconds
        self._redis = redis.Redis.from_url(redis_url) if redis_url else None
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, signature: str) -> bool:
        """True the first time `signature` is offered within the window, False on every replay."""
        if self._redis is not None:
            return bool(self._redis.set(f"ourvidz:callback:{signature}", 1, nx=True, ex=self.window * 2))
        now = time.monotonic()
        with self._lock:
            for seen, expires in list(self._seen.items()):
                if expires < now:
                    del self._seen[seen]
            if signature in self._seen:
                return False
            self._seen[signature] = now + self.window * 2
            return True
