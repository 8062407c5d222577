"""Counts of a worker's flow runs: running now, the most ever running at once, finished."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class WorkerStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.high_water: Counter[str] = Counter()
        self.finished_runs: Counter[str] = Counter()

    def started(self, queue: str) -> None:
        with self._lock:
            self.running[queue] += 1
            self.high_water[queue] = max(self.high_water[queue], self.running[queue])
            total = sum(self.running.values())
            self.high_water["*"] = max(self.high_water["*"], total)

    def finished(self, queue: str) -> None:
        with self._lock:
            self.running[queue] -= 1
            self.finished_runs[queue] += 1

    def snapshot(self) -> dict[str, Any]:
        """`high_water` per queue plus `*` for all queues together."""
        with self._lock:
            return {
                "running": {q: n for q, n in self.running.items() if n},
                "high_water": dict(self.high_water),
                "finished": dict(self.finished_runs),
            }
