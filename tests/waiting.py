"""Waiting for a job's state the tests observe from outside."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job


def flow_run_of(sessions: sessionmaker[Session], job_id: uuid.UUID, timeout: float) -> uuid.UUID | None:
    """The job's flow run once it has one, or None if it has none within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            flow_run_id = session.get_one(Job, job_id).flow_run_id
        if flow_run_id is not None or time.monotonic() > deadline:
            return flow_run_id
        time.sleep(0.05)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once `condition()` holds; fail naming `what` if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.05)
