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
from ourvidz.prompts.chat import PROTOCOLS, ChatWorker

PROBE_TIMEOUT_SECONDS = 2.0
UNHEALTHY_SKIP_SECONDS = 60.0  # how long a worker found unhealthy is passed over without asking it


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


def forget_worker(sessions: sessionmaker[Session], worker_type: str, url: str | None = None) -> None:
    """Remove the registration; with `url`, only while the worker is still registered at it (a worker
    that re-registered elsewhere in the meantime keeps its new registration)."""
    with sessions.begin() as session:
        row = session.get(SystemConfig, worker_key(worker_type), with_for_update=True)
        if row is not None and (url is None or row.value.get("url") == url.rstrip("/")):
            session.delete(row)


def load_worker(sessions: sessionmaker[Session], worker_type: str) -> dict[str, Any] | None:
    with sessions() as session:
        row = session.get(SystemConfig, worker_key(worker_type))
        return dict(row.value) if row is not None else None


def registered_chat_worker(sessions: sessionmaker[Session]) -> ChatWorker | None:
    """The registered chat worker, unless a probe found it unhealthy within UNHEALTHY_SKIP_SECONDS
    (then callers go straight to their fallback instead of waiting on it; after that it is tried
    again). Not probed here: callers fall back when it fails."""
    worker = load_worker(sessions, "chat")
    if worker is None or _recently_unhealthy(worker.get("health")):
        return None
    protocol = worker.get("protocol", "openai")
    return ChatWorker(str(worker["url"]), protocol if protocol in PROTOCOLS else "openai")


def _recently_unhealthy(health: dict[str, Any] | None) -> bool:
    if not health or health.get("status") != "unhealthy":
        return False
    checked = datetime.fromisoformat(health["checkedAt"])
    return (datetime.now(UTC) - checked).total_seconds() < UNHEALTHY_SKIP_SECONDS


def record_health(sessions: sessionmaker[Session], worker_type: str, url: str, result: Probe) -> float | None:
    """Keep a probe's result with the worker's registration (if it is still registered at `url`).

    Returns for how many seconds the worker has failed every probe (0 on its first failure), None
    when it is healthy or no longer registered at `url`.
    """
    now = datetime.now(UTC)
    health = {
        "status": "healthy" if result.healthy else "unhealthy", "responseTime": round(result.seconds, 4),
        "error": result.error, "checkedAt": now.isoformat(),
    }  # fmt: skip
    with sessions.begin() as session:
        row = session.get(SystemConfig, worker_key(worker_type), with_for_update=True)
        if row is None or row.value.get("url") != url.rstrip("/"):
            return None
        if not result.healthy:
            before = row.value.get("health") or {}
            if before.get("status") == "unhealthy" and before.get("unhealthySince"):
                health["unhealthySince"] = before["unhealthySince"]
            else:
                health["unhealthySince"] = now.isoformat()
        row.value = {**row.value, "health": health}
    if result.healthy:
        return None
    return (now - datetime.fromisoformat(health["unhealthySince"])).total_seconds()


@dataclass(frozen=True, slots=True)
class Probe:
    healthy: bool
    seconds: float
    error: str | None = None
    body: Any = None  # the health endpoint's JSON answer, when it gave one


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
    try:
        body = answer.json()
    except ValueError:
        body = None
    return Probe(True, elapsed, body=body)
