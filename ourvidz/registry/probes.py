"""Probing an HTTP worker's health: `GET <url>/health`, healthy on any 2xx within the timeout."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Probe:
    healthy: bool
    seconds: float
    error: str | None = None
    body: Any = None  # the health endpoint's JSON answer, when it gave one


def probe(url: str) -> Probe:
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
