"""Probing an HTTP worker's health: `GET <url>/health`, healthy on any 2xx within the timeout.

A URL registered through the API is probed through the worker egress policy (a refused address is an
unhealthy worker whose error says why); a Prefect worker's own status endpoint, which the worker
process writes to the job database itself, is probed as it is (`egress=None`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from ourvidz.egress import EgressPolicy

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Probe:
    healthy: bool
    seconds: float
    error: str | None = None
    body: Any = None  # the health endpoint's JSON answer, when it gave one


def probe(url: str, egress: EgressPolicy | None) -> Probe:
    started = time.perf_counter()
    target = f"{url.rstrip('/')}/health"
    try:
        if egress is None:
            answer = httpx.get(target, timeout=PROBE_TIMEOUT_SECONDS)
        else:
            with egress.client(timeout=PROBE_TIMEOUT_SECONDS) as client:
                answer = client.get(target)
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
