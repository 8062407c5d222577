"""Registered HTTP workers (the chat worker, and URLs of others) kept in `system_config`, and probes.

A worker registers itself (service key) or an admin sets its URL; readers get the URL only together
with a fresh health probe of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import SystemConfig

PROBE_TIMEOUT_SECONDS = 2.0


def worker_key(worker_type: str) -> str:
    return f"worker:{worker_type}"


def save_worker(
    sessions: sessionmaker[Session],
    worker_type: str,
    url: str,
    method: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    value = {
        "url": url.rstrip("/"),
        **(extra or {}),
        "registrationInfo": {
            "autoRegistered": method == "register-chat-worker",
            "registrationMethod": method,
            "detectionMethod": "self-registration" if method == "register-chat-worker" else "manual",
            "lastUpdated": now,
            "lastRegistrationAttempt": now,
        },
    }
    with sessions.begin() as session:
        row = session.get(SystemConfig, worker_key(worker_type))
        if row is None:
            session.add(SystemConfig(key=worker_key(worker_type), value=value))
        else:
            row.value = value
    return value


def load_worker(sessions: sessionmaker[Session], worker_type: str) -> dict[str, Any] | None:
    with sessions() as session:
        row = session.get(SystemConfig, worker_key(worker_type))
        return dict(row.value) if row is not None else None


def registered_chat_url(sessions: sessionmaker[Session]) -> str | None:
    """The chat worker's URL as registered (not probed: its callers fall back when it fails)."""
    worker = load_worker(sessions, "chat")
    return None if worker is None else str(worker["url"])


@dataclass(frozen=True, slots=True)
class Probe:
    healthy: bool
    seconds: float
    error: str | None = None


def probe(url: str) -> Probe:
    """GET `<url>/health`; healthy on any 2xx within the timeout."""
    started = time.perf_counter()
    try:
        answer = httpx.get(f"{url.rstrip('/')}/health", timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return Probe(False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - started
    if not answer.is_success:
        return Probe(False, elapsed, f"HTTP {answer.status_code}")
    return Probe(True, elapsed)
