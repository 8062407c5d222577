"""Per-queue slots of one GPU worker: how many flow runs of each work queue it holds at once.

Prefect's work-queue limits cap a queue pool-wide; a worker's `--limit` caps its runs in total. Slots
sit between the two: a worker takes a run of a queue only while it holds fewer runs of that queue
than its slots, so an SDXL burst can gather into one batch on this GPU (4 slots) while a video queue
keeps just one job waiting behind the current one (2 slots), and the other workers get the rest.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Mapping


class QueueSlots:
    def __init__(self, slots: Mapping[str, int]) -> None:
        self.slots = dict(slots)
        self._held: dict[uuid.UUID, str] = {}
        self._lock = threading.Lock()

    def take(self, run_id: uuid.UUID, queue: str) -> bool:
        """Hold a slot of `queue` for the run (a queue not given has none); True also when the run
        holds one already."""
        with self._lock:
            if run_id in self._held:
                return True
            if Counter(self._held.values())[queue] >= self.slots.get(queue, 0):
                return False
            self._held[run_id] = queue
            return True

    def release(self, run_id: uuid.UUID) -> None:
        with self._lock:
            self._held.pop(run_id, None)

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(self._held.values()))

    def runs(self) -> list[uuid.UUID]:
        """The runs that hold a slot now (what this worker's lease names)."""
        with self._lock:
            return list(self._held)

    @property
    def total(self) -> int:
        """Runs this worker may hold at once over all its queues."""
        return sum(self.slots.values())
