"""Retry policy of network-facing tasks: exponential backoff 1, 2, 4, 8 seconds (the spec's)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

BACKOFF_SECONDS = [1, 2, 4, 8]


def database_unreachable(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry only when the database connection failed; a rejected or finished job is final."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, OperationalError | InterfaceError)
