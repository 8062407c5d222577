"""Retry policy of the tasks that touch the job database: exponential backoff 1, 2, 4, 8 seconds (the
spec's), and only when the database could not be reached (a refused or finished job is final)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

BACKOFF_SECONDS = [1, 2, 4, 8]


def database_unreachable(_task: Any, _task_run: Any, state: Any) -> bool:
    error = state.result(raise_on_failure=False)
    return isinstance(error, OperationalError | InterfaceError)


DB_RETRIES: dict[str, Any] = {
    "retries": len(BACKOFF_SECONDS),
    "retry_delay_seconds": BACKOFF_SECONDS,
    "retry_condition_fn": database_unreachable,
}
