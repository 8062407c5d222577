"""The life cycle of a job: which status may follow which.

queued -> processing -> completed | failed | cancelled. A queued job may also be cancelled or failed
(before any work, e.g. refused by validation), and a processing job may go back to queued when its
worker vanished and it is re-queued for another attempt. Final states never change again.

This module only says which moves are legal; `ourvidz.jobs.lifecycle.move` is the one that makes them.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    """A status change the life cycle does not allow (e.g. completed -> processing)."""

    def __init__(self, current: JobStatus, target: JobStatus) -> None:
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: it is final"
        super().__init__(f"job cannot go from {current} to {target} (allowed from {current}: {allowed})")


def check_transition(current: JobStatus | str, target: JobStatus | str) -> JobStatus:
    """Return `target` as a JobStatus if the move is legal, else raise `IllegalTransition`."""
    current, target = JobStatus(current), JobStatus(target)
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return target
